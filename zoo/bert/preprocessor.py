"""BertPreprocessor: raw strings -> the backbone's feature dict, entirely in the TF graph.

Shape legend: B batch, T sequence length.
"""

import tensorflow as tf

from zoo.text.packing import pack_segments, trim_to_longest
from zoo.text.wordpiece import WordPieceTokenizer


class BertPreprocessor(tf.Module):
    """Tokenizes one or two texts per example and packs `[CLS] A [SEP] (B [SEP])`.

    Args:
      tokenizer: a `WordPieceTokenizer` or its config dict.
      sequence_length: T, the maximum packed length (over-long text is truncated as google-research/bert does).
      trim: if True, the output is cut to the longest example in the batch (faster serving of short texts);
        if False every batch is exactly T long (static shapes for XLA/TPU training).
      pad_to_multiple_of: with `trim`, the cut length is rounded up to a multiple of this (at most T), so an
        XLA-compiled consumer sees a few lengths (T / m) instead of one compilation per length.

    Call args:
      texts: string [B]; texts_b: optional string [B] (sentence pairs).

    Returns:
      dict of int32 [B, T'] tensors `token_ids`, `segment_ids`, `padding_mask` (T' = T, or the batch's longest).

    Example:
      >>> import tensorflow as tf
      >>> from zoo.bert import BertPreprocessor
      >>> from zoo.text.wordpiece import WordPieceTokenizer
      >>> pre = BertPreprocessor(WordPieceTokenizer("vocab.txt"), sequence_length=128)
      >>> pre(tf.constant(["a sentence", "and another one"]))["token_ids"].shape
      TensorShape([2, 128])
    """

    def __init__(self, tokenizer, sequence_length=128, trim=False, pad_to_multiple_of=1, name=None):
        super().__init__(name=name)
        if isinstance(tokenizer, dict):
            tokenizer = WordPieceTokenizer(**tokenizer)
        if sequence_length < 3:
            raise ValueError(f"sequence_length must be at least 3 ([CLS] x [SEP]); got {sequence_length}.")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.trim = bool(trim)
        if int(pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer; got {pad_to_multiple_of}.")
        self.pad_to_multiple_of = int(pad_to_multiple_of)

    def __call__(self, texts, texts_b=None):
        segments = [self.tokenizer.tokenize(tf.reshape(texts, [-1]))]
        if texts_b is not None:
            segments.append(self.tokenizer.tokenize(tf.reshape(texts_b, [-1])))
        features = pack_segments(
            segments, self.sequence_length, cls_id=self.tokenizer.cls_id, sep_id=self.tokenizer.sep_id, pad_id=self.tokenizer.pad_id
        )
        if self.trim:  # an empty batch keeps [CLS] [SEP]'s two positions, so [CLS] pooling still has a row
            features = trim_to_longest(features, self.sequence_length, self.pad_to_multiple_of, minimum=2)
        return features

    def get_config(self):
        return {"tokenizer": self.tokenizer.get_config(), "sequence_length": self.sequence_length, "trim": self.trim,
                "pad_to_multiple_of": self.pad_to_multiple_of}
