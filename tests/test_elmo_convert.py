"""bilm-tf weights into the zoo (zoo/elmo/convert.py): parity with the TF original's golden outputs on the fixture
in ../shared/fixtures/bilm_tf_model, and clear errors for bad files."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import reference_elmo_numpy as ref
from zoo.elmo.chars import word_char_ids
from zoo.elmo.convert import convert_bilm_tf, read_token_embeddings
from zoo.formats import ConversionError

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "bilm_tf_model")
needs_fixture = pytest.mark.skipif(not os.path.isdir(FIXTURE), reason=f"bilm-tf fixture not found: {FIXTURE} "
                                   "(../shared/fixtures/bilm_tf_model, from allenai/bilm-tf tests/fixtures/model/)")


def _path(name):
    return os.path.join(FIXTURE, name)


def _batch(sentences):
    """bilm-tf's test: each sentence split on whitespace, <S> and </S> added, right-padded with empty words."""
    rows = [["<S>"] + s.strip().split() + ["</S>"] for s in sentences]
    length = max(map(len, rows))
    char_ids = word_char_ids(tf.constant([row + [""] * (length - len(row)) for row in rows]))
    return {"char_ids": char_ids, "padding_mask": tf.reduce_any(char_ids > 0, axis=-1)}, [len(r) - 2 for r in rows]


def _write_hdf5(path, arrays):
    import h5py

    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)


@needs_fixture
def test_fixture_matches_bilm_tf_on_ten_stateful_batches():
    """lm_embeddings_{k}.hdf5 dataset i (2, n, 16): the forward and backward top layer of sentence i of list k
    without <S> and </S>, from 10 sequential batches (batch i = the i-th sentence of each list) with the LSTM
    state carried between batches (bilm-tf tests/test_model.py)."""
    import h5py

    config, backbone = convert_bilm_tf(_path("options.json"), _path("lm_weights.hdf5"), stateful=True, batch_size=4)
    assert (config.lstm_dim, config.projection_dim, config.num_layers, config.use_skip_connections) == (64, 16, 2, False)
    with open(_path("lm_embeddings_sentences.json")) as f:
        sentences = json.load(f)
    golden = [h5py.File(_path(f"lm_embeddings_{k}.hdf5"), "r") for k in range(3)]
    worst = 0.0
    for i in range(10):
        inputs, lengths = _batch([sentences[k][i] for k in range(3)])
        out = backbone(inputs)
        for k in range(3):
            want = golden[k][str(i)][()]  # [2, n, 16]
            assert want.shape[1] == lengths[k]
            got = np.stack([out["forward_layers"][-1][k, 1:lengths[k] + 1], out["backward_layers"][-1][k, 1:lengths[k] + 1]])
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"batch {i}, sentence {k}")
            worst = max(worst, float(np.abs(got - want).max()))
    # A stateless run matches batch 0 only (the golden files need the carried state).
    stateless = convert_bilm_tf(_path("options.json"), _path("lm_weights.hdf5"))[1]
    inputs, lengths = _batch([sentences[k][1] for k in range(3)])
    got = stateless(inputs)["forward_layers"][-1].numpy()[0, 1:lengths[0] + 1]
    assert np.abs(got - golden[0]["1"][0]).max() > 1e-3
    print(f"max |zoo - bilm-tf| over 10 batches: {worst:.2e}")


@needs_fixture
def test_fixture_matches_numpy_reference_every_layer():
    import h5py

    with open(_path("options.json")) as f:
        options = json.load(f)
    with h5py.File(_path("lm_weights.hdf5"), "r") as f:
        weights = {}
        f.visititems(lambda name, item: weights.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    _, backbone = convert_bilm_tf(_path("options.json"), _path("lm_weights.hdf5"))
    inputs, _ = _batch(["Pierre Vinken , 61 years old", "東京 🎉 naïve", "a"])
    out = backbone(inputs)
    tokens, forward, backward, _ = ref.bilm(weights, options, inputs["char_ids"].numpy())
    mask = inputs["padding_mask"].numpy()[..., None]
    np.testing.assert_allclose(out["token_embedding"].numpy(), np.where(mask, tokens, 0), atol=1e-5)
    for i in range(2):
        np.testing.assert_allclose(out["forward_layers"][i].numpy(), forward[i], atol=1e-5)
        np.testing.assert_allclose(out["backward_layers"][i].numpy(), backward[i], atol=1e-5)


@needs_fixture
def test_token_embedding_file_round_trip(tmp_path):
    """dump_token_embeddings' file (dataset 'embedding', one row per vocabulary line) drives the biLSTM as the
    char CNN does: written here from the converted token encoder, as bilm-tf writes it from its own."""
    _, backbone = convert_bilm_tf(_path("options.json"), _path("lm_weights.hdf5"))
    with open(_path("vocab_test.txt"), encoding="utf-8") as f:
        vocabulary = [line.strip() for line in f]
    table = backbone.token_encoder(word_char_ids(tf.constant(vocabulary))[:, None])[:, 0].numpy()  # [V, P]
    _write_hdf5(tmp_path / "embeddings.hdf5", {"embedding": table})
    embeddings = read_token_embeddings(str(tmp_path / "embeddings.hdf5"), projection_dim=16)
    assert embeddings.shape == (len(vocabulary) + 1, 16) and np.all(embeddings[0] == 0)
    words = ["<S>", "The", "the", "of", "a", ".", "</S>"]
    ids = np.array([[vocabulary.index(w) + 1 if w in vocabulary else 0 for w in words]])
    assert np.all(ids > 0), "the test words should be in vocab_test.txt"
    by_chars = backbone({"char_ids": word_char_ids(tf.constant([words])), "padding_mask": tf.ones([1, 7])})
    by_table = backbone.contextualize(tf.constant(embeddings[ids]), tf.ones([1, 7]))
    np.testing.assert_allclose(by_table["sequence_output"].numpy(), by_chars["sequence_output"].numpy(), atol=1e-6)
    with pytest.raises(ConversionError, match="width 32"):
        read_token_embeddings(str(tmp_path / "embeddings.hdf5"), projection_dim=32)


def test_convert_other_size_from_files(tmp_path):
    """Files written in bilm-tf's layout at another size (skip connections, tanh, 3 layers) convert and match the
    numpy reference; this runs without the fixture."""
    options = {"char_cnn": {"embedding": {"dim": 3}, "filters": [[1, 3], [3, 5]], "n_highway": 1, "n_characters": 261,
                            "max_characters_per_token": 50, "activation": "tanh"},
               "lstm": {"dim": 12, "projection_dim": 4, "n_layers": 3, "cell_clip": 1.0, "proj_clip": 0.5,
                        "use_skip_connections": True}}
    weights = ref.random_bilm_tf_weights(options, np.random.default_rng(0))
    (tmp_path / "options.json").write_text(json.dumps(options))
    _write_hdf5(tmp_path / "lm_weights.hdf5", weights)
    config, backbone = convert_bilm_tf(str(tmp_path / "options.json"), str(tmp_path / "lm_weights.hdf5"))
    assert config.num_characters == 262 and config.filters == ((1, 3), (3, 5)) and config.vocabulary_size == 0
    inputs, _ = _batch(["one two three", "four"])
    out = backbone(inputs)
    _, forward, backward, _ = ref.bilm(weights, options, inputs["char_ids"].numpy())
    np.testing.assert_allclose(out["forward_layers"][-1].numpy(), forward[-1], atol=1e-5)
    np.testing.assert_allclose(out["backward_layers"][-1].numpy(), backward[-1], atol=1e-5)


def test_converter_errors_are_clear(tmp_path):
    options = {"char_cnn": {"embedding": {"dim": 2}, "filters": [[1, 2], [2, 2]], "n_highway": 1, "n_characters": 262,
                            "max_characters_per_token": 50, "activation": "relu"},
               "lstm": {"dim": 8, "projection_dim": 3, "n_layers": 1, "cell_clip": 3, "proj_clip": 3,
                        "use_skip_connections": False}}
    weights = ref.random_bilm_tf_weights(options, np.random.default_rng(1))
    (tmp_path / "options.json").write_text(json.dumps(options))
    opts, good = str(tmp_path / "options.json"), str(tmp_path / "good.hdf5")
    _write_hdf5(good, weights)
    convert_bilm_tf(opts, good)  # the good pair converts

    with pytest.raises(ConversionError, match="missing.hdf5 not found"):
        convert_bilm_tf(opts, str(tmp_path / "missing.hdf5"))
    with pytest.raises(ConversionError, match="no_options.json not found"):
        convert_bilm_tf(str(tmp_path / "no_options.json"), good)
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ConversionError, match="not a readable hdf5 file"):
        convert_bilm_tf(opts, str(tmp_path / "junk.hdf5"))
    wrong = dict(weights, **{"CNN/W_cnn_1": np.zeros((1, 3, 2, 2), np.float32)})
    wrong.pop("CNN_proj/b_proj")
    wrong["RNN_0/RNN/MultiRNNCell/Cell5/LSTMCell/B"] = np.zeros(32, np.float32)
    _write_hdf5(tmp_path / "wrong.hdf5", wrong)
    with pytest.raises(ConversionError) as error:
        convert_bilm_tf(opts, str(tmp_path / "wrong.hdf5"))
    message = str(error.value)
    assert "CNN/W_cnn_1 is [1, 3, 2, 2], expected [1, 2, 2, 2]" in message
    assert "missing CNN_proj/b_proj [3]" in message and "unexpected RNN_0/RNN/MultiRNNCell/Cell5/LSTMCell/B" in message
    bad = json.loads(json.dumps(options))
    del bad["lstm"]["dim"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConversionError, match="has no lstm.dim"):
        convert_bilm_tf(str(tmp_path / "bad.json"), good)
    bad["lstm"]["dim"], bad["char_cnn"]["activation"] = 8, "gelu"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConversionError, match="activation is 'gelu'"):
        convert_bilm_tf(str(tmp_path / "bad.json"), good)
