"""GPT-1's byte-pair encoding inside the TF graph: basic tokenization, then BPE merges on characters with '</w>'.

Token ids equal HF transformers 5's `OpenAIGPTTokenizer` with the real GPT-1 files (tests/test_bpe.py): BERT-style
normalisation and pre-tokenisation (`zoo.text.basic.BasicTokenizer`, lower-cased, accents stripped), then each
word split into characters, '</w>' appended to its last one, and merges applied in rank order (all occurrences of
the best-ranked pair at once, left to right), symbols outside the vocabulary becoming '<unk>' one by one.
Two differences, by choice: words over `max_chars_per_word` (100) characters become one '<unk>' (HF merges them
whatever their length), and capital sigma lower-cases to 'σ' everywhere, as HF's Rust normaliser does.

Why not keras-hub's `BytePairTokenizer`: it is GPT-2's byte-level scheme (bytes remapped to printable characters,
no end-of-word suffix, its own regex pre-split), so GPT-1's vocabulary, whose word-final symbols end in '</w>',
cannot be expressed in it. This one uses TF core ops (StaticHashTable, while_loop, strings) plus `NormalizeUTF8`,
which every TF Serving release with TF Text runs (shared/serving_ops.md).

Known differences from openai/finetune-transformer-lm's own pipeline (ftfy.fix_text + `text_standardize` + spaCy +
lower-case + BPE), which cannot run inside a graph: spaCy splits contractions ("don't" -> "do", "n't"; here "don",
"'", "t"), keeps "U.S." and "3.14" whole (here split at the '.'), `text_standardize` maps dashes and '…' to ASCII
and keeps newlines as the token '\\n</w>' (here curly quotes and dashes are their own words, often '<unk>' in
GPT-1's vocabulary, newlines are spaces), and ftfy repairs mojibake. Accents are stripped here, not there.

Layout of a vocabulary: the BPE symbols (id 0 is '<unk>' in GPT-1's files and in learned ones), then
SPECIAL_TOKENS in order (GPT-1 appended _start_, _delimiter_ and _classify_ after its 40,478 entries; _pad_
and _end_ (the end-of-text separator between packed documents) follow them).
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import tensorflow as tf

from zoo.text import merges as merges_lib
from zoo.text import unicode
from zoo.text.basic import BasicTokenizer, _row_ids
from zoo.text.tokenizer import Tokenizer

END_OF_WORD = "</w>"
UNKNOWN_TOKEN = "<unk>"
# role -> token, in the order they follow the BPE symbols.
SPECIAL_TOKENS = {
    "start": "_start_",
    "delimiter": "_delimiter_",
    "classify": "_classify_",
    "pad": "_pad_",
    "end_of_text": "_end_",
}
MERGES_HEADER = "#version: 0.2"
_NO_RANK = 2**62


def read_vocabulary(path: str) -> dict[str, int]:
    """A {token: id} JSON file (HF vocab.json, GPT-1 encoder_bpe_40000.json), checked: ids 0..n-1, each once."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"BPE vocabulary file not found: {path!r}")
    with tf.io.gfile.GFile(path, "rb") as f:
        try:
            vocab = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path!r} is not a JSON {{token: id}} vocabulary: {e}") from None
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{path!r} holds no {{token: id}} object.")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"{path!r}: ids must be 0..{len(ids) - 1}, each once.")
    return vocab


def read_merges(path: str) -> list[tuple[str, str]]:
    """A merges file ('#version' header, then 'left right' per line, in rank order) as [(left, right)]."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"BPE merges file not found: {path!r}")
    with tf.io.gfile.GFile(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    pairs = []
    for number, line in enumerate(lines, start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path!r} line {number}: expected 'left right', got {line!r}.")
        pairs.append((parts[0], parts[1]))
    return pairs


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


class _Untracked(dict):
    """A dict that tf.Module stores as it is (it wraps attributes whose type is exactly dict)."""


class BytePairTokenizer(Tokenizer):
    """string [B] -> BPE ids int32 [B, (n)] in the graph (eager, tf.function, tf.data, SavedModels).

    Args:
      vocabulary: {token: id} of the BPE symbols (ids 0..n-1, '<unk>' among them); special tokens missing from it
        are appended in SPECIAL_TOKENS order.
      merges: [(left, right)] in rank order.
      lowercase: lower-case (and strip accents) before splitting, as GPT-1 and HF's tokenizer do.
      max_chars_per_word: longer words become one '<unk>' (bounds the merge loop on hostile input; HF has no
        bound and would merge a 100 KB word character by character).
    """

    VOCAB_FILE = "vocab.json"
    MERGES_FILE = "merges.txt"

    def __init__(self, vocabulary: dict, merges: list, lowercase: bool = True, max_chars_per_word: int = 100,
                 name: str | None = None):
        super().__init__(name=name)
        vocabulary = {str(k): int(v) for k, v in dict(vocabulary).items()}
        if UNKNOWN_TOKEN not in vocabulary:
            raise ValueError(f"The BPE vocabulary has no {UNKNOWN_TOKEN!r} token.")
        if sorted(vocabulary.values()) != list(range(len(vocabulary))):
            raise ValueError("BPE vocabulary ids must be 0..n-1, each once.")
        for token in SPECIAL_TOKENS.values():
            if token not in vocabulary:
                vocabulary[token] = len(vocabulary)
        # Tuples and an _Untracked dict: tf.Module wraps exactly list and dict attributes entry by entry (and a
        # wrapped list's item assignment costs O(n)): seconds for GPT-1's 40,483 tokens and 40,000 merges.
        tokens = [None] * len(vocabulary)
        for token, i in vocabulary.items():
            tokens[i] = token
        self._vocab = tuple(tokens)
        self._index = _Untracked(vocabulary)
        self._merges = tuple((str(a), str(b)) for a, b in merges)
        self.lowercase = bool(lowercase)
        self.max_chars_per_word = int(max_chars_per_word)
        self._basic = BasicTokenizer(lowercase=self.lowercase, final_sigma=False)
        pair_keys = [f"{a} {b}" for a, b in self._merges]
        # The first (best) rank wins where a merges file lists a pair twice.
        ranks = {}
        for rank, key in enumerate(pair_keys):
            ranks.setdefault(key, rank)
        self._pair_ranks = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(ranks), tf.string),
                                                tf.constant(list(ranks.values()), tf.int64)), _NO_RANK)
        self._token_ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self._vocab, tf.string),
                                                tf.range(len(self._vocab), dtype=tf.int32)), self.unknown_id)
        # What each id detokenizes to: word-final symbols end a word, special tokens are words, _pad_ is nothing.
        pieces = [t[:-len(END_OF_WORD)] + " " if t.endswith(END_OF_WORD) else t for t in self._vocab]
        for role, token in SPECIAL_TOKENS.items():
            pieces[self._index[token]] = "" if role == "pad" else f" {token} "
        self._pieces = tf.constant(pieces, tf.string)

    # ---- vocabulary -------------------------------------------------------------------------------------------
    @property
    def vocabulary(self) -> list[str]:
        return list(self._vocab)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)

    @property
    def merges(self) -> list[tuple[str, str]]:
        return list(self._merges)

    def token_to_id(self, token: str) -> int:
        if token not in self._index:
            raise KeyError(f"Token {token!r} is not in the vocabulary")
        return self._index[token]

    def id_to_token(self, token_id: int) -> str:
        return self._vocab[int(token_id)]

    unknown_id = property(lambda self: self._index[UNKNOWN_TOKEN])
    pad_id = property(lambda self: self._index[SPECIAL_TOKENS["pad"]])
    end_of_text_id = property(lambda self: self._index[SPECIAL_TOKENS["end_of_text"]])

    @property
    def special_ids(self) -> dict:
        """{"unknown", "start", "delimiter", "classify", "pad", "end_of_text"} -> id."""
        return {"unknown": self.unknown_id, **{role: self._index[t] for role, t in SPECIAL_TOKENS.items()}}

    # ---- the zoo.text.tokenizer.Tokenizer interface --------------------------------------------------------
    def config(self) -> dict:
        return {"lowercase": self.lowercase, "max_chars_per_word": self.max_chars_per_word}

    @classmethod
    def learn(cls, texts: Iterable, size: int, lowercase: bool = True, max_chars_per_word: int = 100,
              **options) -> "BytePairTokenizer":
        """A tokenizer whose vocabulary of at most `size` tokens (special tokens included) is learned from `texts`.

        Symbols: '<unk>', then every character seen, alone and word-final (so any word of seen characters encodes
        without '<unk>'), then merged symbols in the order learned (`zoo.text.merges.learn_merges`).
        """
        counts = merges_lib.count_words(texts, lowercase, final_sigma=False)
        counts = {w: c for w, c in counts.items() if len(w) <= max_chars_per_word}
        if not counts:
            raise ValueError("BytePairTokenizer.learn: the texts contain no words (empty corpus or only "
                             "whitespace/control characters).")
        chars = sorted({c for w in counts for c in w})
        base = [UNKNOWN_TOKEN] + chars + [c + END_OF_WORD for c in chars]
        budget = size - len(base) - len(SPECIAL_TOKENS)
        if budget < 0:
            raise ValueError(f"vocabulary size {size} is too small: the corpus has {len(chars)} distinct characters, "
                             f"needing {len(base) + len(SPECIAL_TOKENS)} tokens for '<unk>', characters (alone and "
                             f"word-final) and the {len(SPECIAL_TOKENS)} special tokens.")
        words = [list(w[:-1]) + [w[-1] + END_OF_WORD] for w in counts]
        learned = merges_lib.learn_merges(words, list(counts.values()), budget, join=lambda a, b: a + b)
        tokens = list(dict.fromkeys(base + [merged for _, _, merged in learned]))
        return cls({t: i for i, t in enumerate(tokens)}, [(a, b) for a, b, _ in learned], lowercase=lowercase,
                   max_chars_per_word=max_chars_per_word, **options)

    @classmethod
    def from_files(cls, path: str, lowercase: bool = True, **options) -> "BytePairTokenizer":
        """From a folder holding vocab.json + merges.txt (HF) or encoder_bpe_40000.json + vocab_40000.bpe
        (openai/finetune-transformer-lm), or from the path of the vocabulary JSON with the merges beside it."""
        pairs = ((cls.VOCAB_FILE, cls.MERGES_FILE), ("encoder_bpe_40000.json", "vocab_40000.bpe"))
        if os.path.isdir(path):
            for vocab_name, merges_name in pairs:
                if os.path.exists(os.path.join(path, vocab_name)):
                    return cls(read_vocabulary(os.path.join(path, vocab_name)),
                               read_merges(os.path.join(path, merges_name)), lowercase=lowercase, **options)
            raise ValueError(f"{path!r} holds no BPE vocabulary: expected {' or '.join(v for v, _ in pairs)}.")
        folder, name = os.path.split(path)
        merges_name = dict(pairs).get(name, cls.MERGES_FILE)
        return cls(read_vocabulary(path), read_merges(os.path.join(folder, merges_name)), lowercase=lowercase, **options)

    def save(self, directory: str) -> dict:
        """Writes vocab.json ({token: id}, special tokens included) and merges.txt; returns their roles."""
        _write_atomic(os.path.join(directory, self.VOCAB_FILE), json.dumps(dict(self._index), ensure_ascii=False))
        _write_atomic(os.path.join(directory, self.MERGES_FILE),
                      "\n".join([MERGES_HEADER] + [f"{a} {b}" for a, b in self._merges]) + "\n")
        return {"vocabulary": self.VOCAB_FILE, "merges": self.MERGES_FILE}

    @classmethod
    def load(cls, directory: str, config: dict) -> "BytePairTokenizer":
        assets = config.get("assets", {"vocabulary": cls.VOCAB_FILE, "merges": cls.MERGES_FILE})
        options = {k: config[k] for k in ("lowercase", "max_chars_per_word") if k in config}
        return cls(read_vocabulary(os.path.join(directory, assets["vocabulary"])),
                   read_merges(os.path.join(directory, assets["merges"])), **options)

    # ---- graph ops ----------------------------------------------------------------------------------------
    def _merge_words(self, symbols: tf.RaggedTensor) -> tf.RaggedTensor:
        """Applies the merges to every word at once: string [W, (s)] -> string [W, (s')].

        Each pass merges, in every word, all occurrences of that word's best-ranked pair (left to right where
        they overlap, as in 'a a a' -> 'aa a'); it stops when no word has a pair in the merges.
        """

        def step(values, splits):
            n = tf.size(values, out_type=tf.int64)
            index = tf.range(n)
            rows = _row_ids(tf.RaggedTensor.from_row_splits(values, splits, validate=False))
            has_next = index + 1 < tf.gather(splits, rows + 1)
            following = tf.gather(values, tf.minimum(index + 1, tf.maximum(n - 1, 0)))
            ranks = tf.where(has_next, self._pair_ranks.lookup(tf.strings.join([values, following], " ")), _NO_RANK)
            best = tf.math.unsorted_segment_min(ranks, rows, tf.size(splits, out_type=tf.int64) - 1)
            match = has_next & (ranks < _NO_RANK) & tf.equal(ranks, tf.gather(best, rows))
            # Overlapping matches come in runs (the pair 'a a' over 'a a a'): merge at even offsets in each run.
            previous_match = tf.pad(match, [[1, 0]])[:-1] & tf.not_equal(index, tf.gather(splits, rows))
            run_start = match & tf.logical_not(previous_match)
            run_id = tf.cumsum(tf.cast(run_start, tf.int64))  # 1-based; 0 before the first run
            start_index = tf.gather(tf.concat([[0], unicode.compress(index, run_start)], 0), run_id)
            merge = match & tf.equal((index - start_index) % 2, 0)
            merged = tf.where(merge, tf.strings.join([values, following]), values)
            keep = tf.logical_not(tf.pad(merge, [[1, 0]])[:-1])
            lengths = tf.math.unsorted_segment_sum(tf.cast(keep, tf.int64), rows, tf.size(splits, out_type=tf.int64) - 1)
            return unicode.compress(merged, keep), tf.concat([[0], tf.cumsum(lengths)], 0), tf.reduce_any(merge)

        def body(values, splits, _):
            return step(values, splits)

        values, splits, _ = tf.while_loop(
            lambda values, splits, changed: changed, body,
            (symbols.values, tf.cast(symbols.row_splits, tf.int64), tf.constant(True)),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])))
        return tf.RaggedTensor.from_row_splits(values, splits, validate=False)

    def words(self, texts) -> tf.RaggedTensor:
        """string [B] -> the basic tokens BPE runs on, string [B, (w)]."""
        return self._basic(texts)

    def tokenize(self, texts) -> tf.RaggedTensor:
        """string [B] -> BPE ids int32 RaggedTensor [B, (n)] (scalar -> int32 [(n)]); no special tokens added."""
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            return self.tokenize(texts[tf.newaxis])[0]
        words = self._basic(texts)  # [B, (w)]
        # Each distinct word is encoded once per call (text repeats its words).
        unique, position = tf.unique(words.values, out_idx=tf.int64)
        too_long = tf.strings.length(unique, unit="UTF8_CHAR") > self.max_chars_per_word
        # An over-long word becomes one NUL character, which no vocabulary holds (basic tokenization drops NUL
        # from text): one '<unk>', and no merge loop over its characters.
        chars = tf.strings.unicode_split(tf.where(too_long, "\x00", unique), "UTF-8")  # [U, (c)]
        last = tf.cast(chars.row_splits[1:] - 1, tf.int64)
        is_last = tf.scatter_nd(last[:, None], tf.ones_like(last, tf.bool), tf.shape(chars.values, out_type=tf.int64))
        symbols = chars.with_values(tf.where(is_last, tf.strings.join([chars.values, END_OF_WORD]), chars.values))
        encoded = self._merge_words(symbols)
        ids = self._token_ids.lookup(encoded.values)
        pieces = tf.gather(encoded.with_values(ids), position)  # [W, (p)]
        return words.with_values(pieces).merge_dims(1, 2)

    __call__ = tokenize

    def detokenize(self, ids) -> tf.Tensor:
        """ids int [B, (n)] (ragged or dense) -> string [B]: word-final symbols end words, as HF's BPEDecoder."""
        text = tf.strings.reduce_join(tf.gather(self._pieces, ids), axis=-1)
        return tf.strings.strip(tf.strings.regex_replace(text, " +", " "))
