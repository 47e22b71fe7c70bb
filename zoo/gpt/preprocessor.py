"""GPTPreprocessor: raw strings -> the backbone's feature dict in the TF graph, in GPT-1's input forms.

Shape legend: B batch, T sequence length.
"""

import tensorflow as tf

from zoo.text.bpe import BytePairTokenizer
from zoo.text.packing import trim_to_longest

# What surrounds the text in each form (Radford et al. 2018, section 3.3): language modelling continues after an
# end-of-text separator, as every document does in pretraining; classification is `start text classify`.
FORMS = ("lm", "classify")


class GPTPreprocessor(tf.Module):
    """Tokenizes texts and lays them out as `_end_ text` (form "lm") or `_start_ text _classify_` ("classify").

    Args:
      tokenizer: a `BytePairTokenizer` (or its `from_files` folder).
      sequence_length: T; longer text is cut at the end (keeping the closing `_classify_` of "classify").
      trim: cut the batch to its longest example (serving) instead of padding to T (static shapes).
      pad_to_multiple_of: with trim, round the cut up to a multiple of this.
      form: "lm" or "classify".

    Call args:
      texts: string [B].

    Returns:
      dict of int32 [B, T'] `token_ids` (padded with _pad_) and `padding_mask`.
    """

    def __init__(self, tokenizer, sequence_length=128, trim=False, pad_to_multiple_of=1, form="lm", name=None):
        super().__init__(name=name)
        if isinstance(tokenizer, str):
            tokenizer = BytePairTokenizer.from_files(tokenizer)
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}.")
        if sequence_length < 2:
            raise ValueError(f"sequence_length must be at least 2; got {sequence_length}.")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.trim = bool(trim)
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.form = form

    def token_ids(self, texts):
        """string [B] -> int32 RaggedTensor [B, (n)] of the laid-out sequences, at most T long."""
        ids = self.tokenizer.tokenize(tf.reshape(texts, [-1]))
        special = self.tokenizer.special_ids
        rows = tf.shape(ids.row_splits)[0] - 1
        if self.form == "lm":
            head, tail = [special["end_of_text"]], []
        else:
            head, tail = [special["start"]], [special["classify"]]
        body = ids[:, : self.sequence_length - len(head) - len(tail)]
        parts = [tf.RaggedTensor.from_tensor(tf.fill([rows, len(head)], head[0]))] if head else []
        parts.append(body)
        if tail:
            parts.append(tf.RaggedTensor.from_tensor(tf.fill([rows, len(tail)], tail[0])))
        return tf.concat(parts, axis=1)

    def __call__(self, texts):
        ids = self.token_ids(texts)
        token_ids = ids.to_tensor(default_value=self.tokenizer.pad_id, shape=[None, self.sequence_length])
        padding_mask = tf.ones_like(ids).to_tensor(default_value=0, shape=[None, self.sequence_length])
        features = {"token_ids": token_ids, "padding_mask": padding_mask}
        if self.trim:
            features = trim_to_longest(features, self.sequence_length, self.pad_to_multiple_of, minimum=1)
        return features
