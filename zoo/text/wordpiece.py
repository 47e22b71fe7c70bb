"""BERT tokenization inside the TF graph: basic tokenization + WordPiece, and a WordPiece vocabulary learner.

Token ids equal google-research/bert's `FullTokenizer` (HF's `BertTokenizerLegacy` variant: every category C
character is dropped, words over 100 characters become [UNK]); tests/test_tokenizer_parity.py checks this on
~60 hard texts. Only TF core ops plus the TF Text ops `NormalizeUTF8` and `FastWordpieceTokenizeWithOffsets`
are used, all present in TF Text 2.12.1, so an export loads in old TF Serving too (see shared/serving_ops.md).

Known differences, by design (the original's behaviour is kept):
  * HF `BertTokenizerLegacy` NFC-normalizes the text first; the original does not. This only matters for cased
    vocabularies and decomposed or singleton-decomposable input (e.g. 'e' + U+0301, U+2126 OHM SIGN, U+F900).
  * HF keeps special-token strings such as "[CLS]" inside the text whole; the original splits them into
    '[', 'cl', '##s', ']' like any other text, as does this tokenizer.
  * HF's Rust `BertTokenizer` (transformers 5's default) also lower-cases without the final-sigma rule and keeps
    unassigned codepoints; this tokenizer follows Python's str.lower() and drops them, as the original.
"""

import os
from typing import Iterable

import tensorflow as tf
import tensorflow_text as tf_text

from zoo.text import merges
from zoo.text.basic import BasicTokenizer
from zoo.text.tokenizer import Tokenizer

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]



def load_vocabulary(path: str) -> list[str]:
    """Reads a vocab.txt (one token per line, id = line number)."""
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"Vocabulary file not found: {path!r}")
    with tf.io.gfile.GFile(path, "rb") as f:
        tokens = [line.rstrip(b"\n").rstrip(b"\r").decode("utf-8") for line in f]
    if not tokens:
        raise ValueError(f"Vocabulary file is empty: {path!r}")
    return tokens


def save_vocabulary(vocab: list[str], path: str) -> None:
    """Writes one token per line, atomically (temporary file + os.replace) so readers never see half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(token + "\n" for token in vocab))
    os.replace(tmp, path)


class WordPieceTokenizer(Tokenizer):
    """BERT FullTokenizer in the graph: string [B] -> WordPiece ids int32 [B, (n)] (no [CLS]/[SEP]).

    Works eagerly, in tf.function, tf.data and SavedModels.

    Args:
      vocabulary: list of tokens (id = index) or a path to vocab.txt.
      lowercase: lower-case input (uncased models).
      strip_accents: NFD + drop Mn; None follows `lowercase`, as the original.
      max_chars_per_word: words with more codepoints than this become `unknown_token` (original: counted in
        characters after basic tokenization).
      unknown_token: must be in the vocabulary.
    """

    def __init__(
        self,
        vocabulary: list[str] | str,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        max_chars_per_word: int = 100,
        unknown_token: str = "[UNK]",
        name: str | None = None,
    ):
        super().__init__(name=name)
        if isinstance(vocabulary, (str, os.PathLike)):
            vocabulary = load_vocabulary(vocabulary)
        vocabulary = [str(t) for t in vocabulary]
        index = {}
        for i, token in enumerate(vocabulary):
            if not token:
                raise ValueError(f"Vocabulary has an empty token at id {i}")
            if token in index:
                raise ValueError(f"Vocabulary has duplicate token {token!r} at ids {index[token]} and {i}")
            index[token] = i
        if unknown_token not in index:
            raise ValueError(f"unknown_token {unknown_token!r} is not in the vocabulary")
        self._vocab = vocabulary
        self._index = index
        self._strip_accents_arg = strip_accents
        self.max_chars_per_word = int(max_chars_per_word)
        self.unknown_token = unknown_token
        self._basic = BasicTokenizer(lowercase=lowercase, strip_accents=strip_accents)
        # Words over max_chars_per_word are swapped for the unknown token itself before WordPiece (a vocabulary
        # token maps to its own id), so WordPiece only sees words of <= 4 bytes per character.
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocabulary,
            suffix_indicator="##",
            max_bytes_per_word=4 * self.max_chars_per_word + len(unknown_token.encode()) + 4,
            token_out_type=tf.int32,
            unknown_token=unknown_token,
            no_pretokenization=True,
            support_detokenization=False,
        )

    # ---- vocabulary -------------------------------------------------------------------------------------
    @property
    def vocabulary(self) -> list[str]:
        return list(self._vocab)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)

    @property
    def lowercase(self) -> bool:
        return self._basic.lowercase

    def token_to_id(self, token: str) -> int:
        if token not in self._index:
            raise KeyError(f"Token {token!r} is not in the vocabulary")
        return self._index[token]

    def id_to_token(self, token_id: int) -> str:
        return self._vocab[int(token_id)]

    pad_id = property(lambda self: self.token_to_id("[PAD]"))
    unknown_id = property(lambda self: self.token_to_id(self.unknown_token))
    cls_id = property(lambda self: self.token_to_id("[CLS]"))
    sep_id = property(lambda self: self.token_to_id("[SEP]"))
    mask_id = property(lambda self: self.token_to_id("[MASK]"))

    def get_config(self) -> dict:
        return {"vocabulary": list(self._vocab), **self.config()}

    # ---- the zoo.text.tokenizer.Tokenizer interface ----------------------------------------------------------
    VOCAB_FILE = "vocab.txt"

    @property
    def special_ids(self) -> dict:
        """{role: id} of the tokens the BERT objective and packing need."""
        return {"pad": self.pad_id, "unknown": self.unknown_id, "cls": self.cls_id, "sep": self.sep_id, "mask": self.mask_id}

    def config(self) -> dict:
        """The options (JSON), without the vocabulary."""
        return {
            "lowercase": self.lowercase,
            "strip_accents": self._strip_accents_arg,
            "max_chars_per_word": self.max_chars_per_word,
            "unknown_token": self.unknown_token,
        }

    @classmethod
    def learn(cls, texts: Iterable[str], size: int, lowercase: bool = True, **options) -> "WordPieceTokenizer":
        """A tokenizer with a WordPiece vocabulary of at most `size` tokens learned from `texts` (`learn_vocabulary`)."""
        return cls(learn_vocabulary(texts, size, lowercase=lowercase), lowercase=lowercase, **options)

    @classmethod
    def from_files(cls, path: str, lowercase: bool = True, **options) -> "WordPieceTokenizer":
        """From a vocab.txt, or a folder holding one."""
        if os.path.isdir(path):
            path = os.path.join(path, cls.VOCAB_FILE)
        return cls(load_vocabulary(path), lowercase=lowercase, **options)

    def save(self, directory: str) -> dict:
        """Writes vocab.txt into `directory`; returns {"vocabulary": "vocab.txt"}."""
        save_vocabulary(self._vocab, os.path.join(directory, self.VOCAB_FILE))
        return {"vocabulary": self.VOCAB_FILE}

    @classmethod
    def load(cls, directory: str, config: dict) -> "WordPieceTokenizer":
        """From `save`'s vocab.txt in `directory` and the options of `config()` (extra keys ignored)."""
        assets = config.get("assets", {"vocabulary": cls.VOCAB_FILE})
        options = {k: config[k] for k in ("lowercase", "strip_accents", "max_chars_per_word", "unknown_token") if k in config}
        return cls(load_vocabulary(os.path.join(directory, assets["vocabulary"])), **options)

    # ---- graph ops --------------------------------------------------------------------------------------
    def basic_tokenize(self, texts) -> tf.RaggedTensor:
        """string [B] -> basic tokens string [B, (w)] (scalar -> [(w)])."""
        return self._basic(texts)

    def tokenize(self, texts) -> tf.RaggedTensor:
        """string [B] -> WordPiece ids int32 RaggedTensor [B, (n)] (scalar -> int32 [(n)])."""
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            return self.tokenize(texts[tf.newaxis])[0]
        words = self._basic(texts)
        flat = words.values
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > self.max_chars_per_word
        flat = tf.where(too_long, self.unknown_token, flat)
        pieces = self._wordpiece.tokenize(flat)  # int32 [W, (p)]
        return words.with_values(pieces).merge_dims(1, 2)

    __call__ = tokenize

    def detokenize(self, ids) -> tf.Tensor:
        """ids int [B, (n)] (ragged or dense) -> string [B], joined like HF `convert_tokens_to_string`."""
        tokens = tf.gather(tf.constant(self._vocab), ids)
        text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
        return tf.strings.strip(tf.strings.regex_replace(text, " ##", ""))


# ---- vocabulary learning ----------------------------------------------------------------------------------
def learn_vocabulary(
    texts: Iterable[str],
    vocabulary_size: int,
    lowercase: bool = True,
    reserved_tokens: list[str] = RESERVED_TOKENS,
    max_chars_per_word: int = 100,
) -> list[str]:
    """Learns a WordPiece vocabulary from raw texts, pre-tokenized exactly like `WordPieceTokenizer`.

    Layout: `reserved_tokens` first ([PAD] at id 0 with the defaults), then every character seen in both forms
    ('x' and '##x', so any word of seen characters tokenizes without [UNK]), then learned merges.

    Args:
      texts: iterable of str (or UTF-8 bytes).
      vocabulary_size: maximum size of the result.
      lowercase: as `WordPieceTokenizer(lowercase=...)`; use the same value there.
      reserved_tokens: tokens placed first, in order.
      max_chars_per_word: words longer than this are [UNK] at tokenization time, so they are not learned from.

    Returns:
      list of unique tokens, len <= vocabulary_size.

    Raises:
      ValueError: if the texts yield no tokens or vocabulary_size cannot hold reserved tokens and characters.
    """
    counts = merges.count_words(texts, lowercase)
    word_counts = {w: c for w, c in counts.items() if len(w) <= max_chars_per_word}
    if not word_counts:
        raise ValueError("learn_vocabulary: the texts contain no tokens (empty corpus or only whitespace/control)")
    chars = sorted({c for w in word_counts for c in w})
    base = list(dict.fromkeys(list(reserved_tokens) + chars + ["##" + c for c in chars]))
    budget = vocabulary_size - len(base)
    if budget < 0:
        raise ValueError(
            f"vocabulary_size={vocabulary_size} is too small: the corpus has {len(chars)} distinct characters, "
            f"needing {len(base)} tokens for reserved tokens + characters + '##' characters"
        )
    taken = set(base)
    # WordPiece training as HF `tokenizers` does it: BPE on '##'-prefixed continuation characters.
    words = [[w[0]] + ["##" + c for c in w[1:]] for w in word_counts]
    learned = merges.learn_merges(words, list(word_counts.values()), budget + len(reserved_tokens),
                                  join=lambda left, right: left + right[2:])
    learned = [t for t in dict.fromkeys(merged for _, _, merged in learned) if t not in taken]
    return base + learned[:budget]
