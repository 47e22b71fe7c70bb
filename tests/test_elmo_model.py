"""ELMo's model pieces: character ids, ProjectedLSTM, ScalarMix, ElmoBackbone (against tests/reference_elmo_numpy.py)."""

import numpy as np
import pytest
import tensorflow as tf

import harness
import reference_elmo_numpy as ref
from zoo.elmo.backbone import ElmoBackbone
from zoo.elmo.chars import BOS_CHAR, BOW_CHAR, EOS_CHAR, EOW_CHAR, PAD_CHAR, word_char_ids
from zoo.elmo.config import PRESETS, ElmoConfig
from zoo.elmo.convert import load_bilm_tf_weights
from zoo.layers.projected_lstm import ProjectedLSTM
from zoo.layers.scalar_mix import ScalarMix

# A size unlike the fixture's (which has no skip connections and relu): 3 layers, skips, tanh, 1 highway.
OPTIONS = {
    "char_cnn": {"embedding": {"dim": 3}, "filters": [[1, 3], [2, 5], [4, 6]], "n_highway": 1, "n_characters": 262,
                 "max_characters_per_token": 12, "activation": "tanh"},
    "lstm": {"dim": 24, "projection_dim": 6, "n_layers": 3, "cell_clip": 0.5, "proj_clip": 0.4,
             "use_skip_connections": True},
}


def _config(options=OPTIONS):
    cnn, lstm = options["char_cnn"], options["lstm"]
    return ElmoConfig(vocabulary_size=0, char_embedding_dim=cnn["embedding"]["dim"], filters=cnn["filters"],
                      num_highway=cnn["n_highway"], projection_dim=lstm["projection_dim"], lstm_dim=lstm["dim"],
                      num_layers=lstm["n_layers"], cell_clip=lstm["cell_clip"], projection_clip=lstm["proj_clip"],
                      use_skip_connections=lstm["use_skip_connections"], activation=cnn["activation"],
                      max_characters_per_token=cnn["max_characters_per_token"], dropout=0.2)


def _char_ids(sentences, max_chars):
    """Words of each sentence with <S>, </S> -> (char ids [B, T, C], padding mask [B, T]) from the numpy reference."""
    rows = [["<S>"] + s.split() + ["</S>"] for s in sentences]
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length, max_chars), np.int32)
    for b, row in enumerate(rows):
        for t, word in enumerate(row):
            ids[b, t] = ref.word_char_ids(word, max_chars)
    return ids, (ids > 0).any(-1).astype(np.int32)


SENTENCES = ["the cat sat on the mat", "naïve 東京 🎉", "a"]


# ---- character ids ----------------------------------------------------------------------------------------------

def test_char_ids_exact():
    ids = word_char_ids(tf.constant(["ab", "<S>", "</S>", ""]), max_chars=6).numpy()
    shift = 1  # bilm-tf's batcher adds 1 so 0 is the mask
    np.testing.assert_array_equal(ids[0], np.array([BOW_CHAR, 97, 98, EOW_CHAR, PAD_CHAR, PAD_CHAR]) + shift)
    np.testing.assert_array_equal(ids[1], np.array([BOW_CHAR, BOS_CHAR, EOW_CHAR, PAD_CHAR, PAD_CHAR, PAD_CHAR]) + shift)
    np.testing.assert_array_equal(ids[2], np.array([BOW_CHAR, EOS_CHAR, EOW_CHAR, PAD_CHAR, PAD_CHAR, PAD_CHAR]) + shift)
    np.testing.assert_array_equal(ids[3], np.zeros(6))
    assert (BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR) == (256, 257, 258, 259, 260)


@pytest.mark.parametrize("word", [
    "hello", "Ünïcödé", "café", "東京大学", "🎉👍🏽", "x" * 47, "x" * 48, "x" * 49, "y" * 300,
    "東" * 20,  # 60 bytes: the cut at 48 bytes splits no character here ...
    "é" * 30,  # ... and here 48 bytes are 24 whole characters
    "a" + "東" * 20,  # 61 bytes: the cut at 48 splits a character, as bilm-tf's bytes[:48] does
    b"\xff\xfe invalid \xc3",  # invalid UTF-8: the bytes as they are
    b"\x00nul",  # a NUL byte is byte 0 (id 1), not padding
    "<S>", "</S>", "<s>", "",
])
def test_char_ids_match_bilm_tf(word):
    words = tf.constant([word.encode("utf-8") if isinstance(word, str) else word])
    np.testing.assert_array_equal(word_char_ids(words).numpy()[0], ref.word_char_ids(word))


def test_char_ids_shapes():
    dense = word_char_ids(tf.constant([["a", "bb"], ["", "c"]]), max_chars=7)
    assert dense.shape == (2, 2, 7) and dense.dtype == tf.int32
    ragged = word_char_ids(tf.ragged.constant([["a", "bb", "c"], ["d"]]), max_chars=7)
    assert isinstance(ragged, tf.RaggedTensor) and ragged.shape.as_list() == [2, None, 7]
    np.testing.assert_array_equal(ragged[0, 1].numpy(), dense[0, 1].numpy())
    assert word_char_ids(tf.zeros([0], tf.string)).shape == (0, 50)
    graph = tf.function(lambda w: word_char_ids(w), input_signature=[tf.TensorSpec([None, None], tf.string)])
    np.testing.assert_array_equal(graph(tf.constant([["a", "bb"], ["", "c"]]))[..., :7].numpy(), dense.numpy())
    with pytest.raises(ValueError, match="at least 3"):
        word_char_ids(tf.constant(["a"]), max_chars=2)


# ---- ProjectedLSTM ----------------------------------------------------------------------------------------------

def _lstm_with_large_weights(units=16, projection_dim=5, input_dim=7, seed=0, **kwargs):
    lstm = ProjectedLSTM(units, projection_dim, cell_clip=1.5, projection_clip=0.7, **kwargs)
    lstm.build((None, None, input_dim))
    rng = np.random.default_rng(seed)
    for w in lstm.weights:  # large weights, so both clips bite
        w.assign(rng.normal(0, 1.5, w.shape).astype(np.float32))
    return lstm


def _lstm_reference(lstm, x, lengths, state=None):
    W = np.concatenate([lstm.input_kernel.numpy(), lstm.recurrent_kernel.numpy()]).astype(np.float64)
    W_P = lstm.projection_kernel.numpy().astype(np.float64) if lstm.projection_dim else None
    return ref.lstm_layer(x.astype(np.float64), lengths, W, lstm.bias.numpy().astype(np.float64), W_P,
                          lstm.cell_clip, lstm.projection_clip, state)


def test_projected_lstm_equals_step_by_step_reference():
    lstm = _lstm_with_large_weights()
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (3, 9, 7)).astype(np.float32)
    lengths = np.array([9, 4, 0])
    mask = np.arange(9)[None] < lengths[:, None]
    state = (rng.normal(0, 1, (3, 16)).astype(np.float32), rng.normal(0, 0.5, (3, 5)).astype(np.float32))
    outputs, (c, h) = lstm(x, mask=mask, initial_state=state)
    want, (want_c, want_h) = _lstm_reference(lstm, x, lengths, state)
    np.testing.assert_allclose(outputs.numpy(), want, atol=2e-5)
    np.testing.assert_allclose(c.numpy(), want_c, atol=2e-5)
    np.testing.assert_allclose(h.numpy(), want_h, atol=2e-5)
    assert np.isclose(np.abs(want).max(), 0.7), "the projection clip did not bite"
    assert np.isclose(np.abs(want_c[:2]).max(), 1.5), "the cell clip did not bite"
    assert np.all(outputs.numpy()[1, 4:] == 0) and np.all(outputs.numpy()[2] == 0), "padding outputs are not zero"
    np.testing.assert_array_equal(c.numpy()[2], state[0][2])  # an all-padding row keeps its state


def test_projected_lstm_without_projection_and_forget_bias():
    lstm = ProjectedLSTM(6, None, cell_clip=None, projection_clip=None, forget_bias=0.0)
    x = np.random.default_rng(2).normal(0, 1, (2, 4, 3)).astype(np.float32)
    outputs, _ = lstm(x)
    W = np.concatenate([lstm.input_kernel.numpy(), lstm.recurrent_kernel.numpy()]).astype(np.float64)
    bias = lstm.bias.numpy() - np.concatenate([np.zeros(12), np.ones(6), np.zeros(6)])  # the reference adds 1
    want, _ = ref.lstm_layer(x.astype(np.float64), np.array([4, 4]), W, bias, None, None, None)
    assert outputs.shape == (2, 4, 6)
    np.testing.assert_allclose(outputs.numpy(), want, atol=2e-6)


@pytest.mark.parametrize("manual_backward", [True, False])
def test_projected_lstm_gradients_match_finite_differences(manual_backward):
    lstm = ProjectedLSTM(4, 3, cell_clip=1.0, projection_clip=0.5, dtype="float64", manual_backward=manual_backward)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(0, 1, (2, 5, 3)))
    state = (tf.constant(rng.normal(0, 1, (2, 4))), tf.constant(rng.normal(0, 0.5, (2, 3))))
    mask = tf.constant([[True] * 5, [True] * 3 + [False] * 2])
    weighting = tf.range(1.0, 4.0, dtype=tf.float64)

    def loss_of(x, c0, h0):
        outputs, (c, h) = lstm(x, mask=mask, initial_state=(c0, h0))
        return tf.reduce_sum(outputs * weighting) + tf.reduce_sum(c) + tf.reduce_sum(h)

    theoretical, numerical = tf.test.compute_gradient(loss_of, [x, *state])
    for got, want in zip(theoretical, numerical):
        np.testing.assert_allclose(got, want, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = loss_of(x, *state)
    grads = tape.gradient(loss, lstm.trainable_weights)
    for weight, grad in zip(lstm.trainable_weights, grads):  # a few entries of each weight by central differences
        for index in list(np.ndindex(*weight.shape))[:: max(1, int(np.prod(weight.shape)) // 5)]:
            original = weight.numpy()
            bumped = [original.copy(), original.copy()]
            bumped[0][index] += 1e-6
            bumped[1][index] -= 1e-6
            values = []
            for value in bumped:
                weight.assign(value)
                values.append(float(loss_of(x, *state)))
            weight.assign(original)
            np.testing.assert_allclose(grad.numpy()[index], (values[0] - values[1]) / 2e-6, atol=1e-5,
                                       err_msg=f"{weight.path}{index}")


@pytest.mark.parametrize("projection_dim", [5, None])
def test_hand_written_backward_equals_autodiff(projection_dim):
    lstm = _lstm_with_large_weights(projection_dim=projection_dim)
    reference = ProjectedLSTM(16, projection_dim, cell_clip=1.5, projection_clip=0.7, manual_backward=False)
    reference.build((None, None, 7))
    for a, b in zip(lstm.weights, reference.weights):
        b.assign(a)
    rng = np.random.default_rng(9)
    x = tf.constant(rng.normal(0, 1, (3, 6, 7)), tf.float32)
    mask = tf.constant([[1] * 6, [1, 1, 1, 0, 0, 0], [0] * 6])
    state = tuple(tf.constant(rng.normal(0, 1, (3, n)), tf.float32) for n in lstm.state_size)
    weighting = tf.constant(rng.normal(0, 1, (lstm.output_dim,)), tf.float32)

    def gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch([x, *state])
            outputs, (c, h) = layer(x, mask=mask, initial_state=state)
            loss = tf.reduce_sum(outputs * weighting) + tf.reduce_sum(c * c) + tf.reduce_sum(h)
        return tape.gradient(loss, [x, *state] + layer.trainable_weights)

    for got, want in zip(gradients(lstm), gradients(reference)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-5)


def test_projected_lstm_jit_compile_and_gradients():
    lstm = _lstm_with_large_weights()
    x = tf.constant(np.random.default_rng(4).normal(0, 1, (2, 6, 7)), tf.float32)
    mask = tf.constant([[1] * 6, [1, 1, 1, 0, 0, 0]])

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs, (c, _) = lstm(x, mask=mask)
            loss = tf.reduce_sum(outputs ** 2) + tf.reduce_sum(c)
        return outputs, tape.gradient(loss, [x] + lstm.trainable_weights)

    eager_out, eager_grads = run(x)
    xla_out, xla_grads = tf.function(run, jit_compile=True)(x)
    np.testing.assert_allclose(xla_out.numpy(), eager_out.numpy(), atol=1e-5)
    for got, want in zip(xla_grads, eager_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


def test_projected_lstm_bfloat16_mixed_precision():
    lstm = _lstm_with_large_weights()
    mixed = ProjectedLSTM(16, 5, cell_clip=1.5, projection_clip=0.7, dtype="mixed_bfloat16")
    mixed.build((None, None, 7))
    for a, b in zip(lstm.weights, mixed.weights):
        b.assign(a)
    assert mixed.input_kernel.dtype == "float32"  # variables stay float32
    x = np.random.default_rng(5).normal(0, 1, (2, 6, 7)).astype(np.float32)
    with tf.GradientTape() as tape:
        outputs, (c, h) = mixed(x)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32))
    grads = tape.gradient(loss, mixed.trainable_weights)
    assert outputs.dtype == tf.bfloat16 and c.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(outputs, tf.float32).numpy(), lstm(x)[0].numpy(), atol=0.1)
    assert all(g is not None and g.dtype == tf.float32 and np.all(np.isfinite(g.numpy())) for g in grads)


def test_projected_lstm_keras_contract(tmp_path):
    lstm = ProjectedLSTM(8, 3, cell_clip=3.0, projection_clip=3.0, name="lstm")
    harness.check_layer_contract(lstm, tf.random.normal([2, 4, 5]), tmp_dir=str(tmp_path))


# ---- ScalarMix --------------------------------------------------------------------------------------------------

def test_scalar_mix_weights_and_gradients():
    mix = ScalarMix(3, l2_coefficient=0.01)
    rng = np.random.default_rng(6)
    hs = [tf.constant(rng.normal(0, 1, (2, 4, 5)), tf.float32) for _ in range(3)]
    mix(hs)
    mix.scalar_weights.assign([0.3, -1.0, 0.5])
    mix.gamma.assign(1.7)
    with tf.GradientTape() as tape:
        out = mix(hs)
        loss = tf.reduce_sum(out * hs[0]) + tf.add_n(mix.losses)
    s = np.exp([0.3, -1.0, 0.5]) / np.exp([0.3, -1.0, 0.5]).sum()
    np.testing.assert_allclose(mix.normalized_weights().numpy().sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), 1.7 * sum(s[k] * hs[k].numpy() for k in range(3)), atol=1e-5)
    np.testing.assert_allclose(mix.losses[0].numpy(), 0.01 * (0.09 + 1.0 + 0.25), atol=1e-6)
    grad_w, grad_gamma = tape.gradient(loss, [mix.scalar_weights, mix.gamma])
    assert np.all(np.abs(grad_w.numpy()) > 0) and abs(float(grad_gamma)) > 0


def test_scalar_mix_layer_norm_matches_numpy():
    mix = ScalarMix(2, do_layer_norm=True)
    rng = np.random.default_rng(7)
    hs = [rng.normal(3, 2, (2, 5, 4)).astype(np.float32) for _ in range(2)]
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = mix(hs, mask=tf.constant(mask)).numpy()

    def norm(h):  # allennlp: one mean and variance over every unmasked element of the batch
        m = mask[..., None].astype(np.float64)
        n = m.sum() * h.shape[-1]
        mean = (h * m).sum() / n
        var = (((h * m) - mean) * m) ** 2
        return (h - mean) / np.sqrt(var.sum() / n + 1e-13)

    np.testing.assert_allclose(out, 0.5 * norm(hs[0]) + 0.5 * norm(hs[1]), atol=1e-5)
    with pytest.raises(ValueError, match="needs the mask"):
        mix(hs)


def test_scalar_mix_keras_contract(tmp_path):
    harness.check_layer_contract(ScalarMix(3, name="mix"), [tf.random.normal([2, 3, 4]) for _ in range(3)],
                                 tmp_dir=str(tmp_path))


# ---- ElmoBackbone -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted():
    """(numpy weights in bilm-tf's layout, a backbone holding them) at the OPTIONS size."""
    weights = ref.random_bilm_tf_weights(OPTIONS, np.random.default_rng(8))
    backbone = ElmoBackbone(**_config().to_dict())
    backbone.build()
    load_bilm_tf_weights(backbone, weights)
    return weights, backbone


def test_backbone_matches_numpy_reference(converted):
    weights, backbone = converted
    ids, mask = _char_ids(SENTENCES, OPTIONS["char_cnn"]["max_characters_per_token"])
    out = backbone({"char_ids": ids, "padding_mask": mask})
    tokens, forward, backward, _ = ref.bilm(weights, OPTIONS, ids)
    live = mask.astype(bool)[..., None]
    np.testing.assert_allclose(out["token_embedding"].numpy(), np.where(live, tokens, 0), atol=1e-5)
    for i in range(3):
        np.testing.assert_allclose(out["forward_layers"][i].numpy(), forward[i], atol=1e-5, err_msg=f"forward {i}")
        np.testing.assert_allclose(out["backward_layers"][i].numpy(), backward[i], atol=1e-5, err_msg=f"backward {i}")
        np.testing.assert_array_equal(out["layers"][i + 1].numpy(),
                                      np.concatenate([out["forward_layers"][i], out["backward_layers"][i]], -1))
    np.testing.assert_array_equal(out["layers"][0].numpy(), np.concatenate([out["token_embedding"]] * 2, -1))
    assert out["sequence_output"] is out["layers"][-1] and len(out["layers"]) == 4
    clipped = np.abs(forward[0]).max()
    assert np.isclose(clipped, OPTIONS["lstm"]["proj_clip"]), "the projection clip did not bite"


def test_backbone_jit_compile_parity(converted):
    _, backbone = converted
    ids, mask = _char_ids(SENTENCES, OPTIONS["char_cnn"]["max_characters_per_token"])
    inputs = {"char_ids": tf.constant(ids), "padding_mask": tf.constant(mask)}
    eager = backbone(inputs)
    compiled = tf.function(lambda x: backbone(x), jit_compile=True)(inputs)
    harness.assert_same_outputs(compiled, eager, atol=1e-5, what="jit_compile")


def test_forward_never_sees_future_backward_never_sees_past(converted):
    _, backbone = converted
    C = OPTIONS["char_cnn"]["max_characters_per_token"]
    ids, mask = _char_ids(["w0 w1 w2 w3 w4 w5"], C)
    base = backbone({"char_ids": ids, "padding_mask": mask})
    for k in range(1, 7):  # positions of w0..w5 (0 is <S>)
        changed = ids.copy()
        changed[0, k] = ref.word_char_ids("CHANGED", C)
        out = backbone({"char_ids": changed, "padding_mask": mask})
        for i in range(3):
            f0, f1 = base["forward_layers"][i].numpy()[0], out["forward_layers"][i].numpy()[0]
            b0, b1 = base["backward_layers"][i].numpy()[0], out["backward_layers"][i].numpy()[0]
            np.testing.assert_array_equal(f1[:k], f0[:k], err_msg=f"forward layer {i} saw word {k} before it")
            np.testing.assert_array_equal(b1[k + 1:], b0[k + 1:], err_msg=f"backward layer {i} saw word {k} after it")
            assert not np.allclose(f1[k:], f0[k:]) and not np.allclose(b1[:k + 1], b0[:k + 1]), "the change reached nothing"


def test_backbone_padding_is_never_read(converted):
    _, backbone = converted
    ids, mask = _char_ids(SENTENCES, OPTIONS["char_cnn"]["max_characters_per_token"])
    out = backbone({"char_ids": ids, "padding_mask": mask})
    garbage = ids.copy()
    garbage[mask == 0] = 5  # characters at padded positions must change nothing
    again = backbone({"char_ids": garbage, "padding_mask": mask})
    harness.assert_same_outputs(again, out, atol=0, what="garbage under the padding")
    n = int(mask[2].sum())
    alone = backbone({"char_ids": ids[2:3, :n], "padding_mask": mask[2:3, :n]})
    np.testing.assert_allclose(alone["sequence_output"].numpy()[0], out["sequence_output"].numpy()[2, :n], atol=1e-6)


def test_backbone_mixed_bfloat16(converted):
    weights, backbone = converted
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as trainers/common.py sets --precision
    try:
        mixed = ElmoBackbone(**_config().to_dict())
        mixed.build()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    load_bilm_tf_weights(mixed, weights)
    ids, mask = _char_ids(SENTENCES, OPTIONS["char_cnn"]["max_characters_per_token"])
    inputs = {"char_ids": ids, "padding_mask": mask}
    with tf.GradientTape() as tape:
        out = mixed(inputs, training=True)
        loss = tf.reduce_sum(tf.cast(out["sequence_output"], tf.float32) ** 2)
    grads = tape.gradient(loss, mixed.trainable_weights)
    assert out["sequence_output"].dtype == tf.bfloat16
    assert all(g is not None and np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)
    np.testing.assert_allclose(tf.cast(mixed(inputs)["sequence_output"], tf.float32).numpy(),
                               backbone(inputs)["sequence_output"].numpy(), atol=0.05)


def test_backbone_empty_batch_and_empty_sequences(converted):
    _, backbone = converted
    C = OPTIONS["char_cnn"]["max_characters_per_token"]
    spec = {"char_ids": tf.TensorSpec([None, None, C], tf.int32), "padding_mask": tf.TensorSpec([None, None], tf.int32)}
    graph = tf.function(lambda x: backbone(x)["layers"], input_signature=[spec])  # as an export traces it
    for batch, length in ((0, 0), (0, 3), (2, 0)):
        inputs = {"char_ids": tf.zeros([batch, length, C], tf.int32), "padding_mask": tf.zeros([batch, length], tf.int32)}
        for layers in (backbone(inputs)["layers"], graph(inputs)):
            assert [tuple(x.shape) for x in layers] == [(batch, length, 12)] * 4


def test_stateful_backbone_carries_state(converted):
    weights, backbone = converted
    stateful = ElmoBackbone(**_config().to_dict(), stateful=True, batch_size=4)
    stateful.build()
    load_bilm_tf_weights(stateful, weights)
    C = OPTIONS["char_cnn"]["max_characters_per_token"]
    batches = [_char_ids(SENTENCES, C), _char_ids(["one two", "three", "four five six"], C)]
    states = None
    for ids, mask in batches:
        out = stateful({"char_ids": ids, "padding_mask": mask})
        _, forward, backward, states = ref.bilm(weights, OPTIONS, ids, states)
        np.testing.assert_allclose(out["forward_layers"][-1].numpy(), forward[-1], atol=1e-5)
        np.testing.assert_allclose(out["backward_layers"][-1].numpy(), backward[-1], atol=1e-5)
    c_state = stateful.state_variables["forward"][0][0].numpy()
    assert np.all(c_state[3] == 0) and np.any(c_state[:3] != 0), "rows beyond the batch must stay untouched"
    stateful.reset_states()
    ids, mask = batches[0]
    harness.assert_same_outputs(stateful({"char_ids": ids, "padding_mask": mask}),
                                backbone({"char_ids": ids, "padding_mask": mask}), atol=1e-6, what="after reset")
    assert stateful.get_config()["stateful"] and "stateful" not in backbone.get_config()
    with pytest.raises(ValueError, match="batch_size"):
        ElmoBackbone(**_config().to_dict(), stateful=True)


def test_backbone_dropout_and_contract(converted, tmp_path):
    _, backbone = converted
    ids, mask = _char_ids(SENTENCES, OPTIONS["char_cnn"]["max_characters_per_token"])
    inputs = {"char_ids": ids, "padding_mask": mask}
    first = backbone(inputs, training=True)["sequence_output"].numpy()
    assert not np.allclose(first, backbone(inputs, training=True)["sequence_output"].numpy()), "no dropout in training"
    assert np.all(first[~mask.astype(bool)] == 0)
    assert backbone.config == _config()
    harness.check_layer_contract(backbone, inputs, atol=1e-6, tmp_dir=str(tmp_path))


def test_presets():
    assert PRESETS["original"].num_filters == 2048 and PRESETS["original"].lstm_dim == 4096
    assert PRESETS["small"].projection_dim == 128 and PRESETS["small"].num_highway == 1
    assert PRESETS["medium"].lstm_dim == 2048 and PRESETS["medium"].projection_dim == 256
    assert ElmoConfig.from_dict({"filters": [[1, 4], [2, 8]]}).filters == ((1, 4), (2, 8))
