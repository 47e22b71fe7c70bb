"""The native training kernels (zoo/kernels/layer_ops.cc, chosen by zoo/layers/tiers.py) equal the XLA islands: the same dropout masks bit for bit, the same float32 maths within rounding; they reject bad inputs with
a clear error, and they stay out of XLA compilations and inference graphs."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import kernels
from zoo.layers import Dropout, activations, dropout, native, normalization, softmax


@pytest.fixture(scope="module")
def library():
    if shutil.which("g++") is None:
        pytest.skip("no g++ on this machine: zoo/kernels/layer_ops.cc cannot build")
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible: the native CPU kernels stand aside (zoo/layers/tiers.py)")
    lib = kernels.load("layer_ops")
    assert lib is not None, "g++ is here but zoo/kernels/layer_ops.cc did not build (see the log)"
    return lib


@pytest.fixture(autouse=True)
def _native_kernels_on(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "native")  # whatever the caller's environment says; tests may override


DTYPES = [(tf.float32, 2e-6), (tf.bfloat16, 1.6e-2)]


def _close(got, want, tol):
    np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), tf.cast(want, tf.float64).numpy(), rtol=tol, atol=tol)


def _normal(shape, seed, dtype=tf.float32, scale=1.0):
    return tf.cast(tf.random.stateless_normal(shape, seed=[seed, 7]) * scale, dtype)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_layer_norm_kernels_equal_the_islands(library, dtype, tol):
    x = _normal([3, 7, 37], 1, dtype, 3.0) + tf.cast(1.5, dtype)  # 37: not a multiple of the 16 vector lanes
    gamma, beta, dy = _normal([37], 2) + 1, _normal([37], 3), _normal([3, 7, 37], 4, dtype)
    y, mean, inv_std = library.zoo_layer_norm(x, gamma, beta, epsilon=1e-5)
    want_y, want_mean, want_inv = normalization._forward_xla(x, gamma, beta, tf.constant(1e-5))
    assert y.dtype == dtype and mean.shape == [3, 7, 1] and inv_std.shape == [3, 7, 1]
    _close(y, want_y, tol)
    _close(mean, want_mean, 1e-6)
    _close(inv_std, want_inv, 1e-6)
    dx, dgamma, dbeta = library.zoo_layer_norm_grad(x, mean, inv_std, gamma, dy)
    want_dx, dy_x_hat = normalization._backward_xla(x, mean, inv_std, gamma, dy)
    _close(dx, want_dx, 2 * tol)
    # The kernel sums float32 products; the island's products were rounded to x's dtype first.
    x_hat = (tf.cast(x, tf.float32) - mean) * inv_std
    _close(dgamma, tf.reduce_sum(tf.cast(dy, tf.float32) * x_hat, axis=[0, 1]), 1e-5)
    _close(dbeta, tf.reduce_sum(tf.cast(dy, tf.float32), axis=[0, 1]), 1e-5)
    _close(tf.reduce_sum(tf.cast(dy_x_hat, tf.float32), axis=[0, 1]), dgamma, 21 * tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_bias_gelu_kernels_equal_the_islands(library, dtype, tol):
    x = tf.cast(tf.reshape(tf.linspace(-9.0, 9.0, 5 * 45), [5, 45]), dtype)  # both tails, where erf / erfc matter
    bias, dy = _normal([45], 5, scale=0.5), _normal([5, 45], 6, dtype)
    _close(library.zoo_bias_gelu(x, bias), activations._gelu_forward_xla(x, bias), tol)
    dx, dbias = library.zoo_bias_gelu_grad(x, bias, dy)
    want_dx = activations._gelu_backward_xla(x, bias, dy)
    _close(dx, want_dx, tol)
    _close(dbias, tf.reduce_sum(tf.cast(want_dx, tf.float32), axis=0), 5 * tol)  # sums of 5 rounded rows


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
@pytest.mark.parametrize("threshold", [6554, 32768, 0])
def test_dropout_kernel_draws_the_islands_mask_bit_for_bit(library, dtype, threshold):
    x = _normal([3, 5, 37], 8, dtype)
    seed = tf.constant([123456, -7], tf.int32)  # negative words too: the hash reads them as uint32
    got = library.zoo_dropout(x, seed, threshold=threshold)
    want = dropout._apply_keep_scale(x, seed, threshold) if threshold else x
    np.testing.assert_array_equal(tf.bitcast(got, tf.uint16 if dtype == tf.bfloat16 else tf.uint32).numpy(),
                                  tf.bitcast(want, tf.uint16 if dtype == tf.bfloat16 else tf.uint32).numpy())


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("bias_shape", [[2, 1, 1, 37], [1, 1, 5, 37], [2, 1, 5, 37], [37], []],
                         ids=["padding", "causal", "per_query", "keys_only", "scalar"])
@pytest.mark.parametrize("threshold", [0, 6554])
def test_attention_softmax_kernels_equal_the_islands(library, dtype, tol, bias_shape, threshold):
    scores = _normal([2, 3, 5, 37], 9, dtype, 4.0)
    bias = tf.where(_normal(bias_shape, 10) > 0.8, -1e9, 0.0)
    seed, dy = tf.constant([5, 6], tf.int32), _normal([2, 3, 5, 37], 11, dtype)
    scale = 0.37
    probs, p = library.zoo_attention_softmax(scores, bias, seed, threshold=threshold, scale=scale)
    want_probs, want_p = softmax._forward_xla(scores, bias, seed, threshold, dtype, tf.constant(scale))
    assert probs.dtype == dtype and p.dtype == tf.float32
    _close(p, want_p, 1e-6)
    _close(probs, want_probs, tol)
    np.testing.assert_array_equal(probs.numpy() == 0, want_probs.numpy() == 0)  # the same dropped and masked keys
    _close(library.zoo_attention_softmax_grad(p, dy, seed, threshold=threshold, scale=scale),
           softmax._backward_xla(want_p, seed, threshold, dy, tf.constant(scale)), 4 * tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("threshold", [0, 6554])
def test_fused_dropout_add_layer_norm_equals_its_three_ops(library, dtype, tol, threshold):
    h, x = _normal([4, 6, 37], 12, dtype, 2.0), _normal([4, 6, 37], 13, dtype)
    gamma, beta, seed = _normal([37], 14) + 1, _normal([37], 15), tf.constant([9, -3], tf.int32)
    y, total, mean, inv_std = library.zoo_dropout_add_layer_norm(h, x, gamma, beta, seed, threshold=threshold,
                                                                  epsilon=1e-12)
    want_total = x + (dropout._apply_keep_scale(h, seed, threshold) if threshold else h)
    np.testing.assert_array_equal(total.numpy(), want_total.numpy())  # each step rounded to dtype, as the ops
    want_y, want_mean, want_inv = library.zoo_layer_norm(want_total, gamma, beta, epsilon=1e-12)
    np.testing.assert_array_equal(y.numpy(), want_y.numpy())
    np.testing.assert_array_equal(mean.numpy(), want_mean.numpy())
    np.testing.assert_array_equal(inv_std.numpy(), want_inv.numpy())
    _close(y, normalization._forward_xla(want_total, gamma, beta, tf.constant(1e-12))[0], tol)


def test_kernels_equal_the_islands_at_sizes_that_use_every_thread(library):
    """Work big enough for the thread pool to split (the shapes above stay on one thread), dropout chunks that
    do not end on a 1,024-element boundary, and row blocks of the column sums."""
    seed = tf.constant([77, 78], tf.int32)
    x = _normal([509, 768], 22, tf.bfloat16)  # 390,912 elements: 381.75 dropout chunks
    np.testing.assert_array_equal(library.zoo_dropout(x, seed, threshold=6554).numpy(),
                                  dropout._apply_keep_scale(x, seed, 6554).numpy())
    gamma, beta = _normal([768], 23) + 1, _normal([768], 24)
    y, mean, inv_std = library.zoo_layer_norm(x, gamma, beta, epsilon=1e-12)
    _close(y, normalization._forward_xla(x, gamma, beta, tf.constant(1e-12))[0], 1.6e-2)
    dy = _normal([509, 768], 25, tf.bfloat16)
    dx, dgamma, _ = library.zoo_layer_norm_grad(x, mean, inv_std, gamma, dy)
    _close(dx, normalization._backward_xla(x, mean, inv_std, gamma, dy)[0], 3.2e-2)
    x_hat = (tf.cast(x, tf.float32) - mean) * inv_std
    _close(dgamma, tf.reduce_sum(tf.cast(dy, tf.float32) * x_hat, axis=0), 1e-3)
    wide, bias = _normal([131, 3072], 26, tf.bfloat16), _normal([3072], 27)
    wide_dy = _normal([131, 3072], 28, tf.bfloat16)
    _close(library.zoo_bias_gelu(wide, bias), activations._gelu_forward_xla(wide, bias), 1.6e-2)
    got_dx, got_dbias = library.zoo_bias_gelu_grad(wide, bias, wide_dy)
    want_dx = activations._gelu_backward_xla(wide, bias, wide_dy)
    _close(got_dx, want_dx, 1.6e-2)
    _close(got_dbias, tf.reduce_sum(tf.cast(want_dx, tf.float32), axis=0), 1e-3)
    scores = _normal([3, 4, 128, 128], 29, tf.bfloat16, 4.0)
    mask = tf.where(_normal([3, 1, 1, 128], 30) > 1.0, -1e9, 0.0)
    probs, p = library.zoo_attention_softmax(scores, mask, seed, threshold=6554, scale=0.125)
    want_probs, want_p = softmax._forward_xla(scores, mask, seed, 6554, tf.bfloat16, tf.constant(0.125))
    _close(p, want_p, 1e-6)
    np.testing.assert_array_equal(probs.numpy() == 0, want_probs.numpy() == 0)


def test_registered_gradients_differentiate_the_linear_kernels_and_name_the_way_out_for_the_others(library):
    """What a tape around the raw ops (higher-order gradients through the layers' custom gradients) sees."""
    x = tf.random.stateless_normal([4, 8], seed=[1, 3])
    seed, dy = tf.constant([5, 9], tf.int32), tf.random.stateless_normal([4, 8], seed=[2, 3])
    bias = tf.random.stateless_normal([8], seed=[3, 3])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, bias])
        dropped = library.zoo_dropout(x, seed, threshold=32768)
        shifted = library.zoo_bias_add(x, bias)
        normalized = library.zoo_layer_norm(x, tf.ones([8]), tf.zeros([8]), epsilon=1e-5)[0]
    np.testing.assert_array_equal(tape.gradient(dropped, x, output_gradients=dy).numpy(),
                                  library.zoo_dropout(dy, seed, threshold=32768).numpy())  # the same mask
    dx, dbias = tape.gradient(shifted, [x, bias], output_gradients=dy)
    np.testing.assert_array_equal(dx.numpy(), dy.numpy())
    _close(dbias, tf.reduce_sum(dy, axis=0), 1e-6)
    with pytest.raises(NotImplementedError, match="ZOO_KERNELS=xla"):
        tape.gradient(normalized, x)


def test_kernels_reject_bad_inputs_with_a_clear_message(library):
    x = tf.ones([4, 8])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"gamma must be \[H\]"):
        library.zoo_layer_norm(x, tf.ones([7]), tf.zeros([8]), epsilon=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not broadcast"):
        library.zoo_attention_softmax(tf.ones([1, 2, 3, 4]), tf.zeros([1, 1, 2, 4]), tf.constant([1, 2]), threshold=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed must be int32 \[2\]"):
        library.zoo_dropout(x, tf.constant([1, 2, 3]), threshold=100)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"threshold must be in \[0, 65536\)"):
        library.zoo_dropout(x, tf.constant([1, 2]), threshold=70000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="dy must have x's shape"):
        library.zoo_bias_gelu_grad(x, tf.zeros([8]), tf.ones([4, 9]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"mean / inv_std \[\.\.\., 1\]"):
        library.zoo_layer_norm_grad(x, tf.zeros([4, 2]), tf.zeros([4, 2]), tf.ones([8]), x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="p and dy must have one shape"):
        library.zoo_attention_softmax_grad(tf.ones([1, 2, 3, 4]), tf.ones([1, 2, 3, 5]), tf.constant([1, 2]), threshold=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="h and x must have one shape"):
        library.zoo_dropout_add_layer_norm(tf.ones([4, 7]), x, tf.ones([8]), tf.zeros([8]), tf.constant([1, 2]),
                                           threshold=0, epsilon=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bias must be \[H\]"):
        library.zoo_bias_add(x, tf.zeros([9]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty last axis"):
        library.zoo_layer_norm(tf.ones([5, 0]), tf.ones([0]), tf.zeros([0]), epsilon=1e-5)


def test_kernels_accept_empty_batches(library):
    empty = tf.zeros([0, 8])
    y, mean, _ = library.zoo_layer_norm(empty, tf.ones([8]), tf.zeros([8]), epsilon=1e-5)
    assert y.shape == [0, 8] and mean.shape == [0, 1]
    _, dgamma, dbeta = library.zoo_layer_norm_grad(empty, mean, mean, tf.ones([8]), empty)
    assert (dgamma.numpy() == 0).all() and (dbeta.numpy() == 0).all()
    dx, dbias = library.zoo_bias_gelu_grad(empty, tf.zeros([8]), empty)
    assert dx.shape == [0, 8] and (dbias.numpy() == 0).all()
    assert library.zoo_attention_softmax(tf.zeros([0, 2, 3, 4]), tf.zeros([4]), tf.constant([1, 2]),
                                         threshold=100)[0].shape == [0, 2, 3, 4]


def _block_step(block, x):
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(block(x, training=True)))
        return loss, tape.gradient(loss, block.trainable_variables)
    return step


def test_transformer_block_runs_the_native_kernels_in_training_only_and_never_under_xla(library):
    from zoo.layers import TransformerBlock

    block = TransformerBlock(num_heads=2, hidden_dim=8, intermediate_dim=16, dropout=0.1)
    x = tf.random.normal([2, 4, 8])
    block(x)
    graph = tf.function(_block_step(block, x)).get_concrete_function(x).graph
    ops = [op.type for op in graph.get_operations()]
    for fn in graph._functions.values():  # noqa: SLF001 (custom gradients live in nested functions)
        ops += [node.op for node in fn.definition.node_def]
    # Both residual connections are one fused forward op each; their backward is the layer norm's gradient and
    # the dropout mask on the branch's share. The attention dropout is inside the softmax kernels. The qkv,
    # attention output and feed-forward output biases are ZooBiasAdd (the intermediate one is inside the GELU).
    for op, count in {"ZooDropoutAddLayerNorm": 2, "ZooLayerNorm": 0, "ZooLayerNormGrad": 2, "ZooBiasGelu": 1,
                      "ZooBiasGeluGrad": 1, "ZooDropout": 2, "ZooAttentionSoftmax": 1,
                      "ZooAttentionSoftmaxGrad": 1, "ZooBiasAdd": 3}.items():
        assert ops.count(op) == count, (op, sorted(set(o for o in ops if o.startswith("Zoo"))))
    inference = tf.function(lambda t: block(t, training=False)).get_concrete_function(x).graph
    inference_ops = [op.type for op in inference.get_operations()]
    for fn in inference._functions.values():  # noqa: SLF001
        inference_ops += [node.op for node in fn.definition.node_def]
    assert not [op for op in inference_ops if op.startswith("Zoo")]
    # Inside an XLA compilation (jit_compile, TPUs) the islands' / plain ops run: XLA has no kernel for Zoo* ops.
    loss, grads = tf.function(_block_step(block, x), jit_compile=True)(x)
    assert np.isfinite(float(loss)) and all(g is not None for g in grads)

    @tf.function(jit_compile=True)
    def probe():
        return tf.constant(native.layer_ops(tf.float32) is None)

    assert bool(probe())
    assert native.layer_ops(tf.float16) is None and native.layer_ops(tf.float32) is not None


@pytest.mark.parametrize("policy,tol", [("float32", 1e-5), ("mixed_bfloat16", 5e-2)])
def test_training_steps_match_between_native_kernels_and_islands(library, monkeypatch, policy, tol):
    """Three SGD steps of a Transformer block with dropout: the same masks, so the same losses and weights."""
    from zoo.layers import TransformerBlock

    keras.mixed_precision.set_global_policy(policy)
    try:
        results = []
        for tier in ("native", "xla"):
            monkeypatch.setenv("ZOO_KERNELS", tier)
            keras.utils.set_random_seed(4)
            block = TransformerBlock(num_heads=2, hidden_dim=32, intermediate_dim=64, dropout=0.2)
            x = tf.random.stateless_normal([3, 9, 32], seed=[1, 2])
            block(x)
            step = tf.function(_block_step(block, x))
            losses = []
            for _ in range(3):
                loss, grads = step(x)
                losses.append(float(loss))
                for v, g in zip(block.trainable_variables, grads):
                    v.assign_sub(1e-3 * tf.cast(g, v.dtype))
            results.append((losses, [v.numpy() for v in block.trainable_variables]))
            ops = [op.type for op in step.get_concrete_function(x).graph.get_operations()]
            assert ("ZooDropoutAddLayerNorm" in ops) == (tier == "native")
        (native_losses, native_weights), (island_losses, island_weights) = results
        np.testing.assert_allclose(native_losses, island_losses, rtol=tol)
        for a, b in zip(native_weights, island_weights):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_bias_add_kernel_equals_the_island_and_sums_its_gradient_in_float32(library, monkeypatch, dtype, tol):
    from zoo.layers.dense import bias_add_for_training

    x, bias, dy = _normal([3, 4, 37], 19, dtype), _normal([37], 20), _normal([3, 4, 37], 21, dtype)
    results = []
    for tier in ("native", "xla"):
        monkeypatch.setenv("ZOO_KERNELS", tier)
        cast_bias = tf.cast(bias, dtype)
        with tf.GradientTape() as tape:
            tape.watch([x, cast_bias])
            y = bias_add_for_training(x, cast_bias)
        results.append([y, *tape.gradient(y, [x, cast_bias], output_gradients=dy)])
    for got, want in zip(*results):
        assert got.dtype == want.dtype
        _close(got, want, tol)
    _close(results[0][2], tf.reduce_sum(tf.cast(dy, tf.float32), axis=[0, 1]), 12 * tol)
