"""Input pipelines: TFRecords -> per-replica batches, and packed pairs -> dynamically masked batches.

Both produce the same dict, ``schema.bert_pretraining_spec(T, P)`` batched to [B, ...] with static shapes
(``drop_remainder=True``), because XLA/TPU compiles one program per input shape: a ragged last batch would
trigger a recompile (or fail on TPU).

Batch sizes here are per replica. Under ``tf.distribute`` pass the ``tf.distribute.InputContext`` that
``strategy.distribute_datasets_from_function`` hands in: each input pipeline then reads its own files (or, with
fewer files than pipelines, its own records) and masks with its own seed.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence, Union

import numpy as np
import tensorflow as tf

from zoo.data import records, schema

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


def _pipeline_index(input_context: tf.distribute.InputContext | None) -> tuple[int, int]:
    if input_context is None:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def match_files(file_pattern: Union[str, Sequence[str]]) -> list[str]:
    """Sorted files matching a glob, a comma-separated list of globs, or a list of globs.

    Raises:
        ValueError: nothing matches; the message names the pattern(s).
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    patterns = [p.strip() for item in patterns for p in item.split(",") if p.strip()]
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise ValueError(f"No TFRecord files match {', '.join(patterns) or repr(file_pattern)}. Write them first "
                         "(zoo.data.records.write_examples / the pretraining-data trainer) or fix the path.")
    return files


def dataset_from_records(file_pattern: Union[str, Sequence[str]], spec, *, batch_size: int, shuffle: bool = True,
                                     seed: int = 0, repeat: bool = True,
                                     input_context: tf.distribute.InputContext | None = None,
                                     shuffle_buffer_size: int = 10000, cycle_length: int = 8,
                                     shard_by: str = "file") -> tf.data.Dataset:
    """Reads pretraining TFRecords of any objective's feature spec (`zoo.data.schema`) into batches for one replica.

    Follows google-research/bert ``run_pretraining.input_fn``: shuffle the files, repeat, interleave reads over
    several shards (so consecutive records come from different shards), shuffle records, batch, then parse a
    whole batch at once (vectorized ``parse_example`` is much faster than per record).

    Args:
        file_pattern: glob(s) of shards, e.g. ``out/train-*.tfrecord`` (the writer's pattern).
        batch_size: B per replica.
        spec: {name: schema.FeatureSpec} the records were written with.
        shuffle: shuffle files and records (off for evaluation).
        seed: shuffle seed; with the same seed and files the order is reproducible.
        repeat: repeat forever (training) or read once (evaluation).
        input_context: shards the input across pipelines when given.
        shuffle_buffer_size: records in the shuffle buffer.
        cycle_length: shards read concurrently.
        shard_by: with several input pipelines (multi-worker, TPU pods): "file" gives each pipeline its own
            files (no record is read twice: the choice at scale); "batch" has every pipeline read the same
            stream and keep every n-th per-replica batch, so a step on n workers sees exactly the examples one
            process would see at the same global batch and seed (identical losses; every worker parses all data).

    Returns:
        Dataset of dicts of the spec's features, each [B, ...].

    Raises:
        ValueError: no file matches ``file_pattern``.
    """
    if shard_by not in ("file", "batch"):
        raise ValueError(f"shard_by must be 'file' or 'batch', got {shard_by!r}.")
    files = match_files(file_pattern)
    num_pipelines, pipeline_id = _pipeline_index(input_context)
    shard_batches = num_pipelines > 1 and shard_by == "batch"
    shard_files = num_pipelines > 1 and not shard_batches and len(files) >= num_pipelines
    if num_pipelines > 1 and not shard_files and not shard_batches:
        # Every pipeline then reads every file and keeps 1/num_pipelines of the records: correct, but wasteful.
        logger.warning("%d files for %d input pipelines: sharding by record. Write more shards to shard by "
                       "file.", len(files), num_pipelines)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shard_files:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                                 num_parallel_calls=AUTOTUNE, deterministic=True)
    if num_pipelines > 1 and not shard_files and not shard_batches:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if shard_batches:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    parse = records.parse_fn(spec)
    dataset = dataset.map(parse, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def pretraining_dataset_from_records(file_pattern: Union[str, Sequence[str]], *, batch_size: int,
                                     sequence_length: int, max_predictions: int, **options) -> tf.data.Dataset:
    """BERT pretraining TFRecords (`dataset_from_records` with `schema.bert_pretraining_spec(T, P)`): dicts of
    ``token_ids``, ``segment_ids``, ``padding_mask`` int32 [B, T], ``mask_positions``, ``mask_ids`` int32 [B, P],
    ``mask_weights`` float32 [B, P], ``next_sentence_labels`` int32 [B]."""
    return dataset_from_records(file_pattern, schema.bert_pretraining_spec(sequence_length, max_predictions),
                                batch_size=batch_size, **options)


def dynamic_masking_dataset(pair_instances: Mapping[str, np.ndarray], *, batch_size: int, vocabulary_size: int,
                            mask_id: int, special_ids: Sequence[int], max_predictions: int, seed: int,
                            repeat: bool = True, input_context: tf.distribute.InputContext | None = None,
                            shuffle: bool = True, mask_prob: float = 0.15,
                            shuffle_buffer_size: int = 100000) -> tf.data.Dataset:
    """Batches packed pairs and masks them on the fly with a fresh stateless seed per step.

    Static masks (``create_pretraining_instances``) repeat the same masks every epoch unless the data is
    duplicated ``dupe_factor`` times on disk; here step ``s`` masks with ``fold_in([seed, pipeline], s)``, so every
    epoch sees new masks, yet the whole stream is a pure function of ``seed``.

    Args:
        pair_instances: ``schema.bert_pair_spec(T)`` arrays stacked to [N, ...]
            (``instances.stack_instances(instances.create_pair_instances(...))``). They are held in memory
            and embedded in the input graph, which caps them near 2 GB; beyond that write records instead.
        batch_size: B per replica.
        vocabulary_size: V, range of random replacement tokens.
        mask_id: id of [MASK].
        special_ids: ids never masked ([CLS], [SEP], [PAD], ...).
        max_predictions: P.
        seed: seed of the shuffle and of the masks.
        repeat: repeat forever.
        input_context: shards the pairs across input pipelines when given.
        shuffle: shuffle pairs every epoch.
        mask_prob: share of real tokens to mask.
        shuffle_buffer_size: cap on the shuffle buffer (pairs are in memory, so the default is a full shuffle
            for typical sizes).

    Returns:
        Dataset of dicts as ``pretraining_dataset_from_records``: [B, T] and [B, P] features, [B] labels.
    """
    from zoo.text import packing  # imported here so corpus/records users need not build the text package

    missing = set(schema.bert_pair_spec(1)) - set(pair_instances)
    if missing:
        raise ValueError(f"pair_instances lacks {sorted(missing)}; build it with instances.create_pair_instances.")
    arrays = {name: np.asarray(pair_instances[name]) for name in schema.bert_pair_spec(1)}
    num_pairs, sequence_length = arrays[schema.TOKEN_IDS].shape
    spec = schema.bert_pretraining_spec(sequence_length, max_predictions)
    num_pipelines, pipeline_id = _pipeline_index(input_context)

    dataset = tf.data.Dataset.from_tensor_slices(arrays)
    if num_pipelines > 1:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(min(num_pairs, shuffle_buffer_size), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True)
    # The pipeline id goes into the base seed so replicas draw different masks from the same `seed`.
    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def mask(batch: dict[str, tf.Tensor], step: tf.Tensor) -> dict[str, tf.Tensor]:
        step_seed = tf.random.experimental.stateless_fold_in(base_seed, step)
        masked = packing.mask_tokens(
            batch[schema.TOKEN_IDS], batch[schema.PADDING_MASK], vocabulary_size=vocabulary_size,
            mask_id=mask_id, special_ids=list(special_ids), max_predictions=max_predictions, mask_prob=mask_prob,
            seed=step_seed)
        features = {**batch, **masked}
        return {name: tf.ensure_shape(tf.cast(features[name], s.dtype), (batch_size, *s.shape))
                for name, s in spec.items()}

    dataset = tf.data.Dataset.zip((dataset, tf.data.Dataset.counter()))
    dataset = dataset.map(mask, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer,
                       batch_size: int = 4096) -> list[list[list[int]]]:
    """Tokenizes documents of sentences into documents of id lists (input of ``zoo.data.instances``).

    Args:
        documents: document -> sentences (``zoo.data.corpus.read_documents``).
        tokenizer: has ``tokenize(tf.Tensor string [B]) -> tf.RaggedTensor int [B, (n)]``, e.g.
            ``zoo.text.wordpiece.WordPieceTokenizer``.
        batch_size: sentences per ``tokenize`` call (big batches amortize op dispatch).

    Returns:
        document -> sentence -> ids (sentences that tokenize to nothing stay, as empty lists; instance creation
        drops them).
    """
    sentences = [s for document in documents for s in document]
    ids: list[list[int]] = []
    for start in range(0, len(sentences), batch_size):
        ragged = tokenizer.tokenize(tf.constant(sentences[start:start + batch_size]))
        if ragged.ragged_rank > 1:  # [B, (words), (pieces)] -> [B, (pieces)]
            ragged = ragged.merge_dims(1, -1)
        values, splits = ragged.flat_values.numpy().tolist(), ragged.row_splits.numpy().tolist()
        ids.extend(values[a:b] for a, b in zip(splits[:-1], splits[1:]))
    out, position = [], 0
    for document in documents:
        out.append(ids[position:position + len(document)])
        position += len(document)
    return out
