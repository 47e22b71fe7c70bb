"""ELMo's feature-based use (issue 24 item 5): `ElmoEmbedder` and the raw-string SavedModel with TF Hub elmo/3's
`default` / `tokens` signatures, through the shared harness (op allow-list, fresh process with only tensorflow +
tensorflow_text, hostile input, empty batch, parity with Keras), and a bilm-tf model converted by trainers.convert
that exports and serves bilm-tf's own outputs."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import zoo
from tests import cli_utils as cli
from zoo.data.corpus import rotten_tomatoes_task
from zoo.elmo import ElmoConfig, ElmoTokenizer
from zoo.elmo.embedder import ElmoEmbedder

FAMILY = zoo.family("elmo")
LENGTH = 24  # the preprocessor's T (with <S> and </S>)
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "bilm_tf_model")
needs_fixture = pytest.mark.skipif(not os.path.isdir(FIXTURE), reason=f"bilm-tf fixture not found: {FIXTURE} "
                                   "(../shared/fixtures/bilm_tf_model, from allenai/bilm-tf tests/fixtures/model/)")
# The `tokens` signature's rows ([B, K] strings) and the sequence_len every row of every case gets (harness settings).
TOKEN_ROWS = [["The", "movie", "was", "great", "!"], ["naïve", "café", "東京", "🙂", ""], ["\xff bad", "", "x", "y", "z"]]
SEQUENCE_LEN = 4
FEATURES = ["word_emb", "lstm_outputs1", "lstm_outputs2", "elmo", "default", "sequence_len", "mask"]


def write_model_dir(path, sentences, seed=3, **sizes):
    """An ELMo model dir as trainers.pretrain writes it (word vocabulary from `sentences`, seeded random weights)."""
    keras.utils.set_random_seed(seed)
    tokenizer = ElmoTokenizer.learn(sentences, 400)
    config = ElmoConfig(**{"vocabulary_size": tokenizer.vocabulary_size, "filters": ((1, 8), (2, 8), (3, 16)),
                           "num_highway": 1, "projection_dim": 16, "lstm_dim": 32, "num_samples": 50, "dropout": 0.0,
                           **sizes})
    FAMILY.write_model_dir(path, config, tokenizer, sequence_length=LENGTH)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=FAMILY.pretrainer(config)), path, max_to_keep=1).save()
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(str(tmp_path_factory.mktemp("elmo_model")), [t for t, _ in rotten_tomatoes_task()["train"][:1500]])


@pytest.fixture(scope="module")
def embedder(model_dir):
    return ElmoEmbedder.from_model_dir(model_dir)


def _words_of(backbone_output, lengths):
    """[B, T, D] over <S> w_1..w_n </S> -> [B, max n, D] with only the words (numpy, zero-padded)."""
    value = np.asarray(backbone_output)
    width = max(lengths) if lengths else 0
    out = np.zeros((value.shape[0], width) + value.shape[2:], value.dtype)
    for row, n in enumerate(lengths):
        out[row, :n] = value[row, 1:n + 1]
    return out


def test_embedder_layers_equal_the_backbone_without_the_boundary_positions(embedder):
    texts = ["the film was great", "", "a  b\tc", "naïve 東京 🙂 " * 12]  # the last is cut to T - 2 words
    out = embedder.embed(texts)
    features = embedder.preprocessor(tf.constant(texts))
    backbone = embedder.backbone(features)
    lengths = [min(len(t.split()), LENGTH - 2) for t in texts]
    assert out["sequence_len"].tolist() == lengths and out["mask"].sum(1).tolist() == lengths
    layers = out["layers"]  # [B, L + 1, W, 2P]
    assert layers.shape == (4, 3, max(lengths), 32)
    for j, h in enumerate(backbone["layers"]):
        np.testing.assert_array_equal(layers[:, j], _words_of(h, lengths))
    np.testing.assert_array_equal(out["word_emb"], _words_of(backbone["token_embedding"], lengths))
    np.testing.assert_array_equal(out["lstm_outputs1"], layers[:, 1])
    np.testing.assert_array_equal(out["lstm_outputs2"], layers[:, 2])
    # The pretrained model's mix is even (w = 0, gamma = 1); `default` is the mean of `elmo` over the words.
    np.testing.assert_allclose(out["elmo"], layers.mean(axis=1), atol=1e-6)
    for row, n in enumerate(lengths):
        want = out["elmo"][row, :n].mean(0) if n else np.zeros(32)
        np.testing.assert_allclose(out["default"][row], want, atol=1e-6)
    # Batches of different widths are zero-padded to the longest sentence of all.
    np.testing.assert_allclose(embedder.embed(texts, batch_size=1)["elmo"], out["elmo"], atol=1e-6)


def test_pre_split_tokens_give_the_same_words(embedder):
    sentences = ["the film was great", "a b c", ""]
    by_text = embedder.embed(sentences)
    by_lists = embedder.embed_tokens([s.split() for s in sentences])
    by_rows = embedder.embed_tokens(np.array([["the", "film", "was", "great"], ["a", "b", "c", "PAD"], ["", "", "", ""]],
                                             object), sequence_len=[4, 3, 0])
    for key in by_text:
        np.testing.assert_array_equal(by_lists[key], by_text[key], err_msg=key)
        np.testing.assert_array_equal(by_rows[key], by_text[key], err_msg=key)


def _reference(model_dir):
    """reference(signature, batches): the Keras model (a fresh ElmoEmbedder) on the same strings."""
    embedder = ElmoEmbedder.from_model_dir(model_dir)

    def reference(signature, batches):
        if signature == "tokens":
            out = embedder.outputs(embedder.token_features(tf.constant(batches[0]), [SEQUENCE_LEN] * len(batches[0])))
        else:
            out = embedder.outputs(embedder.sentence_features(batches[0]))
        return {k: v.numpy() for k, v in out.items()}

    return reference


@pytest.fixture(scope="module")
def export_check(model_dir, tmp_path_factory):
    return harness.check_export(model_dir, str(tmp_path_factory.mktemp("elmo_export") / "export"),
                                reference=_reference(model_dir), choices=[TOKEN_ROWS],
                                settings={"sequence_len": SEQUENCE_LEN}, expect_ops=("DecodePaddedRaw", "StringSplitV2", "StaticRegexReplace"))


def test_export_has_tf_hubs_signatures_and_passes_the_harness(export_check):
    outputs = export_check["outputs"]
    assert sorted(outputs) == ["default", "serving_default", "tokens"]
    for name in ("default", "tokens"):
        assert sorted(outputs[name]) == sorted(FEATURES), sorted(outputs[name])
    default = outputs["default"]
    n = len(harness.TEXTS)
    assert default["word_emb"].shape[::2] == (n, 16) and default["lstm_outputs2"].shape[::2] == (n, 32)
    assert default["default"].shape == (n, 32) and default["sequence_len"].dtype == np.int32
    assert default["sequence_len"].tolist() == [min(len(t.split()), LENGTH - 2) for t in harness.TEXTS]
    assert outputs["tokens"]["sequence_len"].tolist() == [SEQUENCE_LEN] * len(TOKEN_ROWS)


def test_empty_batch_and_hostile_inputs(export_check):
    hostile = export_check["hostile"]
    empty = hostile["zero_batch"]["default"]
    assert empty["elmo"].shape[0] == 0 and empty["elmo"].ndim == 3 and empty["default"].shape == (0, 32)
    assert hostile["zero_batch"]["tokens"]["lstm_outputs1"].shape[0] == 0
    blank = hostile["empty_strings"]["default"]  # no words: nothing to mix, every output 0
    assert blank["sequence_len"].tolist() == [0, 0, 0] and not blank["default"].any()
    assert hostile["long_100kb"]["default"]["sequence_len"].tolist() == [LENGTH - 2, 1]


def test_default_and_tokens_signatures_agree_on_the_same_words(export_check):
    loaded = tf.saved_model.load(export_check["export_dir"])
    sentences = ["the film was great", "a b c", "", "naïve café"]
    rows = [s.split() for s in sentences]
    width = max(map(len, rows))
    tokens = tf.constant([r + [""] * (width - len(r)) for r in rows])
    by_text = loaded.signatures["default"](text=tf.constant(sentences))
    by_tokens = loaded.signatures["tokens"](tokens=tokens, sequence_len=tf.constant([len(r) for r in rows], tf.int32))
    for key in FEATURES:
        np.testing.assert_allclose(by_tokens[key].numpy(), by_text[key].numpy(), atol=1e-6, err_msg=key)
    # Lengths past K are clipped to K, negative ones to 0.
    clipped = loaded.signatures["tokens"](tokens=tokens, sequence_len=tf.constant([99, 3, -5, 2], tf.int32))
    assert clipped["sequence_len"].numpy().tolist() == [4, 3, 0, 2]
    # The exported mix weights are variables a user can read: an even mix, gamma 1.
    mix = [v.numpy() for v in loaded.mix]
    assert sorted(m.shape for m in mix) == [(), (3,)] and all(np.all(m == (1.0 if m.ndim == 0 else 0.0)) for m in mix)


@needs_fixture
def test_converted_bilm_tf_model_exports_and_serves_its_outputs(tmp_path):
    """trainers.convert --from=bilm_tf on the fixture -> trainers.export -> served in a fresh process: lstm_outputs2
    equals the converted Keras model's, and on the first batch (fresh LSTM state, as a stateless model runs every
    batch) bilm-tf's own golden top-layer outputs."""
    import h5py

    from zoo.elmo.convert import convert_bilm_tf

    out = tmp_path / "converted"
    code, output = cli.run_trainer("convert", "--family=elmo", "--from=bilm_tf", "--to=zoo", f"--input={FIXTURE}",
                                   f"--output={out}", timeout=180)
    assert code == 0, cli.tail(output)
    config = json.loads((out / "zoo_config.json").read_text())
    assert config["backbone"]["vocabulary_size"] == 0 and config["conversion"]["format"] == "bilm_tf"
    assert config["conversion"]["special_words_added"] == ["<UNK>"]  # vocab_test.txt has <S> and </S> only

    with open(os.path.join(FIXTURE, "lm_embeddings_sentences.json")) as f:
        lists = json.load(f)
    sentences = [lists[k][0].strip() for k in range(3)]  # the first batch: sentence 0 of each list
    _, backbone = convert_bilm_tf(os.path.join(FIXTURE, "options.json"), os.path.join(FIXTURE, "lm_weights.hdf5"))
    _, pre = FAMILY.load_pretrained(str(out), trim=True)
    keras_embedder = ElmoEmbedder(backbone, pre)

    def reference(signature, batches):
        if signature == "tokens":
            return {k: v.numpy() for k, v in keras_embedder.outputs(keras_embedder.token_features(
                tf.constant(batches[0]), [SEQUENCE_LEN] * len(batches[0]))).items()}
        return {k: v.numpy() for k, v in keras_embedder.outputs(keras_embedder.sentence_features(batches[0])).items()}

    result = harness.check_export(str(out), str(tmp_path / "export"), reference=reference, texts=sentences,
                                  choices=[TOKEN_ROWS], settings={"sequence_len": SEQUENCE_LEN})
    served = result["outputs"]["default"]["lstm_outputs2"]  # [3, W, 2 x 16]: [forward; backward] top layer
    for k in range(3):
        with h5py.File(os.path.join(FIXTURE, f"lm_embeddings_{k}.hdf5"), "r") as f:
            golden = f["0"][()]  # [2, n, 16]
        n = golden.shape[1]
        assert result["outputs"]["default"]["sequence_len"][k] == n
        np.testing.assert_allclose(served[k, :n, :16], golden[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(served[k, :n, 16:], golden[1], atol=1e-5, rtol=0)
