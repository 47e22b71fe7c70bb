"""The one list of pretraining feature names, dtypes and shapes.

Every producer (instance creation, TFRecord writer, dynamic masking) and every consumer (record parser, Keras
inputs, SavedModel signatures) takes feature names and shapes from here, so that a TFRecord written today still
parses tomorrow and a rename happens in exactly one place.

Shapes below are per example (no batch axis). Legend: T sequence length, P max predictions, C characters per word.

A family adds its own spec as one more function returning ``dict[str, FeatureSpec]`` (for example a GPT spec
with only ``token_ids`` [T], or an ELMo spec with ``char_ids`` [T, C]); ``parsing_features`` turns any spec into
``tf.io.FixedLenFeature``s, and ``zoo.data.records`` serializes and parses any spec the same way.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Mapping

import tensorflow as tf

# Feature names: the naming contract of docs/ARCHITECTURE.md.
TOKEN_IDS = "token_ids"
SEGMENT_IDS = "segment_ids"
PADDING_MASK = "padding_mask"
MASK_POSITIONS = "mask_positions"
MASK_IDS = "mask_ids"
MASK_WEIGHTS = "mask_weights"
NEXT_SENTENCE_LABELS = "next_sentence_labels"
CHAR_IDS = "char_ids"

# next_sentence_labels values, as google-research/bert: 0 means segment B really follows A.
NEXT_SENTENCE_REAL = 0
NEXT_SENTENCE_RANDOM = 1


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """dtype and static per-example shape of one feature.

    Attributes:
        dtype: the dtype the model sees (int32 or float32). TFRecords store integers as int64 because
            ``tf.train.Example`` has no int32 list; the parser casts back to this dtype.
        shape: static per-example shape, e.g. ``(T,)`` or ``()`` for a scalar.
    """

    dtype: tf.DType
    shape: tuple[int, ...]

    @property
    def record_dtype(self) -> tf.DType:
        """The dtype ``tf.train.Example`` stores: int64, float32 or string."""
        if self.dtype.is_integer or self.dtype.is_bool:
            return tf.int64
        if self.dtype.is_floating:
            return tf.float32
        return tf.string


def bert_pair_spec(sequence_length: int) -> dict[str, FeatureSpec]:
    """Spec of unmasked packed sentence pairs ``[CLS] A [SEP] B [SEP]`` (input of dynamic masking).

    Args:
        sequence_length: T, the padded length including [CLS] and both [SEP].

    Returns:
        ``token_ids``, ``segment_ids``, ``padding_mask`` int32 [T] and ``next_sentence_labels`` int32 [].
    """
    _check_positive(sequence_length=sequence_length)
    return {
        TOKEN_IDS: FeatureSpec(tf.int32, (sequence_length,)),
        SEGMENT_IDS: FeatureSpec(tf.int32, (sequence_length,)),
        PADDING_MASK: FeatureSpec(tf.int32, (sequence_length,)),
        NEXT_SENTENCE_LABELS: FeatureSpec(tf.int32, ()),
    }


def bert_pretraining_spec(sequence_length: int, max_predictions: int) -> dict[str, FeatureSpec]:
    """Spec of one BERT pretraining example (masked LM + next sentence prediction).

    Args:
        sequence_length: T.
        max_predictions: P, masked positions per example (padded with weight 0.0).

    Returns:
        The pair spec plus ``mask_positions``, ``mask_ids`` int32 [P] and ``mask_weights`` float32 [P].
    """
    _check_positive(max_predictions=max_predictions)
    spec = bert_pair_spec(sequence_length)
    spec.update({
        MASK_POSITIONS: FeatureSpec(tf.int32, (max_predictions,)),
        MASK_IDS: FeatureSpec(tf.int32, (max_predictions,)),
        MASK_WEIGHTS: FeatureSpec(tf.float32, (max_predictions,)),
    })
    return spec


def causal_lm_block_spec(sequence_length: int) -> dict[str, FeatureSpec]:
    """Spec of one causal-LM block: T contiguous tokens of the packed corpus (documents joined by end-of-text).

    Returns:
        ``token_ids`` int32 [T] (every position is real: blocks are cut from the packed stream, never padded).
    """
    _check_positive(sequence_length=sequence_length)
    return {TOKEN_IDS: FeatureSpec(tf.int32, (sequence_length,))}


def bilm_window_spec(sequence_length: int, max_characters: int) -> dict[str, FeatureSpec]:
    """Spec of one bidirectional-LM window: T positions of `<S> words </S>` (a long sentence in several windows).

    Args:
        sequence_length: T, positions per window (<S> and </S> included where the window holds them).
        max_characters: C, character ids per word.

    Returns:
        ``char_ids`` int32 [T, C] (every id + 1, 0 at padding), ``token_ids`` int32 [T] (word ids, 0 at padding),
        ``padding_mask`` int32 [T] (1 on real positions, which come first).
    """
    _check_positive(sequence_length=sequence_length, max_characters=max_characters)
    return {
        CHAR_IDS: FeatureSpec(tf.int32, (sequence_length, max_characters)),
        TOKEN_IDS: FeatureSpec(tf.int32, (sequence_length,)),
        PADDING_MASK: FeatureSpec(tf.int32, (sequence_length,)),
    }


def parsing_features(spec: Mapping[str, FeatureSpec]) -> dict[str, tf.io.FixedLenFeature]:
    """Turns a spec into the ``tf.io.FixedLenFeature``s that parse its TFRecords (integers as int64)."""
    return {name: tf.io.FixedLenFeature(list(s.shape), s.record_dtype) for name, s in spec.items()}


def bert_pretraining_features(sequence_length: int, max_predictions: int) -> dict[str, tf.io.FixedLenFeature]:
    """``tf.io.FixedLenFeature``s of a BERT pretraining TFRecord.

    Args:
        sequence_length: T.
        max_predictions: P.

    Returns:
        name -> FixedLenFeature; integer features are int64 on the wire and ``zoo.data.records.parse_fn``
        casts them to int32, so parsed examples match ``bert_pretraining_spec``.
    """
    return parsing_features(bert_pretraining_spec(sequence_length, max_predictions))


def tensor_specs(spec: Mapping[str, FeatureSpec], batch_size: int | None = None) -> dict[str, tf.TensorSpec]:
    """``tf.TensorSpec``s (with a leading batch axis of ``batch_size``) for Keras inputs or signatures."""
    return {name: tf.TensorSpec((batch_size, *s.shape), s.dtype, name=name) for name, s in spec.items()}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
