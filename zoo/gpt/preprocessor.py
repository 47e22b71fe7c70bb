"""GPTPreprocessor: raw strings -> the backbone's feature dict in the TF graph, in GPT-1's input forms.

The fine-tuning forms are the input transforms of Radford et al. 2018 (section 3.3, figure 1), with the
tokenizer's special tokens `_start_` (s), `_delimiter_` ($) and `_classify_` (e, "extract"):

  form             inputs                                  sequences per example
  lm               texts [B]                               `_end_ text` (documents follow an end-of-text in pretraining)
  classification   texts [B]                               `s text e`
  entailment       premises [B], hypotheses [B]            `s premise $ hypothesis e`
  similarity       texts_a [B], texts_b [B]                `s a $ b e` and `s b $ a e` (both orders)
  multiple_choice  contexts [B], candidates [B, K]         `s context $ candidate_k e` for each of the K candidates

Truncation (so that every sequence fits T): a single text keeps its first T - 2 tokens (T - 1 for lm). A pair is
cut only when it does not fit the T - 3 free positions: the longer part first, and neither below half of them
(`pair_lengths`); the rule is symmetric, so similarity's two orders hold the same tokens and swapping a and b
changes nothing. The original (openai/finetune-transformer-lm) cuts every part to T / 2 - 2 whatever the other's
length; this keeps all of a short part and gives the rest to the long one. Multiple choice keeps the END of a long
context (the candidate continues it, as a generation prompt keeps its end) and the start of a long candidate.
Padding is on the right, so the extract token `e` is each sequence's last real position.

Shape legend: B batch, K candidates, S sequences per example (2 for similarity, K for multiple choice), T length.
"""

import tensorflow as tf

from zoo.text.bpe import BytePairTokenizer
from zoo.text.packing import trim_to_longest

FORMS = ("lm", "classification", "entailment", "similarity", "multiple_choice")
ALIASES = {"classify": "classification"}  # the form's earlier name
PAIR_FORMS = ("entailment", "similarity", "multiple_choice")  # forms that take two inputs per example
STACKED_FORMS = ("similarity", "multiple_choice")  # forms whose features are [B, S, T]


def pair_lengths(len_a, len_b, budget):
    """How many tokens of each part a pair keeps: int [N] each, with keep_a + keep_b <= budget.

    Nothing is cut when the pair fits; else the longer part is cut first and neither below budget // 2. The same
    function of (len_a, len_b) as of (len_b, len_a) mirrored: keep(a, b) = keep(b, a) swapped.
    """
    half = budget // 2
    keep_a = tf.minimum(len_a, tf.maximum(budget - len_b, half))
    keep_b = tf.minimum(len_b, tf.maximum(budget - len_a, half))
    return keep_a, keep_b


def _keep(ids, keep, from_end=False):
    """The first (or last) keep[i] tokens of each row: int ragged [N, (n)], int64 [N] -> ragged [N, (keep)]."""
    keep = tf.minimum(tf.cast(keep, tf.int64), ids.row_lengths())
    starts = ids.row_splits[1:] - keep if from_end else ids.row_splits[:-1]
    return tf.RaggedTensor.from_row_lengths(tf.gather(ids.values, tf.ragged.range(starts, starts + keep).values), keep)


def _column(rows, token_id):
    """[N, 1] ragged column of one special id."""
    return tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, 1]), tf.constant(token_id, tf.int32)))


def _join(pieces):
    """Concatenates ragged int pieces [N, (n_i)] (columns of special ids and parts) row by row."""
    return tf.concat([tf.cast(p, tf.int32).with_row_splits_dtype(tf.int64) for p in pieces], axis=1)


class GPTPreprocessor(tf.Module):
    """Tokenizes texts and lays them out in one of GPT-1's input forms (see the module docstring).

    Args:
      tokenizer: a `BytePairTokenizer`, its `get_config` dict (see `get_config`), or its `from_files` folder.
      sequence_length: T, the length of every sequence (each part truncated as the module docstring says).
      trim: cut the batch to its longest sequence (serving) instead of padding to T (static shapes).
      pad_to_multiple_of: with trim, round the cut up to a multiple of this.
      form: one of FORMS ("classify" is accepted for "classification").

    Call args:
      texts: string [B]: the text, premise, text_a or context.
      texts_b: string [B] (entailment: hypotheses; similarity: texts_b) or [B, K] (multiple choice: candidates).

    Returns:
      dict of int32 `token_ids` (padded with _pad_) and `padding_mask` (1 on real tokens): [B, T'] for lm,
      classification and entailment; [B, S, T'] for similarity (S = 2: the (a, b) then the (b, a) order) and
      multiple choice (S = K). T' = T, or with trim the longest sequence in the batch.

    Example:
      >>> import tensorflow as tf
      >>> from zoo.gpt import GPTPreprocessor
      >>> from zoo.text.bpe import BytePairTokenizer
      >>> tokenizer = BytePairTokenizer.learn(["the film was great", "a boring pineapple"], size=40)
      >>> pre = GPTPreprocessor(tokenizer, 64, form="multiple_choice")
      >>> pre(tf.constant(["the film was"]), tf.constant([["great", "a pineapple", "boring"]]))["token_ids"].shape
      TensorShape([1, 3, 64])
    """

    def __init__(self, tokenizer, sequence_length=128, trim=False, pad_to_multiple_of=1, form="lm", name=None):
        super().__init__(name=name)
        if isinstance(tokenizer, str):
            tokenizer = BytePairTokenizer.from_files(tokenizer)
        elif isinstance(tokenizer, dict):
            tokenizer = BytePairTokenizer(**tokenizer)
        form = ALIASES.get(form, form)
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}.")
        minimum = 4 if form in PAIR_FORMS else 2  # the specials and at least one token of text
        if sequence_length < minimum:
            raise ValueError(f"sequence_length must be at least {minimum} for form {form!r}; got {sequence_length}.")
        if int(pad_to_multiple_of) < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer; got {pad_to_multiple_of}.")
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.trim = bool(trim)
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.form = form

    def with_form(self, form, **changes):
        """The same tokenizer and settings in another form (and any of trim, pad_to_multiple_of, sequence_length)."""
        settings = dict(sequence_length=self.sequence_length, trim=self.trim, pad_to_multiple_of=self.pad_to_multiple_of)
        settings.update(changes)
        return GPTPreprocessor(self.tokenizer, form=form, **settings)

    # ---- layouts --------------------------------------------------------------------------------------------
    def _tokenize(self, texts):
        return self.tokenizer.tokenize(tf.reshape(texts, [-1]))

    def _single(self, ids, head, tail):
        """head + the first T - |head| - |tail| tokens + tail, per row."""
        rows = ids.nrows()
        body = _keep(ids, tf.fill([rows], tf.constant(self.sequence_length - len(head) - len(tail), tf.int64)))
        return _join([_column(rows, t) for t in head] + [body] + [_column(rows, t) for t in tail])

    def _pair(self, a, b, keep_a, keep_b, a_from_end=False):
        """`_start_ a[:keep_a] _delimiter_ b[:keep_b] _classify_` per row (a's last keep_a tokens with a_from_end)."""
        special, rows = self.tokenizer.special_ids, a.nrows()
        return _join([_column(rows, special["start"]), _keep(a, keep_a, a_from_end), _column(rows, special["delimiter"]),
                      _keep(b, keep_b), _column(rows, special["classify"])])

    def token_ids(self, texts, texts_b=None):
        """The laid-out sequences, int32 ragged [N, (n)] with n <= T: N = B (lm, classification, entailment),
        2B (similarity: the B (a, b) rows, then the B (b, a) rows) or B * K (multiple choice, example-major)."""
        special = self.tokenizer.special_ids
        if (texts_b is not None) != (self.form in PAIR_FORMS):
            wanted = "two inputs per example (texts, texts_b)" if self.form in PAIR_FORMS else "one text per example"
            raise ValueError(f"The {self.form!r} form takes {wanted}; choose the transform that fits the data "
                             f"(classification for one text; entailment, similarity or multiple_choice for two).")
        if self.form == "lm":
            return self._single(self._tokenize(texts), [special["end_of_text"]], [])
        if self.form == "classification":
            return self._single(self._tokenize(texts), [special["start"]], [special["classify"]])
        budget = self.sequence_length - 3
        a = self._tokenize(texts)
        if self.form == "multiple_choice":
            candidates = tf.convert_to_tensor(texts_b)
            if candidates.shape.rank is not None and candidates.shape.rank != 2:
                raise ValueError(f"multiple_choice candidates must be a string tensor [B, K]; got shape {candidates.shape}.")
            batch, per_example = tf.shape(candidates)[0], tf.shape(candidates)[1]
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.cast(a.nrows(), tf.int32), batch, message="multiple_choice: one context per row of candidates")]):
                a = tf.gather(a, tf.repeat(tf.range(batch), per_example))  # each context K times
            b = self._tokenize(candidates)
            keep_a, keep_b = pair_lengths(a.row_lengths(), b.row_lengths(), budget)
            return self._pair(a, b, keep_a, keep_b, a_from_end=True)
        b = self._tokenize(texts_b)
        keep_a, keep_b = pair_lengths(a.row_lengths(), b.row_lengths(), budget)
        ab = self._pair(a, b, keep_a, keep_b)
        if self.form == "entailment":
            return ab
        return tf.concat([ab, self._pair(b, a, keep_b, keep_a)], axis=0)

    def __call__(self, texts, texts_b=None):
        texts = tf.convert_to_tensor(texts, tf.string)
        texts_b = None if texts_b is None else tf.convert_to_tensor(texts_b, tf.string)
        ids = self.token_ids(texts, texts_b)
        length = self.sequence_length
        token_ids = ids.to_tensor(default_value=self.tokenizer.pad_id, shape=[None, length])  # [N, T]
        padding_mask = tf.ones_like(ids).to_tensor(default_value=0, shape=[None, length])
        features = {"token_ids": token_ids, "padding_mask": padding_mask}
        if self.trim:
            features = trim_to_longest(features, length, self.pad_to_multiple_of, minimum=1)
        if self.form not in STACKED_FORMS:
            return features
        # Explicit sizes (no -1): an empty batch cannot infer one.
        batch, kept = tf.shape(tf.reshape(texts, [-1]))[0], tf.shape(features["token_ids"])[1]
        if self.form == "similarity":  # [2B, T'] -> [2, B, T'] -> [B, 2, T']
            return {k: tf.transpose(tf.reshape(v, [2, batch, kept]), [1, 0, 2]) for k, v in features.items()}
        per_example = tf.shape(texts_b)[1]
        return {k: tf.reshape(v, [batch, per_example, kept]) for k, v in features.items()}  # [B * K, T'] -> [B, K, T']

    def get_config(self):
        """JSON settings that rebuild this preprocessor (the tokenizer's vocabulary and merges included)."""
        tokenizer = {"vocabulary": {t: i for i, t in enumerate(self.tokenizer.vocabulary)},
                     "merges": [list(m) for m in self.tokenizer.merges], **self.tokenizer.config()}
        return {"tokenizer": tokenizer, "sequence_length": self.sequence_length, "trim": self.trim,
                "pad_to_multiple_of": self.pad_to_multiple_of, "form": self.form}
