"""Sentences as words, and fixed-length windows of `<S> words </S>`: the data of a bidirectional LM (ELMo).

Knows no model: the tokenizer it is handed splits texts into words (`words(texts) -> string ragged [B, (W)]`)
and looks them up (`lookup(words) -> int32`), e.g. `zoo.text.words.WordVocabulary`.

A corpus is kept as one table of its distinct words (the strings, so that out-of-vocabulary words keep their
characters for a character-level model) and every sentence as indices into it; windows hold indices too, so
a corpus of millions of words takes a few bytes per word, and the features of a batch are gathered from the table
when it is drawn.

Shape legend: U distinct words (+ the padding entry 0 and <S>, </S>), N windows, T positions per window.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

PAD_INDEX = 0  # the empty word: padding
BOS_INDEX = 1  # "<S>"
EOS_INDEX = 2  # "</S>"
_BATCH = 4096  # sentences per graph call


@dataclasses.dataclass
class SentenceWords:
    """A corpus as word indices.

    Attributes:
      words: bytes [U]: the table of distinct words; entry 0 is b"" (padding), 1 is b"<S>", 2 is b"</S>".
      word_index: int32 [total words]: every sentence's words as indices into `words`, sentence after sentence.
      row_splits: int64 [sentences + 1]: sentence i is word_index[row_splits[i]:row_splits[i + 1]].
      token_ids: int32 [U]: each table word's id in the tokenizer's vocabulary (0 for padding).
    """

    words: list
    word_index: np.ndarray
    row_splits: np.ndarray
    token_ids: np.ndarray

    @property
    def num_sentences(self) -> int:
        return len(self.row_splits) - 1


def split_words(sentences, tokenizer, bos="<S>", eos="</S>") -> SentenceWords:
    """Sentences (str or bytes) -> `SentenceWords`, split and looked up by `tokenizer` in batches.

    Empty sentences (no words) stay, as empty rows (`windows` skips them).
    """
    table = {b"": PAD_INDEX, bos.encode("utf-8"): BOS_INDEX, eos.encode("utf-8"): EOS_INDEX}
    pieces, lengths = [], []
    sentences = list(sentences)
    for start in range(0, len(sentences), _BATCH):
        batch = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in sentences[start:start + _BATCH]]
        words = tokenizer.words(tf.constant(batch, tf.string))  # [b, (W)]
        unique, position = tf.unique(words.flat_values)
        # Each distinct word of the batch gets its corpus-wide index (a dict lookup per distinct word, not per word).
        index = np.fromiter((table.setdefault(w, len(table)) for w in unique.numpy().tolist()), np.int32,
                            count=int(tf.size(unique)))
        pieces.append(index[position.numpy()])
        lengths.append(words.row_lengths().numpy())
    word_index = np.concatenate(pieces) if pieces else np.zeros([0], np.int32)
    row_lengths = np.concatenate(lengths) if lengths else np.zeros([0], np.int64)
    words = list(table)
    token_ids = tokenizer.lookup(tf.constant(words, tf.string)).numpy().astype(np.int32)
    token_ids[PAD_INDEX] = 0
    return SentenceWords(words=words, word_index=word_index.astype(np.int32),
                         row_splits=np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64), token_ids=token_ids)


def windows(corpus: SentenceWords, sequence_length: int) -> np.ndarray:
    """Every non-empty sentence as `<S> words </S>` in windows of T positions: int32 [N, T] of table indices,
    padded with PAD_INDEX (0) on the right.

    A sentence of L = n + 2 positions fills ceil((L - 1) / (T - 1)) windows that start T - 1 apart, so
    consecutive windows share one position and every pair of neighbours (t, t + 1) is in exactly one window:
    each word is predicted once from the left (the forward LM) and once from the right (the backward LM). Only
    the first window starts with <S> and only the last ends with </S>; a window's LSTMs start from zeros (no
    state is carried from the window before, unlike bilm-tf's stateful training).
    """
    if sequence_length < 2:
        raise ValueError(f"sequence_length must be at least 2 (a word and its neighbour), got {sequence_length}.")
    lengths = np.diff(corpus.row_splits)  # [S] words per sentence
    keep = lengths > 0
    lengths, starts = lengths[keep], corpus.row_splits[:-1][keep]
    if len(lengths) == 0:
        return np.zeros([0, sequence_length], np.int32)
    # One stream of `<S> w1 .. wn </S>` sequences: sentence i occupies stream[offsets[i]:offsets[i] + L_i].
    sizes = lengths + 2
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    stream = np.empty(int(sizes.sum()), np.int32)
    stream[offsets] = BOS_INDEX
    stream[offsets + sizes - 1] = EOS_INDEX
    # Empty sentences hold no words, so `starts` is also the count of words before each kept sentence.
    word_positions = np.repeat(offsets + 1 - starts, lengths) + np.arange(int(lengths.sum()))
    stream[word_positions] = corpus.word_index
    per_sentence = (sizes - 2) // (sequence_length - 1) + 1  # ceil((L - 1) / (T - 1))
    first = np.repeat(offsets, per_sentence) + (np.arange(int(per_sentence.sum())) -
                                               np.repeat(np.cumsum(per_sentence) - per_sentence, per_sentence)) * (sequence_length - 1)
    end = np.repeat(offsets + sizes, per_sentence)  # [N] one past each window's sentence
    index = first[:, None] + np.arange(sequence_length)[None, :]  # [N, T] stream positions
    inside = index < end[:, None]
    return np.where(inside, stream[np.minimum(index, len(stream) - 1)], PAD_INDEX).astype(np.int32)


def window_features(window_index: tf.Tensor, corpus_words: tf.Tensor, corpus_token_ids: tf.Tensor, char_ids):
    """Windows of table indices -> the bidirectional LM's features, in the graph (tf.data).

    Args:
      window_index: int32 [..., T] (a batch [B, T] of `windows`).
      corpus_words: string [U], corpus_token_ids: int32 [U]: the `SentenceWords` tables.
      char_ids: fn(string [..., T]) -> int32 [..., T, C] (e.g. `tokenizer.char_ids`), 0 for the empty word.

    Returns:
      {"char_ids": int32 [..., T, C], "token_ids": int32 [..., T], "padding_mask": int32 [..., T]}.
    """
    return {"char_ids": char_ids(tf.gather(corpus_words, window_index)),
            "token_ids": tf.gather(corpus_token_ids, window_index),
            "padding_mask": tf.cast(window_index != PAD_INDEX, tf.int32)}
