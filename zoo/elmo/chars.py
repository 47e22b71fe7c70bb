"""ELMo's character ids for words, inside the TF graph (allenai/bilm-tf `UnicodeCharsVocabulary` + `Batcher`).

Shape legend: S any shape of words, C characters per word (max_chars, 50).

A word is its UTF-8 bytes, ids 0-255, between begin-of-word and end-of-word markers, padded to C slots:
`[bow, bytes[:C - 2], eow, pad, ...]`; the words "<S>" and "</S>" are `[bow, bos|eos, eow, pad, ...]`. As bilm-tf's
batcher does, every id is then shifted by +1 so that 0 means "no word" (the mask): the model's character embedding
has `num_characters` = 262 rows, row 0 for the mask. The bytes are taken as they are (bilm-tf encodes Python
strings; here any byte string works: CJK, emoji and invalid UTF-8 alike), and a long word keeps its first C - 2
bytes, which may cut a multi-byte character, as bilm-tf's `word.encode('utf-8')[:48]` does.
An empty word (a padding position) is all zeros.
"""

import tensorflow as tf

BOS_CHAR = 256  # <begin sentence>
EOS_CHAR = 257  # <end sentence>
BOW_CHAR = 258  # <begin word>
EOW_CHAR = 259  # <end word>
PAD_CHAR = 260  # <padding>
MAX_CHARS = 50
BOS_WORD = "<S>"
EOS_WORD = "</S>"


def _flat_word_char_ids(words, max_chars):
    """string [N] -> int32 [N, C]: bilm-tf's ids + 1, all 0 for an empty word."""
    max_bytes = max_chars - 2
    words = tf.convert_to_tensor(words, tf.string)
    lengths = tf.minimum(tf.strings.length(words, unit="BYTE"), max_bytes)  # [N]
    # decode_raw with fixed_length zero-pads short words and truncates long ones: [N, C - 2] bytes.
    raw = tf.cast(tf.io.decode_raw(words, tf.uint8, fixed_length=max_bytes), tf.int32)
    slot = tf.range(max_bytes)[None, :]  # [1, C - 2]
    is_byte = slot < lengths[:, None]
    body = tf.where(is_byte, raw, tf.where(slot == lengths[:, None], EOW_CHAR, PAD_CHAR))  # [N, C - 2]
    # The last slot is eow for a word of exactly C - 2 (or more) bytes, else padding.
    last = tf.where(lengths >= max_bytes, EOW_CHAR, PAD_CHAR)[:, None]  # [N, 1]
    ids = tf.concat([tf.fill([tf.shape(words)[0], 1], BOW_CHAR), body, last], axis=1)  # [N, C]
    special = tf.concat([[BOW_CHAR, 0, EOW_CHAR], tf.fill([max_chars - 3], PAD_CHAR)], axis=0)  # [C]
    bos = tf.tensor_scatter_nd_update(special, [[1]], [BOS_CHAR])
    eos = tf.tensor_scatter_nd_update(special, [[1]], [EOS_CHAR])
    ids = tf.where((words == BOS_WORD)[:, None], bos[None], ids)
    ids = tf.where((words == EOS_WORD)[:, None], eos[None], ids)
    # +1 so that 0 is the mask; an empty word is the mask.
    return tf.where((lengths > 0)[:, None], ids + 1, 0)


def word_char_ids(words, max_chars=MAX_CHARS):
    """Character ids of words, as bilm-tf's batcher feeds its model.

    Args:
      words: tf.string tensor or tf.RaggedTensor of any shape S (a Python list of strings works too).
      max_chars: C, character slots per word (>= 3; bilm-tf's max_characters_per_token, 50).

    Returns:
      int32 [*S, C] (a RaggedTensor with the same ragged dimensions when `words` is ragged): for each word
      `[bow, bytes[:C - 2], eow, pad, ...] + 1`, `[bow, bos|eos, eow, pad, ...] + 1` for "<S>" / "</S>",
      all 0 for the empty string.

    Example:
      >>> import tensorflow as tf
      >>> from zoo.elmo.chars import word_char_ids
      >>> word_char_ids(tf.constant(["a", ""]), max_chars=5).numpy().tolist()
      [[259, 98, 260, 261, 261], [0, 0, 0, 0, 0]]
    """
    if max_chars < 3:
        raise ValueError(f"max_chars must be at least 3 (bow, a byte or marker, eow), got {max_chars}.")
    if isinstance(words, tf.RaggedTensor):
        return words.with_flat_values(word_char_ids(words.flat_values, max_chars))
    words = tf.convert_to_tensor(words, tf.string)
    flat = _flat_word_char_ids(tf.reshape(words, [-1]), max_chars)  # [N, C]
    out = tf.reshape(flat, tf.concat([tf.shape(words), [max_chars]], axis=0))  # [*S, C]
    if words.shape.rank is not None:
        out = tf.ensure_shape(out, words.shape.concatenate([max_chars]))
    return out
