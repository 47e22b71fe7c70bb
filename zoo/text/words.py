"""A word vocabulary in the TF graph: whitespace-split words -> ids, as allenai/bilm-tf's `Vocabulary` (ELMo).

Shape legend: B texts, W words of a text.

Words are what Python's `str.split()` gives (bilm-tf splits its sentences so): runs of Unicode whitespace
(\\t-\\r, \\x1c-\\x1f, \\x85 and categories Zs, Zl, Zp) separate them, every other byte is kept as it is, so any
bytes work (CJK, emoji, invalid UTF-8: a word's bytes reach the character CNN unchanged). Case is kept by
default, as bilm-tf keeps it; `lowercase=True` lower-cases UTF-8 first (invalid bytes then become U+FFFD).

The vocabulary is bilm-tf's vocab file: one word per line, id = line number, with the special words `<S>`,
`</S>` and `<UNK>` somewhere in it (a learned one puts them first; the 1B Word Benchmark's file has `</S>`, `<S>`,
`<UNK>`, then the words by descending count). A line `!!!MAXTERMID` is skipped, as bilm-tf skips it. Learned
vocabularies are sorted by descending count (ties by the words' bytes), which the log-uniform sampler of a
sampled softmax assumes.

Call it through the `zoo.text.tokenizer.Tokenizer` interface; `words` gives the split words themselves (ELMo's
character ids are computed from them, so out-of-vocabulary words keep their characters).
"""

from __future__ import annotations

import collections
import io
import os
from typing import Iterable

import tensorflow as tf

from zoo.text.tokenizer import Tokenizer
from zoo.text.wordpiece import save_vocabulary

BOS = "<S>"
EOS = "</S>"
UNKNOWN = "<UNK>"
SPECIAL_WORDS = (BOS, EOS, UNKNOWN)
_SKIPPED_LINE = "!!!MAXTERMID"  # bilm-tf's Vocabulary skips it (a marker in some lm_1b vocabulary files)
# Python's str.isspace() set, in RE2 syntax: what str.split() splits on.
_WHITESPACE = r"[\t-\r\x{1c}-\x{1f}\x{85}\p{Z}]+"
_LEARN_BATCH = 4096  # sentences per graph call while counting words


def read_vocabulary(path: str) -> list[str]:
    """A bilm-tf vocab file's words (id = position): lines stripped, `!!!MAXTERMID` skipped, as bilm-tf reads it.

    Raises:
      ValueError: the file is missing, not UTF-8, or lacks one of <S>, </S>, <UNK>.
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"Word vocabulary file not found: {path!r}")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path!r} is not UTF-8 text ({e}); a word vocabulary is one UTF-8 word per line.") from None
    # io.StringIO(newline=None) splits lines as bilm-tf's `for line in open(filename)` does (universal newlines).
    words = [line.strip() for line in io.StringIO(text, newline=None)]
    words = [w for w in words if w != _SKIPPED_LINE]
    missing = [w for w in SPECIAL_WORDS if w not in words]
    if missing:
        raise ValueError(f"{path!r} lacks the special word(s) {', '.join(missing)}: a bilm-tf vocabulary holds <S>, </S> "
                         "and <UNK> (case-sensitive), one word per line.")
    return words


def _is_utf8(word: bytes) -> bool:
    try:
        word.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class WordVocabulary(Tokenizer):
    """string [B] -> word ids int32 [B, (W)] in the graph (eager, tf.function, tf.data, SavedModels).

    Args:
      vocabulary: the words, id = index (bilm-tf's file order); must hold <S>, </S> and <UNK>. Where a word is
        listed twice, its last id is the one looked up (as bilm-tf's dict).
      lowercase: lower-case UTF-8 before splitting (bilm-tf does not; off by default).

    Example:
      >>> import tensorflow as tf
      >>> from zoo.text.words import WordVocabulary
      >>> vocab = WordVocabulary(["<S>", "</S>", "<UNK>", "the", "film"])
      >>> vocab.tokenize(tf.constant(["the film  rocks"])).to_list()
      [[3, 4, 2]]
    """

    VOCAB_FILE = "vocab.txt"

    def __init__(self, vocabulary: list[str], lowercase: bool = False, name: str | None = None):
        super().__init__(name=name)
        self._vocab = [str(w) for w in vocabulary]
        self._index = {w: i for i, w in enumerate(self._vocab)}  # the last id of a repeated word wins
        missing = [w for w in SPECIAL_WORDS if w not in self._index]
        if missing:
            raise ValueError(f"The word vocabulary lacks {', '.join(missing)}; it must hold <S>, </S> and <UNK>.")
        self.lowercase = bool(lowercase)
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(self._index), tf.string),
                                                tf.constant(list(self._index.values()), tf.int32)),
            default_value=self.unknown_id)
        self._words_tensor = tf.constant(self._vocab, tf.string)

    # ---- vocabulary -----------------------------------------------------------------------------------------
    @property
    def vocabulary(self) -> list[str]:
        return list(self._vocab)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)

    def token_to_id(self, token: str) -> int:
        if token not in self._index:
            raise KeyError(f"Word {token!r} is not in the vocabulary")
        return self._index[token]

    def id_to_token(self, token_id: int) -> str:
        return self._vocab[int(token_id)]

    bos_id = property(lambda self: self._index[BOS])
    eos_id = property(lambda self: self._index[EOS])
    unknown_id = property(lambda self: self._index[UNKNOWN])

    @property
    def special_ids(self) -> dict:
        """{"bos": id of <S>, "eos": id of </S>, "unknown": id of <UNK>}. Padding needs no id: padded positions
        hold 0 and are masked."""
        return {"bos": self.bos_id, "eos": self.eos_id, "unknown": self.unknown_id}

    # ---- the zoo.text.tokenizer.Tokenizer interface ---------------------------------------------------------
    def config(self) -> dict:
        return {"lowercase": self.lowercase}

    @classmethod
    def count_words(cls, texts: Iterable, lowercase: bool = False) -> collections.Counter:
        """{word bytes: count} over texts, split exactly as `words` splits them (the same graph ops)."""
        splitter = cls(list(SPECIAL_WORDS), lowercase=lowercase)
        counts = collections.Counter()
        batch = []

        def flush():
            if batch:
                words = splitter.words(tf.constant(batch, tf.string)).flat_values
                unique, _, count = tf.unique_with_counts(words)
                counts.update(dict(zip(unique.numpy().tolist(), count.numpy().tolist())))
                batch.clear()

        for text in texts:
            batch.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
            if len(batch) == _LEARN_BATCH:
                flush()
        flush()
        return counts

    @classmethod
    def learn(cls, texts: Iterable, size: int, lowercase: bool = False, **options) -> "WordVocabulary":
        """The `size` - 3 most frequent words of `texts` after <S>, </S>, <UNK>: by descending count, ties by
        the words' bytes (deterministic). Words that are not valid UTF-8 cannot be written to a vocab file and
        stay <UNK> (their bytes still reach the character CNN); the special words themselves are not counted.
        """
        if size < len(SPECIAL_WORDS) + 1:
            raise ValueError(f"vocabulary size {size} is too small: it needs <S>, </S>, <UNK> and at least one word.")
        counts = cls.count_words(texts, lowercase)
        specials = {w.encode("utf-8") for w in SPECIAL_WORDS}
        ranked = sorted(((c, w) for w, c in counts.items() if w not in specials and _is_utf8(w)),
                        key=lambda cw: (-cw[0], cw[1]))
        if not ranked:
            raise ValueError("WordVocabulary.learn: the texts contain no words (empty corpus or only whitespace).")
        words = [w.decode("utf-8") for _, w in ranked[:size - len(SPECIAL_WORDS)]]
        return cls(list(SPECIAL_WORDS) + words, lowercase=lowercase, **options)

    @classmethod
    def from_files(cls, path: str, lowercase: bool = False, **options) -> "WordVocabulary":
        """From a bilm-tf vocab file, or a folder holding vocab.txt."""
        if os.path.isdir(path):
            path = os.path.join(path, cls.VOCAB_FILE)
        return cls(read_vocabulary(path), lowercase=lowercase, **options)

    def save(self, directory: str) -> dict:
        """Writes vocab.txt (bilm-tf's format: one word per line); returns {"vocabulary": "vocab.txt"}."""
        save_vocabulary(self._vocab, os.path.join(directory, self.VOCAB_FILE))
        return {"vocabulary": self.VOCAB_FILE}

    @classmethod
    def load(cls, directory: str, config: dict) -> "WordVocabulary":
        assets = config.get("assets", {"vocabulary": cls.VOCAB_FILE})
        return cls(read_vocabulary(os.path.join(directory, assets["vocabulary"])), lowercase=config.get("lowercase", False))

    # ---- graph ops --------------------------------------------------------------------------------------
    def words(self, texts) -> tf.RaggedTensor:
        """string [B] -> the words, string RaggedTensor [B, (W)] (a scalar gives string [(W)])."""
        texts = tf.convert_to_tensor(texts, tf.string)
        if self.lowercase:
            texts = tf.strings.lower(texts, encoding="utf-8")
        # Every whitespace run becomes one ASCII space, which tf.strings.split (ASCII whitespace) then splits on.
        return tf.strings.split(tf.strings.regex_replace(texts, _WHITESPACE, " "))

    def lookup(self, words):
        """Word ids of words (string tensor or RaggedTensor of any shape) -> int32 of the same shape; <UNK>'s
        id for words outside the vocabulary."""
        if isinstance(words, tf.RaggedTensor):
            return words.with_flat_values(self._table.lookup(words.flat_values))
        return self._table.lookup(tf.convert_to_tensor(words, tf.string))

    def tokenize(self, texts) -> tf.RaggedTensor:
        """string [B] -> word ids int32 RaggedTensor [B, (W)] (scalar -> [(W)]); no <S>/</S> added."""
        return self.lookup(self.words(texts))

    __call__ = tokenize

    def detokenize(self, ids) -> tf.Tensor:
        """ids int [B, (W)] (ragged or dense) -> string [B]: the words joined by single spaces."""
        return tf.strings.reduce_join(tf.gather(self._words_tensor, ids), axis=-1, separator=" ")
