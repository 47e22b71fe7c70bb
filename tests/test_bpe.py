"""zoo.text.bpe.BytePairTokenizer: ids equal HF's OpenAIGPTTokenizer with the real GPT-1 files, a vocabulary
learned from a corpus round-trips, any bytes are safe, and the tokenizer runs in graphs, tf.data and SavedModels."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from zoo.text import merges as merges_lib
from zoo.text.bpe import END_OF_WORD, SPECIAL_TOKENS, UNKNOWN_TOKEN, BytePairTokenizer, read_merges, read_vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT1_FILES = os.path.join(ROOT, "..", "shared", "fixtures", "gpt1_bpe")

# Varied text: punctuation, contractions, numbers, accents, CJK, emoji, Greek with final sigma, control characters,
# URLs, repeated letters (overlapping merges), mixed case.
TEXTS = [
    "Hello world!", "The quick brown fox doesn't jump over the lazy dog.", "U.S. GDP rose 3.14% in 2023…",
    "Café naïve résumé — “quoted” text", "日本語のテキスト 中文", "emoji 😀👍🏽 here", "aaaaaaaa bbbb oooo",
    "tabs\tand\nnewlines\r\n", "ΣΊΣΥΦΟΣ Ὀδυσσεύς", "", "   ", "mixed UPPER lower MiXeD",
    "e-mail: foo@bar.com, http://x.org/a?b=c", "The film's screenplay, by Jean-Luc Godard, is unapologetic.",
    "Ünïcödé àccents ñ ß ﬁ ligature", "I can't believe it's not butter!!! 10/10 would watch again...",
    "a\x00b\x07c\x1bd", "It was the best of times, it was the worst of times; it was the age of wisdom.",
    "Don't you think so? -- Yes, I do; (parentheses) [brackets] {braces} <angles>",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def _gpt1_or_skip():
    if not os.path.isdir(GPT1_FILES):
        pytest.skip(f"the GPT-1 BPE files are not here: {os.path.normpath(GPT1_FILES)} (shared/fixtures/gpt1_bpe)")
    return GPT1_FILES


@pytest.fixture(scope="module")
def gpt1():
    return BytePairTokenizer.from_files(_gpt1_or_skip())


@pytest.fixture(scope="module")
def hf_gpt1(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = str(tmp_path_factory.mktemp("hf_gpt1"))
    shutil.copy(os.path.join(_gpt1_or_skip(), "encoder_bpe_40000.json"), os.path.join(folder, "vocab.json"))
    shutil.copy(os.path.join(GPT1_FILES, "vocab_40000.bpe"), os.path.join(folder, "merges.txt"))
    return transformers.OpenAIGPTTokenizer.from_pretrained(folder)


def test_gpt1_ids_equal_hf_openai_gpt_tokenizer(gpt1, hf_gpt1):
    got = gpt1.tokenize(tf.constant(TEXTS)).to_list()
    for text, ids in zip(TEXTS, got):
        want = hf_gpt1(text, add_special_tokens=False)["input_ids"]
        assert ids == want, (text, [gpt1.id_to_token(i) for i in ids], hf_gpt1.convert_ids_to_tokens(want))
    assert sum(len(ids) for ids in got) > 150  # the texts really were tokenized


def test_gpt1_vocabulary_layout(gpt1):
    # 40,478 BPE entries ('<unk>' = 0, '\n</w>' = 40477), then GPT-1's three specials at 40478-40480, then ours.
    assert gpt1.vocabulary_size == 40478 + len(SPECIAL_TOKENS)
    assert gpt1.id_to_token(0) == UNKNOWN_TOKEN and gpt1.id_to_token(40477) == "\n" + END_OF_WORD
    assert [gpt1.id_to_token(40478 + i) for i in range(len(SPECIAL_TOKENS))] == list(SPECIAL_TOKENS.values())
    assert gpt1.special_ids["start"] == 40478 and gpt1.special_ids["classify"] == 40480
    assert len(gpt1.merges) == 40000


def test_over_long_words_are_one_unknown_and_the_limit_is_a_setting(gpt1):
    ids = gpt1.tokenize(tf.constant(["x" * 101, "x" * 100])).to_list()
    assert ids[0] == [gpt1.unknown_id]
    assert len(ids[1]) == 50 and gpt1.unknown_id not in ids[1]  # 'xx' merges


def test_learned_vocabulary_round_trips_normalised_text(tmp_path):
    corpus = ["the cat sat on the mat .", "the dog ate the cat 's food !", "a naïve café in tōkyō 東京 ."] * 30
    tokenizer = BytePairTokenizer.learn(corpus, 120)
    assert tokenizer.vocabulary_size <= 120
    assert tokenizer.vocabulary[:1] == [UNKNOWN_TOKEN] and tokenizer.vocabulary[-len(SPECIAL_TOKENS):] == list(SPECIAL_TOKENS.values())
    # Lower-cased, accent-stripped, space-separated text comes back exactly; unseen words of seen characters too.
    texts = ["the cat sat on the mat .", "a naive cafe in tokyo 東 京 .", "mat cat dog tac"]
    ids = tokenizer.tokenize(tf.constant(texts))
    assert tokenizer.unknown_id not in ids.flat_values.numpy()
    assert [t.decode() for t in tokenizer.detokenize(ids).numpy()] == texts
    # Frequent words became single symbols: the learner merged.
    assert tokenizer.tokenize(tf.constant(["the"])).to_list() == [[tokenizer.token_to_id("the" + END_OF_WORD)]]
    # save -> load gives the same ids; the files are HF's vocab.json + merges.txt.
    assets = tokenizer.save(str(tmp_path))
    assert assets == {"vocabulary": "vocab.json", "merges": "merges.txt"}
    reloaded = BytePairTokenizer.load(str(tmp_path), {"assets": assets, **tokenizer.config()})
    assert reloaded.tokenize(tf.constant(texts)).to_list() == ids.to_list()
    assert read_merges(str(tmp_path / "merges.txt")) == tokenizer.merges
    assert read_vocabulary(str(tmp_path / "vocab.json"))[SPECIAL_TOKENS["pad"]] == tokenizer.pad_id


def test_learned_merges_are_the_greedy_bpe_of_a_hand_worked_corpus():
    # 'low' x5, 'lower' x2, 'newest' x6, 'widest' x3 (Sennrich et al.'s example, with '</w>' on the last char).
    words = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    symbols = [list(w[:-1]) + [w[-1] + END_OF_WORD] for w in words]
    learned = merges_lib.learn_merges(symbols, list(words.values()), 4, join=lambda a, b: a + b)
    # Counts: (e, s) 9 and (s, t</w>) 9 tie -> the smaller pair first; then (es, t</w>) 9, (l, o) 7; then
    # (e, w), (n, e) and (w, est</w>) tie at 6 -> (e, w).
    assert [(a, b) for a, b, _ in learned] == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w")]


def test_overlapping_pairs_merge_left_to_right():
    vocabulary = {t: i for i, t in enumerate([UNKNOWN_TOKEN, "a", "a</w>", "aa", "aa</w>", "aaa</w>"])}
    tokenizer = BytePairTokenizer(vocabulary, [("a", "a"), ("a", "a</w>"), ("aa", "a</w>")])
    # 'aaa' = a a a</w>: the best pair (a, a) merges once, at the left (aa a</w>), then (aa, a</w>).
    # 'aaaa' = a a a a</w>: (a, a) matches at 0 and 1 (overlapping): only 0 merges -> aa a a</w>; then (a, a</w>)
    # outranks (aa, a) -> aa aa</w>.
    got = tokenizer.tokenize(tf.constant(["aaa", "aaaa", "aa", "a"])).to_list()
    names = [[tokenizer.id_to_token(i) for i in row] for row in got]
    assert names == [["aaa</w>"], ["aa", "aa</w>"], ["aa</w>"], ["a</w>"]]


HOSTILE = [b"", b"\xff\xfe\xfd", b"ok \xc3\x28 then \xa0\xa1", b"\xed\xa0\x80", "\u202e\u200b\ufeff".encode(),
           ("word " * 20000).encode(), ("x" * 100_000).encode(), "🏳️‍🌈 👩‍👩‍👧".encode(), b"\x00" * 1000]


@pytest.mark.parametrize("learned", [True, False], ids=["learned", "gpt1"])
def test_any_bytes_tokenize_without_crashing(learned, request):
    tokenizer = (BytePairTokenizer.learn(["some words here ."] * 5, 60) if learned else request.getfixturevalue("gpt1"))
    ids = tokenizer.tokenize(tf.constant(HOSTILE))
    assert ids.shape[0] == len(HOSTILE)
    values = ids.flat_values.numpy()
    assert values.dtype == np.int32 and ((values >= 0) & (values < tokenizer.vocabulary_size)).all()
    lengths = ids.row_lengths().numpy()
    assert lengths[0] == 0 and lengths[-1] == 0  # empty and all-NUL text: no tokens
    assert lengths[5] >= 20000  # 20,000 words: none lost
    assert lengths[6] == 1  # one 100 KB word: one '<unk>'
    assert tokenizer.detokenize(ids).shape == (len(HOSTILE),)
    assert tokenizer.tokenize(tf.constant([], tf.string)).shape[0] == 0


def test_graph_tf_data_and_savedmodel_in_a_fresh_process(tmp_path):
    tokenizer = BytePairTokenizer.learn(["the cat sat on the mat .", "the dog ."] * 10, 60)
    texts = ["the cat sat", "dog mat the", ""]
    want = tokenizer.tokenize(tf.constant(texts)).to_list()
    graph = tf.function(tokenizer.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    assert graph(tf.constant(texts)).to_list() == want
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(lambda t: tokenizer.tokenize(t).to_tensor(-1))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), tf.ragged.constant(want).to_tensor(-1).numpy())

    module = tf.Module()
    module.tokenizer = tokenizer
    module.tokenize = tf.function(lambda t: {"ids": tokenizer.tokenize(t).to_tensor(-1)},
                                  input_signature=[tf.TensorSpec([None], tf.string)])
    export = str(tmp_path / "export")
    tf.saved_model.save(module, export, signatures={"serving_default": module.tokenize})
    code = ("import json, sys, tensorflow as tf, tensorflow_text\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "print(json.dumps(m.signatures['serving_default'](tf.constant(json.loads(sys.argv[2])))['ids'].numpy().tolist()))")
    out = subprocess.run([sys.executable, "-c", code, export, json.dumps(texts)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == tf.ragged.constant(want).to_tensor(-1).numpy().tolist()


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        BytePairTokenizer.from_files(str(tmp_path / "vocab.json"))
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="token: id"):
        read_vocabulary(str(tmp_path / "vocab.json"))
    (tmp_path / "vocab.json").write_text(json.dumps({"<unk>": 0, "a": 2}))
    with pytest.raises(ValueError, match="ids must be"):
        read_vocabulary(str(tmp_path / "vocab.json"))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="line 2"):
        read_merges(str(tmp_path / "merges.txt"))
    with pytest.raises(ValueError, match="no BPE vocabulary"):
        BytePairTokenizer.from_files(str(tmp_path / "nothing_here_dir")) if os.makedirs(tmp_path / "nothing_here_dir") is None else None
    with pytest.raises(ValueError, match="contain no words"):
        BytePairTokenizer.learn(["", "   ", "\x00"], 100)
    with pytest.raises(ValueError, match="too small"):
        BytePairTokenizer.learn(["abcdefghij"], 10)
