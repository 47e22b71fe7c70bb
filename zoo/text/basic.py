"""google-research/bert's basic tokenization inside the TF graph: clean, split CJK, lower-case / strip accents,
split on whitespace and punctuation. Shared by WordPiece (BERT) and BPE (GPT-1, whose HF tokenizer pre-tokenizes
the same way). TF core ops + the TF Text op `NormalizeUTF8` only.
"""

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from zoo.text import unicode

# How many codepoints each class becomes when cleaning text: dropped (0), CJK padded with spaces (3), else 1.
_EXPANSION = np.array([1, 0, 1, 3, 1, 1], np.int32)
_SPACE_CP = 32


def _row_ids(rt: tf.RaggedTensor) -> tf.Tensor:
    """Row id of every value, int64 [n]. RaggedTensor.value_rowids() goes through tf.repeat, which builds a
    [rows, longest row] mask: one 1 MB line in a batch of thousands would cost gigabytes. This is O(n log rows)."""
    splits = tf.cast(rt.row_splits, tf.int64)
    return tf.searchsorted(splits[1:], tf.range(tf.size(rt.values, out_type=tf.int64)), side="right", out_type=tf.int64)


def _shifted(x: tf.Tensor) -> tf.Tensor:
    """x[i - 1] for i > 0 (x[0] at 0; callers mask row starts anyway). Works for empty x."""
    return tf.gather(x, tf.maximum(tf.range(tf.size(x)) - 1, 0))


class BasicTokenizer(tf.Module):
    """google-research/bert `BasicTokenizer` on codepoints: clean, split CJK, lower/strip accents, punctuation.

    Args:
      lowercase: apply str.lower() (full Unicode lower-casing, final sigma included).
      strip_accents: NFD then drop category Mn. None follows `lowercase`, as in the original.
      final_sigma: lower-case a capital sigma at the end of a word to 'ς' as Python's str.lower() does (the
        original BERT); False gives 'σ' everywhere, as the Rust `tokenizers` normaliser HF's GPT tokenizer uses.
    """

    def __init__(self, lowercase: bool = True, strip_accents: bool | None = None, final_sigma: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.final_sigma = bool(final_sigma)
        self._tables = unicode.tables()

    def _classes_of(self, values):
        return unicode.lookup(values, self._tables["class_starts"], self._tables["class_ids"])

    def __call__(self, texts) -> tf.RaggedTensor:
        """Splits texts into basic tokens (words and single punctuation/CJK characters).

        Args:
          texts: string [B] (or a scalar string, giving string [(w)]). Invalid UTF-8 is replaced by U+FFFD,
            which cleaning then drops.

        Returns:
          string RaggedTensor [B, (w)].
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            return self(texts[tf.newaxis])[0]
        if texts.shape.rank not in (None, 1):
            raise ValueError(f"texts must be a scalar or a vector of strings, got shape {texts.shape}")
        cps = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")
        values = cps.values
        cls = self._classes_of(values)

        # _clean_text + _tokenize_chinese_chars in one pass: each codepoint becomes 0, 1 or 3 codepoints.
        repeats = tf.gather(tf.constant(_EXPANSION), cls)
        ends = tf.cumsum(repeats)
        # Output codepoint j copies input codepoint source[j] (the first with ends > j): one binary search
        # instead of three tf.repeat (each ~25 ops and a [n, 3] mask).
        out = tf.range(tf.reduce_sum(repeats))
        source = tf.searchsorted(ends, out, side="right")
        values = tf.gather(values, source)
        cls = tf.gather(cls, source)
        offset = out - tf.gather(ends - repeats, source)
        to_space = tf.equal(cls, unicode.SPACE) | (tf.equal(cls, unicode.CJK) & tf.not_equal(offset, 1))
        values = tf.where(to_space, _SPACE_CP, values)
        splits = tf.gather(tf.concat([[0], tf.cast(ends, tf.int64)], 0), cps.row_splits)
        cps = tf.RaggedTensor.from_row_splits(values, splits, validate=False)

        if self.lowercase or self.strip_accents:
            # Lower-casing the whole cleaned text equals the original's per-word lower(): words are separated by
            # spaces, which end the final-sigma context just as a word boundary does.
            if self.lowercase and self.final_sigma:
                cps = cps.with_values(unicode.resolve_capital_sigma(cps.values, _row_ids(cps)))
            elif self.lowercase:  # ICU's lower() would apply the final-sigma rule itself
                cps = cps.with_values(tf.where(tf.equal(cps.values, unicode.CAPITAL_SIGMA), unicode.SMALL_SIGMA, cps.values))
            text = tf.strings.unicode_encode(cps, "UTF-8")
            if self.lowercase:
                text = tf.strings.lower(text, encoding="utf-8")
            if self.strip_accents:
                text = tf_text.normalize_utf8(text, "NFD")
            cps = tf.strings.unicode_decode(text, "UTF-8")
            if self.lowercase:
                # Python's lower-casing for the letters TF's older ICU leaves alone (see unicode.tables). Safe
                # after NFD: none of those letters decomposes (checked codepoint by codepoint in the tests).
                t = self._tables
                cps = cps.with_values(unicode.remap(cps.values, t["lower_keys"], t["lower_values"]))
            if self.strip_accents:
                marks = tf.equal(self._classes_of(cps.values), unicode.MARK)
                keep = tf.logical_not(marks)
                # (tf.ragged.boolean_mask builds a [rows, longest row] tensor; count kept values per row instead.)
                kept_per_row = tf.math.unsorted_segment_sum(tf.cast(keep, tf.int64), _row_ids(cps), cps.nrows())
                cps = tf.RaggedTensor.from_row_lengths(unicode.compress(cps.values, keep), kept_per_row, validate=False)
        # Classes again: lower-casing and NFD change characters (NFD turns U+2260 into '=' + U+0338, punctuation).
        return self._split_words(cps, self._classes_of(cps.values))

    @staticmethod
    def _split_words(cps: tf.RaggedTensor, cls: tf.Tensor) -> tf.RaggedTensor:
        """Whitespace split, then every punctuation codepoint its own word. cps int32 [B,(c)] -> string [B,(w)]."""
        values, rows = cps.values, _row_ids(cps)
        is_space = tf.equal(cls, unicode.SPACE)
        is_punct = tf.equal(cls, unicode.PUNCT)
        row_start = tf.equal(tf.range(tf.size(values, out_type=tf.int64)), tf.gather(cps.row_splits, rows))
        boundary = row_start | _shifted(is_space) | _shifted(is_punct) | is_punct
        start = tf.logical_not(is_space) & boundary
        word_index = tf.cumsum(tf.cast(start, tf.int64)) - 1
        keep = tf.logical_not(is_space)
        num_words = tf.reduce_sum(tf.cast(start, tf.int64))
        word_cps = tf.RaggedTensor.from_value_rowids(
            unicode.compress(values, keep), unicode.compress(word_index, keep), nrows=num_words, validate=False
        )
        words = tf.strings.unicode_encode(word_cps, "UTF-8")
        return tf.RaggedTensor.from_value_rowids(
            words, unicode.compress(rows, start), nrows=cps.nrows(), validate=False
        )
