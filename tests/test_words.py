"""zoo.text.words: the word vocabulary (allenai/bilm-tf's `Vocabulary`) in the graph: learning by count, bilm-tf's
vocab files, whitespace words as Python's str.split(), any bytes."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.text.words import WordVocabulary, read_vocabulary

SPECIALS = ["<S>", "</S>", "<UNK>"]
# Every character Python's str.split() splits on (str.isspace()), one run between each pair of words.
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
             "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def test_learn_orders_by_count_then_bytes_with_the_special_words_first():
    texts = ["b a c a", "c a d", "b e <S> <UNK>", "e"]  # a 3, b 2, c 2, e 2, d 1; special words are not counted
    vocab = WordVocabulary.learn(texts, 7)
    assert vocab.vocabulary == SPECIALS + ["a", "b", "c", "e"]  # ties (b, c, e: 2) by bytes; d cut at size 7
    assert vocab.special_ids == {"bos": 0, "eos": 1, "unknown": 2}
    assert WordVocabulary.learn(list(reversed(texts)), 7).vocabulary == vocab.vocabulary  # order of texts: no matter
    assert WordVocabulary.learn(texts, 100).vocabulary_size == 3 + 5


def test_learn_keeps_case_by_default_and_lowercases_on_request():
    texts = ["The the THE Film", "the"]
    assert WordVocabulary.learn(texts, 10).vocabulary[3:] == ["the", "Film", "THE", "The"]
    lower = WordVocabulary.learn(texts, 10, lowercase=True)
    assert lower.vocabulary[3:] == ["the", "film"] and lower.config() == {"lowercase": True}
    assert lower.tokenize(tf.constant(["ThE FILM"])).to_list() == [[3, 4]]


def test_learn_refuses_what_cannot_be_a_vocabulary():
    with pytest.raises(ValueError, match="no words"):
        WordVocabulary.learn(["", "  \t "], 10)
    with pytest.raises(ValueError, match="too small"):
        WordVocabulary.learn(["a"], 3)
    # A word that is not UTF-8 cannot be written to vocab.txt: it stays <UNK>.
    vocab = WordVocabulary.learn([b"ok \xff\xfe ok \xff\xfe"], 10)
    assert vocab.vocabulary == SPECIALS + ["ok"]


def test_save_load_round_trip_and_from_files(tmp_path):
    vocab = WordVocabulary.learn(["naïve café 東京 🙂 naïve", "<b> x"], 20)
    assets = vocab.save(str(tmp_path))
    assert assets == {"vocabulary": "vocab.txt"}
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:4] == ["<S>", "</S>", "<UNK>", "naïve"]
    loaded = WordVocabulary.load(str(tmp_path), {"assets": assets, **vocab.config()})
    assert loaded.vocabulary == vocab.vocabulary and loaded.lowercase is False
    for source in (str(tmp_path), str(tmp_path / "vocab.txt")):
        assert WordVocabulary.from_files(source).vocabulary == vocab.vocabulary
    texts = tf.constant(["naïve 東京 unseen 🙂", ""])
    np.testing.assert_array_equal(loaded.tokenize(texts).flat_values, vocab.tokenize(texts).flat_values)


def test_a_bilm_tf_vocab_file_loads_with_its_ids(tmp_path):
    # The 1B Word Benchmark's layout (</S>, <S>, <UNK> first), Windows line ends, stray spaces, the
    # '!!!MAXTERMID' line bilm-tf skips, and a trailing newline: ids are bilm-tf's (line number, skipping that line).
    path = tmp_path / "vocab-2016-09-10.txt"
    path.write_bytes(b"</S>\r\n<S>\r\n<UNK>\r\nthe\r\n!!!MAXTERMID\r\n, \r\n.\r\nNew\n")
    words = read_vocabulary(str(path))
    assert words == ["</S>", "<S>", "<UNK>", "the", ",", ".", "New"]
    vocab = WordVocabulary.from_files(str(path))
    assert vocab.special_ids == {"bos": 1, "eos": 0, "unknown": 2}
    assert vocab.tokenize(tf.constant(["New the , . new"])).to_list() == [[6, 3, 4, 5, 2]]  # cased: 'new' is <UNK>
    assert vocab.detokenize(tf.constant([[6, 3, 1]])).numpy().tolist() == [b"New the <S>"]


def test_a_file_without_the_special_words_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<S>\n</S>\nthe\n")
    with pytest.raises(ValueError, match="<UNK>"):
        WordVocabulary.from_files(str(path))
    path.write_bytes(b"<S>\n</S>\n<UNK>\n\xff\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        WordVocabulary.from_files(str(path))
    with pytest.raises(ValueError, match="not found"):
        WordVocabulary.from_files(str(tmp_path / "missing.txt"))


def test_words_split_as_python_str_split():
    texts = [f"a{WHITESPACE}b", f"{WHITESPACE}lead and trail{WHITESPACE}", "x\u200by", "tab\tsep  ", "", "   ",
             "naïve café — 東京🙂", "Ünïcödé 👩‍👩‍👧"]
    vocab = WordVocabulary(SPECIALS)
    got = [[w.decode("utf-8") for w in row] for row in vocab.words(tf.constant(texts)).to_list()]
    assert got == [t.split() for t in texts]  # U+200B is no whitespace to Python either: one word 'x\u200by'


def test_hostile_bytes_are_words_as_they_are():
    vocab = WordVocabulary(SPECIALS + ["ok"])
    texts = tf.constant([b"\xff\xfe bad", b"ok \xc3\x28 \xa0\xa1", b"\x80", b"", b"\x00 nul\x00", ("a " * 50_000).encode()])
    words = vocab.words(texts).to_list()
    assert words[:5] == [[b"\xff\xfe", b"bad"], [b"ok", b"\xc3(", b"\xa0\xa1"], [b"\x80"], [], [b"\x00", b"nul\x00"]]
    assert len(words[5]) == 50_000
    ids = vocab.tokenize(texts)
    assert ids.dtype == tf.int32 and ids.to_list()[1] == [3, 2, 2]
    assert vocab.tokenize(tf.constant([], tf.string)).shape[0] == 0
    assert vocab.tokenize(tf.constant("ok ok")).numpy().tolist() == [3, 3]  # a scalar gives one row


def test_lookup_and_tokenize_in_a_graph():
    vocab = WordVocabulary(SPECIALS + ["a", "b"])
    fn = tf.function(lambda t: vocab.tokenize(t).to_tensor(-1), input_signature=[tf.TensorSpec([None], tf.string)])
    assert fn(tf.constant(["a b c", "b"])).numpy().tolist() == [[3, 4, 2], [4, -1, -1]]
    assert vocab.lookup(tf.constant([["a", "zz"]])).numpy().tolist() == [[3, 2]]
    assert vocab.lookup(tf.ragged.constant([["b"], []])).to_list() == [[4], []]
    assert vocab.detokenize(tf.ragged.constant([[3, 4], []])).numpy().tolist() == [b"a b", b""]
    # A repeated word keeps its last id, as bilm-tf's dict.
    assert WordVocabulary(SPECIALS + ["a", "a"]).token_to_id("a") == 4
