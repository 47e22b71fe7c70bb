"""ZOO_KERNELS picks the tier of zoo/layers' training kernels (zoo/layers/tiers.py), and every op computes the same
in every tier: the native kernels and the XLA islands against the plain TF ops, float32 and bfloat16, forward and
backward, with the same dropout masks bit for bit."""

import logging
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import kernels
from zoo.layers import Dropout, TransformerBlock, tiers
from zoo.layers.activations import gelu_for_training, gelu_tanh_for_training
from zoo.layers.dense import bias_add_for_training
from zoo.layers.normalization import dropout_add_layer_norm, layer_norm_for_training
from zoo.layers.softmax import attention_softmax_for_training


def _native_or_skip():
    if shutil.which("g++") is None:
        pytest.skip("no g++ on this machine: zoo/kernels/layer_ops.cc cannot build")
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible: the native CPU kernels stand aside")
    assert kernels.load("layer_ops") is not None, "g++ is here but zoo/kernels/layer_ops.cc did not build (see the log)"


@pytest.fixture(params=["native", "xla", "plain"])
def tier(request, monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", request.param)
    if request.param == "native":
        _native_or_skip()
    return request.param


def _normal(shape, seed, dtype=tf.float32, scale=1.0):
    return tf.cast(tf.random.stateless_normal(shape, seed=[seed, 11]) * scale, dtype)


def _with_gradients(fn, inputs, dy):
    """fn(*inputs) and the gradients of sum(fn * dy) with respect to every input, as float64 numpy arrays."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
    grads = tape.gradient(y, inputs, output_gradients=tf.cast(dy, y.dtype))
    return [y.dtype] + [tf.cast(t, tf.float64).numpy() for t in (y, *grads)]


SEED = tf.constant([123456, -7], tf.int32)  # a negative word too: the hash reads the words as uint32
T = 6554  # Dropout(0.1).threshold


def _layer_norm(dtype):
    x = _normal([3, 7, 37], 1, dtype, 3.0) + tf.cast(1.5, dtype)  # 37: not a multiple of the vector lanes
    inputs = [x, _normal([37], 2) + 1, _normal([37], 3)]
    return lambda x, g, b: layer_norm_for_training(x, g, b, 1e-5), inputs, _normal([3, 7, 37], 4, dtype)


def _dropout_add_layer_norm(dtype):
    inputs = [_normal([4, 6, 37], 5, dtype, 2.0), _normal([4, 6, 37], 6, dtype), _normal([37], 7) + 1, _normal([37], 8)]

    def fn(branch, x, gamma, beta):
        return dropout_add_layer_norm(branch, x, gamma, beta, seed=SEED, threshold=T, epsilon=1e-12)

    return fn, inputs, _normal([4, 6, 37], 9, dtype)


def _bias_gelu(dtype):
    x = tf.cast(tf.reshape(tf.linspace(-9.0, 9.0, 5 * 45), [5, 45]), dtype)  # both tails, where erf / erfc matter
    return gelu_for_training, [x, _normal([45], 10, scale=0.5)], _normal([5, 45], 11, dtype)


def _bias_gelu_tanh(dtype):
    x = tf.cast(tf.reshape(tf.linspace(-9.0, 9.0, 5 * 45), [5, 45]), dtype)
    return gelu_tanh_for_training, [x, _normal([45], 10, scale=0.5)], _normal([5, 45], 11, dtype)


def _gelu_without_bias(dtype):
    return gelu_for_training, [tf.cast(tf.linspace(-7.0, 7.0, 301), dtype)], _normal([301], 12, dtype)


def _bias_add(dtype):
    return bias_add_for_training, [_normal([3, 4, 37], 13, dtype), _normal([37], 14, dtype)], _normal([3, 4, 37], 15, dtype)


def _dropout(dtype):
    layer = Dropout(0.3, seed=5, dtype=keras.DTypePolicy(dtype.name))  # a fresh layer per tier: the same seeds
    return lambda x: layer(x, training=True), [_normal([3, 5, 37], 16, dtype)], _normal([3, 5, 37], 17, dtype)


def _attention_softmax(dtype):
    bias = tf.where(_normal([2, 1, 1, 37], 18) > 0.8, -1e9, 0.0)  # padded keys

    def fn(scores):
        return attention_softmax_for_training(scores, bias, SEED, T, scale=0.37)

    return fn, [_normal([2, 3, 5, 37], 19, dtype, 4.0)], _normal([2, 3, 5, 37], 20, dtype)


OPS = {"layer_norm": _layer_norm, "dropout_add_layer_norm": _dropout_add_layer_norm, "bias_gelu": _bias_gelu,
       "bias_gelu_tanh": _bias_gelu_tanh, "gelu_without_bias": _gelu_without_bias, "bias_add": _bias_add, "dropout": _dropout,
       "attention_softmax": _attention_softmax}
DROPOUT_OPS = ("dropout_add_layer_norm", "dropout", "attention_softmax")  # outputs or gradients zero where dropped
TOLERANCES = {tf.float32: 1e-5, tf.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("op", list(OPS))
def test_every_op_in_every_tier_equals_the_plain_tier(op, dtype, tier, monkeypatch):
    fn, inputs, dy = OPS[op](dtype)
    got = _with_gradients(fn, inputs, dy)
    monkeypatch.setenv("ZOO_KERNELS", "plain")
    fn, inputs, dy = OPS[op](dtype)
    want = _with_gradients(fn, inputs, dy)
    assert got[0] == want[0] == dtype  # the output's dtype
    tol = TOLERANCES[dtype]
    for index, (a, b) in enumerate(zip(got[1:], want[1:])):
        assert a.shape == b.shape, (index, a.shape, b.shape)
        # Parameter gradients are column sums (rows of bf16-rounded terms): compare them relative to their largest.
        scale = np.abs(b).max() if a.ndim == 1 and b.ndim == 1 and index > 1 else 1.0
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(scale, 1.0), err_msg=f"{op} output {index}")
    if op in DROPOUT_OPS:  # the same elements dropped: the forward (or the branch's gradient) is zero at them
        checked = got[2] if op == "dropout_add_layer_norm" else got[1]
        reference = want[2] if op == "dropout_add_layer_norm" else want[1]
        np.testing.assert_array_equal(checked == 0, reference == 0)
        assert 0.05 < (reference == 0).mean() < 0.5
    if op == "dropout":  # x * mask, and dy * mask: bit for bit in every tier
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


def _op_types_and_xla_functions(graph):
    """The op types of a traced graph and of every function in its library, and whether any of those functions
    (or call ops) is marked for XLA compilation (an island)."""
    types, xla = [op.type for op in graph.get_operations()], False
    for op in graph.get_operations():
        xla |= "_XlaMustCompile" in op.node_def.attr and op.node_def.attr["_XlaMustCompile"].b
    for fn in graph._functions.values():  # noqa: SLF001 (custom gradients and islands live in nested functions)
        types += [node.op for node in fn.definition.node_def]
        xla |= "_XlaMustCompile" in fn.definition.attr and fn.definition.attr["_XlaMustCompile"].b
    return types, xla or "XlaLaunch" in types


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_zoo_kernels_selects_the_tier_of_a_transformer_training_step(tier, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        block = TransformerBlock(num_heads=2, hidden_dim=8, intermediate_dim=16, dropout=0.1)
        x = tf.random.normal([2, 4, 8])
        block(x)

        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(tf.cast(block(x, training=True), tf.float32)))
            return tape.gradient(loss, block.trainable_variables)

        types, xla = _op_types_and_xla_functions(tf.function(step).get_concrete_function(x).graph)
        native = sorted({t for t in types if t.startswith("Zoo")})
        if tier == "native":
            assert native == ["ZooAttentionSoftmax", "ZooAttentionSoftmaxGrad", "ZooBiasAdd", "ZooBiasGelu",
                              "ZooBiasGeluGrad", "ZooDropout", "ZooDropoutAddLayerNorm", "ZooLayerNormGrad"], native
        else:
            assert native == [], native
        assert xla == (tier == "xla")
        # Inference takes none of the training kernels, whatever the tier.
        types, xla = _op_types_and_xla_functions(
            tf.function(lambda t: block(t, training=False)).get_concrete_function(x).graph)
        assert not xla and not [t for t in types if t.startswith("Zoo")]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_is_native_on_a_cpu_machine_with_gplusplus_and_the_islands_inside_xla(monkeypatch):
    monkeypatch.delenv("ZOO_KERNELS", raising=False)
    _native_or_skip()
    assert kernels.setting() == "auto"
    assert tiers.select("layer_norm", tf.bfloat16) == "native"
    assert tiers.select("layer_norm", tf.float16) == "xla"  # no native float16 kernel
    assert tiers.select("attention_softmax", tf.bfloat16, native_applies=False) == "xla"

    @tf.function(jit_compile=True)
    def probe():
        return tf.constant(tiers.select("layer_norm", tf.float32) == "xla")

    assert bool(probe())


@pytest.mark.parametrize("value", ["", "AUTO", " native ", "xla", "plain"])
def test_zoo_kernels_accepts_its_values_in_any_case(monkeypatch, value):
    monkeypatch.setenv("ZOO_KERNELS", value)
    assert kernels.setting() == (value.strip().lower() or "auto")


@pytest.mark.parametrize("value", ["1", "0", "islands", "native,xla"])
def test_a_bad_zoo_kernels_value_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("ZOO_KERNELS", value)
    with pytest.raises(ValueError, match="ZOO_KERNELS=.*expected one of auto, native, xla, plain"):
        tiers.select("layer_norm", tf.float32)
    with pytest.raises(ValueError, match="expected one of auto, native, xla, plain"):
        layer_norm_for_training(tf.ones([2, 4]), tf.ones([4]), tf.zeros([4]), 1e-5)


def test_native_and_the_fused_adamw_kernel_stay_unloaded_in_the_xla_and_plain_tiers(monkeypatch):
    for value in ("xla", "plain"):
        monkeypatch.setenv("ZOO_KERNELS", value)
        assert not kernels.enabled() and kernels.load("layer_ops") is None and kernels.load("fused_adamw") is None
        assert tiers.select("layer_norm", tf.float32) == value


def test_forced_native_falls_back_to_the_islands_with_one_warning_where_it_cannot_run(monkeypatch, caplog):
    monkeypatch.setenv("ZOO_KERNELS", "native")
    monkeypatch.setattr(tiers, "_warned", set())
    x = tf.random.normal([4, 8])
    with caplog.at_level(logging.WARNING):
        # Inside an XLA compilation (traced for two shapes: two traces, one warning).
        f = tf.function(lambda t: layer_norm_for_training(t, tf.ones([8]), tf.zeros([8]), 1e-5), jit_compile=True)
        np.testing.assert_allclose(f(x).numpy(), f(tf.concat([x, x], 0)).numpy()[:4], rtol=1e-5, atol=1e-5)
        # Where the library is missing (no g++): the islands, one more warning for that reason.
        monkeypatch.setattr(tiers, "native_library", lambda: None)
        for _ in range(2):
            assert tiers.select("dropout", tf.float32) == "xla"
        y = Dropout(0.5, seed=1)(x, training=True)
    warnings = [r.getMessage() for r in caplog.records if "ZOO_KERNELS=native" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "inside an XLA compilation" in warnings[0] and "did not build" in warnings[1]
    assert y.shape == x.shape


@pytest.mark.parametrize("approximate", [False, True], ids=["erf", "tanh"])
def test_plain_gelu_forms_equal_tensorflow_and_autodiff(approximate):
    """The plain tier (the reference of the others) against tf.nn.gelu and its autodiff gradient, in float64
    terms: the hand-written gradients are the maths, not a copy of the forward."""
    fn = gelu_tanh_for_training if approximate else gelu_for_training
    x = tf.reshape(tf.linspace(-8.0, 8.0, 4 * 50), [4, 50])
    bias = _normal([50], 3, scale=0.5)
    dy = _normal([4, 50], 4)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, bias])
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ZOO_KERNELS", "plain")
            got = fn(x, bias)
        want = tf.nn.gelu(x + bias, approximate=approximate)
    np.testing.assert_allclose(got, want, atol=2e-6)
    for g, w in zip(tape.gradient(got, [x, bias], output_gradients=dy), tape.gradient(want, [x, bias], output_gradients=dy)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
