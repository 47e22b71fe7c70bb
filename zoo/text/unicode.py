"""Codepoint tables for BERT basic tokenization, and their in-graph lookups.

The tables are built once per process from Python's `unicodedata` and `str.lower` (what the original
google-research/bert tokenizer consults), stored as sorted range starts, and looked up in the graph with
`tf.searchsorted`. This keeps character classes and lower-casing bit-identical to the original Python code,
independent of the ICU version compiled into TensorFlow or the model server, using TF core ops only.
"""

import functools
import unicodedata

import numpy as np
import tensorflow as tf

# Codepoint classes for splitting. Exactly one per codepoint (the defining sets are disjoint).
OTHER = 0  # letters, digits, symbols, Mc/Me marks: part of words
DROP = 1  # removed by `_clean_text`: NUL, U+FFFD, category C* except \t \n \r
SPACE = 2  # separates words: \t \n \r, category Zs, and what Python's str.split() also splits on (Zl, Zp)
CJK = 3  # CJK ideograph: becomes a word of its own
PUNCT = 4  # ASCII non-alphanumerics and category P*: a word of its own
MARK = 5  # category Mn: dropped when stripping accents

# Final-sigma context classes (Unicode Cased / Case_Ignorable as Python's str.lower() sees them).
UNCASED = 0
CASED = 1  # cased and not case-ignorable
IGNORABLE = 2  # case-ignorable: skipped when looking for the context of a capital sigma

MAX_CODEPOINT = 0x10FFFF
CAPITAL_SIGMA, SMALL_SIGMA, FINAL_SIGMA = 0x03A3, 0x03C3, 0x03C2

# google-research/bert `_is_chinese_char`.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def codepoint_class(cp: int) -> int:
    """Split class of one codepoint, exactly as the original Python tokenizer decides it."""
    char = chr(cp)
    category = unicodedata.category(char)
    if char in "\t\n\r":
        return SPACE
    if cp == 0 or cp == 0xFFFD or category.startswith("C"):
        return DROP
    # Zs is `_is_whitespace`; isspace() adds U+2028/U+2029, which the original keeps through cleaning but
    # its `text.split()` then splits on.
    if category == "Zs" or char.isspace():
        return SPACE
    if any(lo <= cp <= hi for lo, hi in CJK_RANGES):
        return CJK
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or category.startswith("P"):
        return PUNCT
    if category == "Mn":
        return MARK
    return OTHER


def _sigma_context_class(char: str) -> int:
    """Probes str.lower() itself, so the result is Python's own Cased / Case_Ignorable data."""
    if ("A" + char + "\u03a3").lower()[-1] == chr(SMALL_SIGMA):
        return UNCASED  # not skipped and not cased: no final sigma after it
    if ("A\u03a3" + char).lower()[1] == chr(SMALL_SIGMA):
        return CASED  # not skipped and cased: a sigma before it is not final
    return IGNORABLE


def _run_length(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.concatenate([[0], np.flatnonzero(np.diff(dense)) + 1]).astype(np.int32)
    return starts, dense[starts].astype(np.int32)


@functools.lru_cache(maxsize=None)
def tables() -> dict[str, np.ndarray]:
    """All tables, built in one pass over Unicode (about a second; cached per process).

    Returns:
      dict of int32 numpy arrays:
        class_starts, class_ids [~2.1k]: codepoints in [starts[i], starts[i+1]) have split class ids[i].
        sigma_starts, sigma_ids [~1k]: the same for final-sigma context classes.
        lower_keys, lower_values [~1.4k]: chr(keys[i]).lower() == chr(values[i]), sorted by key. tf.strings.lower
          uses TensorFlow's ICU, which can be an older Unicode than Python's (TF 2.21 misses the case pairs new in
          Unicode 14); re-applying Python's mapping afterwards fixes those and is a no-op elsewhere, because
          lower-casing is idempotent. Multi-codepoint mappings (only U+0130 -> 'i' U+0307) and the
          context-dependent capital sigma are handled elsewhere.
    """
    classes = np.zeros(MAX_CODEPOINT + 1, np.int32)
    sigma = np.zeros(MAX_CODEPOINT + 1, np.int32)
    lower_keys, lower_values = [], []
    for cp in range(MAX_CODEPOINT + 1):
        classes[cp] = codepoint_class(cp)
        if classes[cp] == DROP:
            continue  # dropped before lower-casing: its case properties never matter
        char = chr(cp)
        sigma[cp] = _sigma_context_class(char)
        lowered = char.lower()
        if len(lowered) == 1 and lowered != char and cp != CAPITAL_SIGMA:
            lower_keys.append(cp)
            lower_values.append(ord(lowered))
    class_starts, class_ids = _run_length(classes)
    sigma_starts, sigma_ids = _run_length(sigma)
    return {
        "class_starts": class_starts,
        "class_ids": class_ids,
        "sigma_starts": sigma_starts,
        "sigma_ids": sigma_ids,
        "lower_keys": np.asarray(lower_keys, np.int32),
        "lower_values": np.asarray(lower_values, np.int32),
    }


def compress(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """values [n] where mask [n] is True, as tf.boolean_mask for vectors in 3 ops instead of ~27 (shape logic
    for any rank), which count in a batch-1 request's preprocessing."""
    return tf.gather(values, tf.reshape(tf.where(mask), [-1]))


def lookup(codepoints: tf.Tensor, starts: np.ndarray, ids: np.ndarray) -> tf.Tensor:
    """Run-length table lookup.

    Args:
      codepoints: int32 [N].
      starts: int32 [R] sorted range starts, starts[0] == 0.
      ids: int32 [R].

    Returns:
      int32 [N].
    """
    index = tf.searchsorted(tf.constant(starts), codepoints, side="right") - 1
    # Negative codepoints cannot come out of unicode_decode; clamp anyway so gather never fails.
    return tf.gather(tf.constant(ids), tf.maximum(index, 0))


def remap(codepoints: tf.Tensor, keys: np.ndarray, values: np.ndarray) -> tf.Tensor:
    """Replaces codepoints found in sorted `keys` by the matching `values`; others pass through. int32 [N]."""
    index = tf.minimum(tf.searchsorted(tf.constant(keys), codepoints, side="left"), len(keys) - 1)
    hit = tf.equal(tf.gather(tf.constant(keys), index), codepoints)
    return tf.where(hit, tf.gather(tf.constant(values), index), codepoints)


def resolve_capital_sigma(codepoints: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Replaces each U+03A3 by final or medial small sigma exactly as Python's str.lower() would.

    Python (unicodeobject.c handle_capital_sigma): final iff the nearest non-case-ignorable codepoint before it
    is cased, and the nearest one after it is absent or not cased. Doing this from Python's tables instead of
    leaving it to tf.strings.lower keeps it right for letters TensorFlow's ICU does not know as cased.

    Args:
      codepoints: int32 [N], the flat values of a [B, (c)] RaggedTensor.
      rows: int [N], the row of each codepoint (context never crosses rows).

    Returns:
      int32 [N] with no U+03A3 left.
    """
    t = tables()
    context = lookup(codepoints, t["sigma_starts"], t["sigma_ids"])
    anchor = tf.not_equal(context, IGNORABLE)
    # The non-ignorable codepoints, compacted; k-th one is the k-th anchor of the whole flat sequence.
    anchor_cased = tf.concat([[False], compress(tf.equal(context, CASED), anchor), [False]], 0)
    anchor_rows = tf.concat([[-1], compress(tf.cast(rows, tf.int64), anchor), [-1]], 0)
    before = tf.cumsum(tf.cast(anchor, tf.int32), exclusive=True)  # anchors strictly before i
    # Indices shifted by one for the [False]/[-1] sentinels at both ends.
    # The anchor before i, and the first anchor after i when i is one (sigma is); clamped because for
    # ignorable i the latter can run past the end, and those results are not used.
    previous = before
    following = tf.minimum(before + 2, tf.size(anchor_cased) - 1)
    rows = tf.cast(rows, tf.int64)
    previous_cased = tf.gather(anchor_cased, previous) & tf.equal(tf.gather(anchor_rows, previous), rows)
    following_cased = tf.gather(anchor_cased, following) & tf.equal(tf.gather(anchor_rows, following), rows)
    is_sigma = tf.equal(codepoints, CAPITAL_SIGMA)
    final = previous_cased & tf.logical_not(following_cased)
    return tf.where(is_sigma, tf.where(final, FINAL_SIGMA, SMALL_SIGMA), codepoints)
