"""The hand-fused pieces equal what they replace: GELU and its gradient, 16-bit dropout, the vocabulary softmax
cross-entropy with hits, fused AdamW."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import optim
from zoo.layers import Dropout, gelu, softmax_cross_entropy_with_hits
from zoo.layers.activations import gelu_for_training


@pytest.mark.parametrize("fn", [gelu, gelu_for_training], ids=["gelu", "gelu_for_training"])
@pytest.mark.parametrize("dtype, tol", [("float32", 2e-7), ("bfloat16", 1.6e-2)])
def test_gelu_and_its_gradient_equal_autodiff_of_the_erf_formula(fn, dtype, tol, training_kernels):
    x = tf.cast(tf.linspace(-8.0, 8.0, 4001), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, reference = fn(x), tf.nn.gelu(x, approximate=False)
    for a, b in ((ours, reference), (tape.gradient(ours, x), tape.gradient(reference, x))):
        assert a.dtype == x.dtype
        np.testing.assert_allclose(tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("bfloat16", 1.6e-2)])
def test_gelu_with_bias_and_its_gradients_equal_autodiff_of_gelu_of_the_sum(dtype, tol, training_kernels):
    x = tf.cast(tf.reshape(tf.linspace(-6.0, 6.0, 64 * 33), [64, 33]), dtype)
    bias = tf.random.stateless_normal([33], seed=[4, 2])  # float32, as the layer's variable
    dy = tf.random.stateless_normal([64, 33], seed=[1, 9])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, bias])
        ours = gelu_for_training(x, bias)
        reference = tf.nn.gelu(tf.cast(x, tf.float32) + bias, approximate=False)
    assert ours.dtype == x.dtype
    got = tape.gradient(ours, [x, bias], output_gradients=tf.cast(dy, ours.dtype))
    want = tape.gradient(reference, [x, bias], output_gradients=dy)
    assert got[1].dtype == tf.float32 and got[0].dtype == x.dtype
    for a, b in ((ours, reference), (got[0], want[0])):
        np.testing.assert_allclose(tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy(), atol=tol, rtol=tol)
    # The bias gradient sums 64 bf16-rounded rows: scale the tolerance with the sum of magnitudes.
    scale = np.abs(tf.cast(want[0], tf.float32).numpy()).sum(axis=0)
    assert (np.abs(got[1].numpy() - want[1].numpy()) <= tol * scale + 1e-5).all()


def _spy_on_form(monkeypatch, op, calls, label, tier="xla", record=lambda *inputs: None):
    """Replaces `op`'s form in `tier` (zoo.layers.tiers.TieredOp.forms) by one that appends (label, record(inputs))
    to calls, then runs the original."""
    from zoo.layers import tiers

    form = op.forms[tier]

    def forward(*inputs, **attrs):
        calls.append((label, record(*inputs)))
        return form.forward(*inputs, **attrs)

    monkeypatch.setitem(op.forms, tier, tiers.Form(forward, form.backward, form.prepare))


def test_dense_training_forward_is_a_plain_matmul_then_the_bias_island(monkeypatch):
    """The bias add must not sit next to the MatMul in TF's graph: grappler would fuse the two into oneDNN's
    non-AMX inner_product kernel (zoo/layers/dense.py). The island tier adds the bias in an island instead (the
    native tier in a graph op of its own: tests/test_layers_native.py)."""
    from zoo.layers import TransformerBlock, activations, dense

    monkeypatch.setenv("ZOO_KERNELS", "xla")

    calls = []
    _spy_on_form(monkeypatch, dense.bias_add, calls, "bias")
    layer = dense.Dense(5)
    x = tf.random.normal([3, 4])
    layer(x)
    layer.bias.assign(tf.range(5, dtype=tf.float32))
    np.testing.assert_allclose(layer(x, training=True).numpy(), layer(x).numpy(), rtol=1e-6, atol=1e-6)
    assert calls == [("bias", None)]
    graph = tf.function(lambda t: layer(t, training=True)).get_concrete_function(x).graph
    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    assert matmuls and all(c.type not in ("BiasAdd", "AddV2") for op in matmuls for c in op.outputs[0].consumers())
    _spy_on_form(monkeypatch, activations.bias_gelu, calls, "gelu", record=lambda x, bias=None: bias.shape)
    block = TransformerBlock(num_heads=2, hidden_dim=8, intermediate_dim=16, dropout=0.0)
    y = tf.random.normal([2, 4, 8])
    block(y)
    block.intermediate.bias.assign(tf.random.normal([16]))
    calls.clear()
    np.testing.assert_allclose(block(y, training=True).numpy(), block(y).numpy(), rtol=1e-5, atol=1e-5)
    # qkv, attention output and ffn_output through the bias island; the intermediate bias inside the GELU island.
    assert sorted(calls, key=str) == [("bias", None)] * 3 + [("gelu", tf.TensorShape([16]))]


def test_dropout_keeps_one_minus_rate_and_preserves_the_mean(training_kernels):
    layer = Dropout(0.1, seed=3)
    x = tf.ones([200, 1001])
    first, second = layer(x, training=True).numpy(), layer(x, training=True).numpy()
    kept = first > 0
    assert abs(kept.mean() - 0.9) < 0.003
    np.testing.assert_allclose(first[kept], 65536 / (65536 - round(0.1 * 65536)), rtol=1e-6)
    assert abs(first.mean() - 1.0) < 0.005
    assert (kept != (second > 0)).mean() > 0.1  # a new mask every call
    assert (layer(x, training=False).numpy() == 1).all() and (Dropout(0.0)(x, training=True).numpy() == 1).all()
    again = Dropout(0.1, seed=3)
    assert (again(x, training=True).numpy() == first).all()  # the seed makes it reproducible
    assert [v.path.split("/")[-1] for v in layer.non_trainable_variables] == ["seed_generator_state"]  # checkpointed
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_dropout_hash_masks_are_uncorrelated_across_neighbours_steps_and_layers():
    """The keyed-hash mask behaves like independent draws: keep rate, lag-1 neighbours along both axes, the next
    step of the same layer, and layers whose seeds differ in one word (as Keras' generators advance)."""
    from zoo.layers.dropout import keep_scale

    shape, threshold = [512, 768], 32768  # rate 0.5: the largest variance, the clearest correlations
    masks = {seed: (keep_scale(tf.constant(shape), tf.constant(seed, tf.int32), threshold, tf.float32).numpy() > 0)
             for seed in ((7, 0), (7, 1), (8, 0), (0, 0), (1, 0), (0, 1))}
    n = np.prod(shape)
    bound = 5 / np.sqrt(n)  # 5 standard deviations of the correlation of independent fair coins

    def corr(a, b):
        return np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1]

    for seed, m in masks.items():
        assert abs(m.mean() - 0.5) < 5 * 0.5 / np.sqrt(n), seed
        assert abs(corr(m[:, 1:], m[:, :-1])) < bound and abs(corr(m[1:], m[:-1])) < bound, seed
    seeds = list(masks)
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            assert abs(corr(masks[a], masks[b])) < bound, (a, b)
            # Not a shifted copy either: the best agreement over small shifts stays at chance.
            flat_a, flat_b = masks[a].ravel(), masks[b].ravel()
            assert max((flat_a[s:] == flat_b[:n - s]).mean() for s in range(64)) < 0.5 + 5 * 0.5 / np.sqrt(n - 64)


def test_dropout_mask_in_bfloat16_keeps_static_shape(training_kernels):
    layer = Dropout(0.1, seed=5, dtype="mixed_bfloat16")  # as under the mixed_bfloat16 policy
    x = tf.ones([64, 1, 513], tf.bfloat16)
    y = tf.function(lambda t: layer(t, training=True))(x)
    assert y.dtype == tf.bfloat16 and y.shape == x.shape
    kept = y.numpy().astype(np.float32) > 0
    assert abs(kept.mean() - 0.9) < 0.01
    np.testing.assert_allclose(y.numpy().astype(np.float32)[kept], float(tf.cast(65536 / (65536 - 6554), tf.bfloat16)))
    static = tf.function(lambda t: layer(t, training=True)).get_concrete_function(tf.TensorSpec([None, 1, 513], tf.bfloat16))
    assert static.output_shapes.as_list() == [None, 1, 513]


def test_dropout_gradient_is_the_mask(training_kernels):
    layer = Dropout(0.5, seed=1)
    x = tf.random.normal([8, 16, 32])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(y)
    grad = tape.gradient(total, x).numpy()
    assert set(np.unique(grad)) == {0.0, 2.0}
    assert ((grad > 0) == (y.numpy() != 0)).all()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_softmax_cross_entropy_with_hits_equals_tf_and_argmax(jit_compile):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 50)).astype(np.float32) * 3
    labels = rng.integers(0, 50, size=(3, 7)).astype(np.int32)
    logits[0, 0, labels[0, 0]] = -200.0  # the label's probability underflows: the exact log-sum-exp path
    logits[1, 2, labels[1, 2]] = 50.0  # a sure hit
    upstream = tf.constant(rng.uniform(0.5, 2.0, size=(3, 7)).astype(np.float32))

    @tf.function(jit_compile=jit_compile)
    def run(z):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            ours, hits = softmax_cross_entropy_with_hits(labels, z)
            reference = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, z)
            ours_total, reference_total = tf.reduce_sum(ours * upstream), tf.reduce_sum(reference * upstream)
        return ours, reference, hits, tape.gradient(ours_total, z), tape.gradient(reference_total, z)

    ours, reference, hits, grad, reference_grad = (t.numpy() for t in run(tf.constant(logits)))
    assert ours.shape == hits.shape == labels.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=2e-6)
    assert 150 < ours[0, 0] < 260 and ours[1, 2] < 1e-6
    np.testing.assert_array_equal(hits, (logits.argmax(-1) == labels).astype(np.float32))
    assert hits[1, 2] == 1.0 and hits[0, 0] == 0.0
    np.testing.assert_allclose(grad, reference_grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="float32 logits"):
        softmax_cross_entropy_with_hits(labels, tf.cast(logits, tf.bfloat16))


def _tied_problem(n, h=16, v=97, seed=1):
    """hidden float32 [n, h], a float32 table variable [v, h] (logits of a few nats), labels, upstream weights."""
    rng = np.random.default_rng(seed)
    hidden = tf.constant(rng.normal(size=(n, h)), tf.float32)
    table = tf.Variable(rng.normal(size=(v, h)).astype(np.float32) * 2)
    labels = tf.constant(rng.integers(0, v, size=n), tf.int32)
    upstream = tf.constant(rng.uniform(0.5, 2.0, size=n), tf.float32)
    return hidden, table, labels, upstream


def _tied_loss_and_gradients(hidden, table, labels, upstream, dtype, jit_compile=False, **options):
    """(cross-entropy, hits, d hidden, d table) of sum(ce * upstream), inputs cast to `dtype` (as mixed precision)."""
    from zoo.layers.losses import tied_softmax_cross_entropy

    @tf.function(jit_compile=jit_compile)
    def run():
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            ce, hits = tied_softmax_cross_entropy(tf.cast(hidden, dtype), tf.cast(table, dtype), labels, **options)
            total = tf.reduce_sum(ce * upstream)
        return (ce, hits, *tape.gradient(total, [hidden, table]))

    return [t.numpy() for t in run()]


def _tied_reference(hidden, table, labels, upstream, dtype):
    """float64 (cross-entropy, d hidden, d table) of the inputs rounded to `dtype`."""
    x = tf.cast(tf.cast(hidden, dtype), tf.float64).numpy()
    w = tf.cast(tf.cast(table, dtype), tf.float64).numpy()
    rows, y = np.arange(len(x)), labels.numpy()
    logits = x @ w.T
    top = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(1)) + top[:, 0]
    g = np.exp(logits - lse[:, None])
    g[rows, y] -= 1
    g *= upstream.numpy()[:, None]
    return lse - logits[rows, y], g @ w, g.T @ x


# 203 rows in chunks of 64: four chunks of 51 (one padded row), four vocabulary blocks of 25 (the last shifted back
# over 3 columns of the one before); 10 rows: fewer than one chunk, one block of all 97 columns.
@pytest.mark.parametrize("n", [203, 10])
@pytest.mark.parametrize("dtype,jit_compile", [("float32", False), ("float32", True), ("bfloat16", False),
                                               ("bfloat16", True)])
def test_chunked_tied_softmax_loss_equals_the_whole_logits_path(n, dtype, jit_compile):
    """Both paths' values and gradients (hidden and table) against each other and against float64."""
    problem = _tied_problem(n)
    whole = _tied_loss_and_gradients(*problem, dtype, jit_compile, max_logits_bytes=1 << 40)
    chunked = _tied_loss_and_gradients(*problem, dtype, jit_compile, chunk_rows=64, max_logits_bytes=0)
    reference = _tied_reference(*problem, dtype)
    assert [a.dtype for a in chunked] == [a.dtype for a in whole] == [np.float32] * 4
    # The forward is the same softmax arithmetic on the same logits: hits equal, cross-entropies to rounding.
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6, atol=1e-6)
    if dtype == "float32":
        for a, b, want, what in zip(chunked[2:], whole[2:], reference[1:], ("d hidden", "d table")):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=what)
            np.testing.assert_allclose(a, want, rtol=2e-5, atol=2e-5, err_msg=what)
    else:
        # bf16 rounds the matmuls' outputs: the chunked path rounds d hidden once per vocabulary block (summed in
        # float32), the whole path once. Neither may be further from float64 than the other allows.
        for i, (a, b, want, what) in enumerate(zip(chunked[2:], whole[2:], reference[1:], ("d hidden", "d table"))):
            scale = np.abs(want).max()
            chunked_error, whole_error = np.abs(a - want).max() / scale, np.abs(b - want).max() / scale
            assert chunked_error <= 1.5 * whole_error + 1e-3 and chunked_error < 2e-2, (what, chunked_error, whole_error)
            np.testing.assert_allclose(a, b, rtol=0.1, atol=0.05 * scale, err_msg=what)
    np.testing.assert_allclose(whole[0], reference[0], rtol=1e-4 if dtype == "float32" else 0.05, atol=1e-4)


def test_chunked_tied_loss_is_deterministic_and_takes_rows_unknown_when_traced():
    from zoo.layers.losses import tied_softmax_cross_entropy

    hidden, table, labels, upstream = _tied_problem(75, v=5000)

    @tf.function(input_signature=[tf.TensorSpec([None, 16]), tf.TensorSpec([None], tf.int32)])
    def run(x, y):  # N unknown when traced: the chunked path whatever max_logits_bytes says
        with tf.GradientTape() as tape:
            tape.watch(x)
            ce, _ = tied_softmax_cross_entropy(x, tf.convert_to_tensor(table), y, chunk_rows=16)
            total = tf.reduce_sum(ce * upstream)
        return (ce, *tape.gradient(total, [x, table]))

    first, second = ([t.numpy() for t in run(hidden, labels)] for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # bit for bit
    whole = _tied_loss_and_gradients(hidden, table, labels, upstream, "float32", max_logits_bytes=1 << 40)
    for a, b in zip(first, [whole[0], *whole[2:]]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("max_logits_bytes", [0, 1 << 40], ids=["chunked", "whole"])
def test_tied_loss_labels_out_of_range_raise(max_logits_bytes):
    from zoo.layers.losses import tied_softmax_cross_entropy

    hidden, table, _, _ = _tied_problem(7)
    for bad in ([0, 1, 97, 3, 4, 5, 6], [0, -1, 2, 3, 4, 5, 6]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="label"):
            tied_softmax_cross_entropy(hidden, tf.convert_to_tensor(table), tf.constant(bad), chunk_rows=4,
                                       max_logits_bytes=max_logits_bytes)


def test_lm_loss_memory_benchmark_runs_at_a_tiny_size(tmp_path):
    """benchmarks/lm_loss_memory.py's main at its --tiny size, its workers in this process (seconds)."""
    import json

    from benchmarks import lm_loss_memory

    out = tmp_path / "lm_loss_memory.json"
    assert lm_loss_memory.main(["--tiny", "--in_process", "--repeats=1", f"--json_out={out}"]) == 0
    data = json.loads(out.read_text())
    assert {"date", "commit", "machine", "versions", "command"} <= set(data["meta"])
    assert data["meta"]["command"].startswith("python -m benchmarks.lm_loss_memory --tiny")
    rows = data["rows"]
    assert sorted((r["precision"], r["path"]) for r in rows) == sorted(
        (p, path) for p in ("bfloat16", "float32") for path in ("whole", "chunked"))
    for row in rows:
        assert row["seconds"] > 0 and row["peak_mb"] >= 0 and np.isfinite(row["loss"]), row
        assert row["rows"] == 16 and row["time_over_whole"] > 0, row


def test_hits_break_ties_by_the_first_index_and_labels_out_of_range_raise():
    # Ties are common under mixed_bfloat16 (bf16 logits, a zero-initialised bias): only argmax's pick is a hit.
    logits = tf.constant([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, 1.0, 5.0]])
    _, hits = softmax_cross_entropy_with_hits(tf.constant([2, 0, 2]), logits)
    np.testing.assert_array_equal(hits.numpy(), [0.0, 1.0, 1.0])
    for bad in ([0, 3, 1], [0, -1, 1]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="label"):
            softmax_cross_entropy_with_hits(tf.constant(bad), logits)


@pytest.mark.parametrize("tier", ["xla", "plain"])
def test_transformer_block_trains_through_the_tiered_kernels_and_infers_without(monkeypatch, tier):
    from zoo.layers import TransformerBlock, activations, dense, dropout, normalization, softmax

    monkeypatch.setenv("ZOO_KERNELS", tier)  # tests/test_layers_native.py checks the native kernels' graph

    block = TransformerBlock(num_heads=2, hidden_dim=8, intermediate_dim=16, dropout=0.1)
    x = tf.random.normal([2, 4, 8])
    block(x)
    calls = []
    for op in (activations.bias_gelu, dense.bias_add, dropout.dropout_mask, normalization.layer_norm,
               normalization.dropout_add_layer_norm, softmax.attention_softmax):
        _spy_on_form(monkeypatch, op, calls, op.name, tier)
    block(x, training=False)
    assert calls == []
    y = block(x, training=True)
    names = [name for name, _ in calls]
    # Each residual branch's dropout, add and layer norm are one op; the attention probabilities' dropout is
    # inside the softmax; qkv, attention output and ffn_output add their biases; the intermediate one is in the GELU.
    assert sorted(names) == sorted(["bias_gelu", "attention_softmax", "dropout_add_layer_norm",
                                    "dropout_add_layer_norm", "bias_add", "bias_add", "bias_add"]), names
    assert y.shape == x.shape


@pytest.mark.parametrize("policy,tol", [("float32", 2e-5), ("mixed_bfloat16", 2e-2)])
def test_layer_normalization_islands_equal_keras_forward_and_gradients(policy, tol, training_kernels):
    from zoo.layers import LayerNormalization

    keras.mixed_precision.set_global_policy(policy)
    try:
        ours, reference = LayerNormalization(epsilon=1e-12), keras.layers.LayerNormalization(epsilon=1e-12)
        x = tf.random.stateless_normal([3, 5, 16], seed=[1, 2]) * 3 + 1
        for layer in (ours, reference):
            layer.build(x.shape)
            layer.gamma.assign(tf.random.stateless_normal([16], seed=[3, 4]) + 1)
            layer.beta.assign(tf.random.stateless_normal([16], seed=[5, 6]))
        dy = tf.random.stateless_normal([3, 5, 16], seed=[7, 8])
        results = []
        for layer, training in ((ours, True), (reference, False)):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=training)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
            results.append([y, *tape.gradient(loss, [x, layer.gamma, layer.beta])])
        assert results[0][0].dtype == results[1][0].dtype
        for got, want in zip(*results):
            np.testing.assert_allclose(tf.cast(got, tf.float32), tf.cast(want, tf.float32), rtol=tol, atol=tol)
        # Inference below FUSED_MIN_ROWS rows is Keras' own op graph: bit-identical to the reference.
        np.testing.assert_array_equal(ours(x, training=False).numpy(), reference(x).numpy())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train(make_optimizer, steps=6, native=False, sparse=False):
    """Trains [40, 8], [8] and [8, 3] variables (the second one's gradient as IndexedSlices with `sparse`)."""
    variables = [keras.Variable(np.random.default_rng(i).normal(size=s).astype("float32")) for i, s in enumerate([(40, 8), (8,), (8, 3)])]
    optimizer = make_optimizer(variables)
    optimizer.use_native_kernels = native

    @tf.function
    def step(grads):
        if sparse:  # rows 1, 3 and 5, as an embedding lookup's gradient (duplicates: see the global-norm test)
            grads = [tf.IndexedSlices(grads[0][:3], tf.constant([1, 3, 5]), tf.constant([40, 8])), *grads[1:]]
        optimizer.apply(grads, variables)

    for t in range(steps):
        step([tf.constant(np.random.default_rng(100 + t).normal(size=v.shape).astype("float32") * 2) for v in variables])
    return [v.numpy() for v in variables], optimizer, step


def _native_adamw_or_skip():
    """Skips only where no g++ exists; with a compiler, a kernel that does not build or load fails the test."""
    import shutil

    from zoo import kernels

    if shutil.which("g++") is None:
        pytest.skip("no g++ on this machine: zoo/kernels/fused_adamw.cc cannot build; the TF-ops path is tested alone")
    assert kernels.load("fused_adamw") is not None, "g++ is here but zoo/kernels/fused_adamw.cc did not build (see the log)"


def _keras_adamw(schedule):
    def make(vs):
        opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.01, epsilon=1e-6, global_clipnorm=1.0)
        opt.exclude_from_weight_decay(var_list=[v for v in vs if len(v.shape) == 1])
        return opt
    return make


@pytest.mark.parametrize("native", [False, True], ids=["tf_ops", "native_kernel"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "indexed_slices"])
def test_fused_adamw_equals_keras_adamw_with_decay_exclusion_and_clipping(native, sparse):
    if native:
        _native_adamw_or_skip()
    schedule = optim.WarmupLinearDecay(1e-2, 2, 10)
    ours, fused, step = _train(lambda vs: optim.adamw(schedule, variables=vs), native=native, sparse=sparse)
    reference, _, _ = _train(_keras_adamw(schedule), sparse=sparse)
    assert isinstance(fused, optim.FusedAdamW)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, atol=2e-6)
    # The update ran as the kernel it claims: one ZooApplyAdamW per dense variable, or TF's ResourceApplyAdam.
    graph = step.get_concrete_function([tf.TensorSpec(shape, tf.float32) for shape in ((40, 8), (8,), (8, 3))]).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("ZooApplyAdamW") == (3 - sparse if native else 0), op_types
    assert op_types.count("ResourceApplyAdam") == (0 if native else 3 - sparse), op_types
    if not sparse:
        without_clip, _, _ = _train(lambda vs: optim.adamw(schedule, clipnorm=None, variables=vs), native=native)
        assert np.abs(without_clip[0] - ours[0]).max() > 1e-4  # the clip really acts (gradient norms here are ~10)


def test_native_adamw_copies_a_buffer_a_reader_still_holds():
    _native_adamw_or_skip()
    variable = tf.Variable(tf.ones([64, 8]))
    optimizer = optim.adamw(1e-2, variables=[variable])
    optimizer.use_native_kernels = True
    before = variable.read_value()  # may share the variable's buffer
    snapshot = before.numpy().copy()
    tf.function(lambda g: optimizer.apply([g], [variable]))(tf.fill([64, 8], 3.0))
    np.testing.assert_array_equal(before.numpy(), snapshot)  # the reader's tensor was not written in place
    assert float(tf.reduce_max(variable)) < 1.0  # the variable itself moved (decay + Adam step against g > 0)


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 1e-6), (tf.bfloat16, 1e-2)])
@pytest.mark.parametrize("with_dropout", [False, True])
def test_attention_softmax_islands_equal_autodiff_of_the_plain_ops(dtype, tol, with_dropout, training_kernels):
    from zoo.layers.dropout import keep_scale
    from zoo.layers.softmax import attention_softmax_for_training

    scores = tf.cast(tf.random.stateless_normal([2, 3, 4, 5], seed=[1, 2]) * 4, dtype)
    bias = tf.where(tf.constant([[True] * 5, [True, True, True, False, False]])[:, None, None, :], 0.0, -1e9)
    seed, threshold = (tf.constant([3, 4]), 19661) if with_dropout else (None, 0)  # rate 0.3
    keep = keep_scale(tf.shape(scores), seed, threshold, dtype) if with_dropout else None  # the same mask, plain ops
    if with_dropout:
        assert 0 < float(tf.reduce_mean(tf.cast(keep > 0, tf.float32))) < 1
    dy = tf.cast(tf.random.stateless_normal(scores.shape, seed=[5, 6]), dtype)
    results = []
    for fused in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(scores)
            if fused:
                probs = attention_softmax_for_training(scores, bias, seed, threshold, scale=0.3)
            else:
                probs = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32) * 0.3 + bias), dtype)
                probs = probs if keep is None else probs * keep
        results.append((probs, tape.gradient(probs, scores, output_gradients=dy)))
    (probs, grad), (want_probs, want_grad) = results
    assert probs.dtype == dtype and probs.shape == scores.shape and grad.dtype == dtype
    np.testing.assert_allclose(tf.cast(probs, tf.float32), tf.cast(want_probs, tf.float32), rtol=tol, atol=tol)
    np.testing.assert_allclose(tf.cast(grad, tf.float32), tf.cast(want_grad, tf.float32), rtol=4 * tol, atol=4 * tol)
    assert float(tf.reduce_max(tf.cast(probs, tf.float32)[1, :, :, 3:])) == 0.0  # masked keys get nothing


def test_dense_bias_gradient_is_summed_in_float32_under_mixed_precision():
    from zoo.layers.dense import Dense

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x = tf.random.stateless_normal([2048, 8], seed=[1, 2])
        dy = tf.random.stateless_normal([2048, 16], seed=[3, 4])
        want = tf.reduce_sum(tf.cast(tf.cast(dy, tf.bfloat16), tf.float64), 0)  # exact sum of the bf16 gradient
        errors = {}
        for name, layer in (("zoo", Dense(16)), ("keras", keras.layers.Dense(16))):
            layer.build(x.shape)
            with tf.GradientTape() as tape:
                y = layer(x, training=True)
            bias_grad = tape.gradient(y, layer.bias, output_gradients=tf.cast(dy, y.dtype))
            errors[name] = tf.abs(tf.cast(bias_grad, tf.float64) - want)
            np.testing.assert_array_equal(layer(x, training=False).numpy(), layer(x, training=True).numpy())
        # A float32 sum rounds once to bf16 (half an ulp: <= 2^-8 relative); TF's bf16 BiasAddGrad drifts far more.
        assert bool(tf.reduce_all(errors["zoo"] <= tf.abs(want) * 2**-8 + 1e-6)), errors["zoo"]
        assert float(tf.reduce_max(errors["keras"])) > 4 * float(tf.reduce_max(errors["zoo"]))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float32])
@pytest.mark.parametrize("whole_step_xla", [False, True])
def test_column_sum_accumulates_in_float32_and_picks_its_kernel(dtype, whole_step_xla):
    from zoo.layers import islands
    from zoo.layers.reductions import column_sum

    t = tf.cast(tf.random.stateless_normal([2, 1024, 24], seed=[5, 6]), dtype)
    want = tf.reduce_sum(tf.cast(t, tf.float64), [0, 1])

    @tf.function(jit_compile=whole_step_xla)
    def total(t):
        with islands.whole_step_xla(whole_step_xla):
            return column_sum(t)

    got = total(t)
    assert got.dtype == dtype and got.shape == [24]
    bound = tf.abs(want) * 2**-8 + 1e-5 if dtype == tf.bfloat16 else tf.abs(want) * 1e-5 + 1e-4  # no bf16 drift
    assert bool(tf.reduce_all(tf.abs(tf.cast(got, tf.float64) - want) <= bound))
    # The ones-vector matmul only for 16-bit inputs outside a whole-step XLA compile (XLA's [1, N] dot is slow).
    ops = {op.type for op in total.get_concrete_function(t).graph.get_operations()}
    assert ("MatMul" in ops) == (dtype == tf.bfloat16 and not whole_step_xla), ops


def test_global_norm_clip_measures_indexed_slices_as_their_dense_sum():
    dense = tf.constant([[3.0, 0.0], [0.0, 0.0]])
    # Row 0 twice: the sparse gradient sums to [[2, 0], [0, 0]]; global norm sqrt(9 + 4), not sqrt(9 + 1 + 1) by values.
    sparse = tf.IndexedSlices(tf.constant([[1.0, 0.0], [1.0, 0.0]]), tf.constant([0, 0]), tf.constant([2, 2]))
    clipped_dense, clipped_sparse = optim.global_norm_clip([dense, sparse], 1.0)
    total = np.sqrt(9.0 + 4.0)  # |[[3,0],[0,0]]|^2 + |[[2,0],[0,0]]|^2
    np.testing.assert_allclose(clipped_dense.numpy(), dense.numpy() / total, rtol=1e-6)
    assert isinstance(clipped_sparse, tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(clipped_sparse).numpy(), [[2.0 / total, 0.0], [0.0, 0.0]], rtol=1e-6)
    assert optim.global_norm_clip([None, dense], 10.0)[0] is None


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16, tf.float32, tf.float64, tf.int32])
@pytest.mark.parametrize("whole_step_xla", [False, True])
def test_transpose_equals_tf_transpose_and_its_gradient_and_avoids_the_float_kernel(dtype, whole_step_xla):
    from zoo.layers import islands
    from zoo.layers.transpose import transpose

    perm = (2, 0, 3, 1, 4)
    x = tf.cast(tf.random.stateless_normal([2, 5, 3, 4, 6], seed=[7, 8]) * 10, dtype)
    weights = tf.cast(tf.reshape(tf.range(3 * 2 * 4 * 5 * 6), [3, 2, 4, 5, 6]), tf.float32)

    @tf.function
    def value_and_grad(x):
        with islands.whole_step_xla(whole_step_xla), tf.GradientTape() as tape:
            tape.watch(x)
            y = transpose(x, perm)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
        return y, (tape.gradient(loss, x) if dtype.is_floating else None)

    y, grad = value_and_grad(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(tf.cast(y, tf.float64).numpy(), tf.cast(tf.transpose(x, perm), tf.float64).numpy())
    if dtype.is_floating:  # d/dx sum(transpose(x) * w) = transpose(w, inverse perm), exactly (integers)
        want = tf.cast(tf.cast(tf.transpose(weights, (1, 3, 0, 2, 4)), dtype), tf.float64)
        np.testing.assert_array_equal(tf.cast(grad, tf.float64).numpy(), want.numpy())
    # Float transposes run as same-width integers (TF's kernel, not oneDNN's), except inside whole-step XLA.
    graph = value_and_grad.get_concrete_function(x).graph
    types = {op.get_attr("T") for op in graph.get_operations() if op.type == "Transpose"}
    floats_transposed = any(t.is_floating for t in types)
    assert floats_transposed == (whole_step_xla and dtype.is_floating), types


_FUSED_LAYER_NORM_CHECK = """
import sys, keras, numpy as np, tensorflow as tf
from zoo.layers import LayerNormalization, islands
from zoo.layers.normalization import FUSED_MIN_ROWS
keras.mixed_precision.set_global_policy(sys.argv[1])
ours, reference = LayerNormalization(epsilon=1e-12), keras.layers.LayerNormalization(epsilon=1e-12)
for layer in (ours, reference):
    layer.build([None, None, 16])
    layer.gamma.assign(tf.random.stateless_normal([16], seed=[3, 4]) + 1)
    layer.beta.assign(tf.random.stateless_normal([16], seed=[5, 6]))
spec = tf.TensorSpec([None, None, 16], ours.compute_dtype)  # inside a network the input is already in that dtype
for xla in (False, True):
    @tf.function(input_signature=[spec])  # dynamic shapes, as in an export
    def infer(x):
        with islands.whole_step_xla(xla):
            return ours(x, training=False)
    ops = {op.type for f in [infer.get_concrete_function()] for g in [f.graph, *[fn.graph for fn in f.graph._functions.values()]] for op in g.get_operations()}
    assert ("FusedBatchNormV3" in ops) == (not xla), ops  # the fused form only outside whole-step XLA
    for rows, scale in ((FUSED_MIN_ROWS - 1, 3.0), (FUSED_MIN_ROWS, 3.0), (3 * FUSED_MIN_ROWS, 3.0),
                        (FUSED_MIN_ROWS, 0.01)):  # both sides of the threshold; a variance where epsilon would show
        x = tf.cast(tf.random.stateless_normal([1, rows, 16], seed=[rows, 2]) * scale + 1, ours.compute_dtype)
        got, want = infer(x), reference(x)
        assert got.dtype == want.dtype and got.shape == want.shape
        bf16 = sys.argv[1] == "mixed_bfloat16"
        if scale > 1:  # Keras' own formula loses digits to cancellation at small variance: compare it at 3 only
            tol = 2e-2 if bf16 else 2e-5
            np.testing.assert_allclose(tf.cast(got, tf.float32), tf.cast(want, tf.float32), rtol=tol, atol=tol)
        x64 = tf.cast(x, tf.float64).numpy()
        mean, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
        exact = (x64 - mean) / np.sqrt(var + 1e-12) * ours.gamma.numpy() + ours.beta.numpy()
        tol = 3e-2 if bf16 else 1e-4  # an epsilon of ~1e-5 instead of 1e-12 would be off by ~5 % at scale 0.01
        np.testing.assert_allclose(tf.cast(got, tf.float64), exact, rtol=tol, atol=tol)
print("ok")
"""


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("onednn", ["1", "0"])
def test_layer_normalization_inference_fused_form_equals_keras_on_both_sides_of_the_threshold(policy, onednn):
    # A fresh process per setting: TF reads TF_ENABLE_ONEDNN_OPTS once (oneDNN's _MklLayerNorm, or TF's own op).
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "PYTHONPATH": root}
    result = subprocess.run([sys.executable, "-c", _FUSED_LAYER_NORM_CHECK, policy], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_inference_edge_cases_float64_layer_norm_float16_masked_rows_second_order_transpose():
    from zoo.layers import LayerNormalization, MultiHeadAttention, make_attention_mask
    from zoo.layers.normalization import FUSED_MIN_ROWS
    from zoo.layers.transpose import transpose

    # float64 has no fused batch norm kernel: the layer keeps Keras' ops on both sides of the threshold.
    layer = LayerNormalization(epsilon=1e-12, dtype="float64")
    infer = tf.function(lambda x: layer(x, training=False), input_signature=[tf.TensorSpec([None, None, 8], tf.float64)])
    for rows in (2, 2 * FUSED_MIN_ROWS):
        x = tf.random.stateless_normal([1, rows, 8], seed=[1, rows], dtype=tf.float64)
        np.testing.assert_allclose(infer(x).numpy(), keras.layers.LayerNormalization(epsilon=1e-12, dtype="float64")(x).numpy(),
                                   atol=1e-12)
    # A row whose keys are all padding (batch padding) stays finite in float16, where -1e9 would be -inf.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        attention = MultiHeadAttention(num_heads=2, hidden_dim=8)
        mask = make_attention_mask(tf.constant([[1, 1, 0, 0], [0, 0, 0, 0]]))
        out = attention(tf.random.stateless_normal([2, 4, 8], seed=[3, 4]), attention_mask=mask, training=False)
        assert out.dtype == tf.float16 and bool(tf.reduce_all(tf.math.is_finite(out)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The gradient of transpose is itself differentiable (second order through the bitcast kernel).
    x = tf.random.stateless_normal([2, 3, 4], seed=[5, 6])
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(transpose(x, (2, 0, 1)) ** 3)
        dx = inner.gradient(y, x)
        z = tf.reduce_sum(dx)
    np.testing.assert_allclose(outer.gradient(z, x).numpy(), (6 * x).numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype, tol", [(tf.float32, 2e-6), (tf.bfloat16, 2e-2)])
@pytest.mark.parametrize("whole_step_xla", [False, True])
def test_attention_for_inference_equals_float64_softmax_attention_on_both_sides_of_the_threshold(dtype, tol, whole_step_xla):
    from zoo.layers import islands
    from zoo.layers.attention import SMALL_ATTENTION_MAX_MACS, attention_for_inference

    heads, depth = 2, 8
    spec = tf.TensorSpec([None, heads, None, depth], dtype)

    @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([None, 1, 1, None], tf.float32)])  # dynamic, as exported
    def infer(q, k, v, bias):
        with islands.whole_step_xla(whole_step_xla):
            return attention_for_inference(q, k, v, bias, tf.cast(depth**-0.5, dtype))

    graph_ops = {op.type for g in [infer.get_concrete_function().graph] for op in g.get_operations()}
    assert ("StatelessIf" in graph_ops or "If" in graph_ops) == (not whole_step_xla), graph_ops
    # Small (the Eigen form) and large (oneDNN's) requests, the second with a row whose keys are all padding.
    for batch, length in ((1, 3), (2, 5), (8, 64)):
        small = batch * heads * length * length * depth <= SMALL_ATTENTION_MAX_MACS
        assert small == ((batch, length) != (8, 64))
        q, k, v = (tf.random.stateless_normal([batch, heads, length, depth], seed=[length, i]) * 2 for i in range(3))
        valid = np.ones([batch, length], np.float64)
        if batch > 1:
            valid[1, :] = 0  # all padding: a uniform average of the values, as the plain softmax gives
            valid[0, length // 2:] = 0
        bias = tf.constant(np.where(valid, 0.0, -1e9)[:, None, None, :], tf.float32)
        got = infer(*(tf.cast(t, dtype) for t in (q, k, v)), bias)
        assert got.dtype == dtype and got.shape == (batch, heads, length, depth)
        q64, k64, v64 = (tf.cast(tf.cast(t, dtype), tf.float64).numpy() for t in (q, k, v))
        # The mask added in float32, as every form does: -1e9 swallows an all-padding row's scores (uniform weights).
        scores = ((q64 @ k64.transpose(0, 1, 3, 2) * depth**-0.5).astype(np.float32) + bias.numpy()).astype(np.float64)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        want = (probs / probs.sum(-1, keepdims=True)) @ v64
        np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), want, rtol=tol, atol=tol * 4)


def test_native_kernels_fall_back_cleanly_without_a_compiler_or_when_turned_off(monkeypatch, tmp_path, caplog):
    from zoo import kernels

    monkeypatch.setenv("ZOO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))  # no g++ on the PATH
    with caplog.at_level("WARNING"):
        assert kernels._cached_load.__wrapped__("fused_adamw") is None  # not cached: a fresh attempt
    assert "Native kernel fused_adamw unavailable" in caplog.text
    assert list(tmp_path.iterdir()) == []  # no partial library left behind for the next process to load
    for setting in ("xla", "plain"):  # the tiers without native kernels load none, not even fused AdamW's
        monkeypatch.setenv("ZOO_KERNELS", setting)
        assert not kernels.enabled() and kernels.load("fused_adamw") is None


def test_export_op_check_refuses_the_native_training_ops_even_once_loaded():
    from zoo.export import disallowed_ops

    _native_adamw_or_skip()  # loaded: ZooApplyAdamW is now in this process's op registry
    assert disallowed_ops(["ZooApplyAdamW", "MatMul"]) == ["ZooApplyAdamW"]


def test_gather_positions_equals_take_along_axis_with_its_gradient():
    from zoo.layers import gather_positions

    sequence = tf.random.stateless_normal([3, 7, 5], seed=[1, 1])
    positions = tf.constant([[0, 6, 2, 0], [1, 1, 3, 5], [6, 5, 4, 0]])  # repeats: their gradients add up
    dy = tf.random.stateless_normal([3, 4, 5], seed=[2, 2])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(sequence)
        ours = gather_positions(sequence, positions)
        reference = keras.ops.take_along_axis(sequence, positions[..., None], axis=1)
    np.testing.assert_array_equal(ours.numpy(), reference.numpy())
    got = tf.convert_to_tensor(tape.gradient(ours, sequence, output_gradients=dy))
    want = tf.convert_to_tensor(tape.gradient(reference, sequence, output_gradients=dy))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    assert float(tf.reduce_sum(tf.abs(got[0, 0]))) > 0 and float(tf.reduce_sum(tf.abs(got[0, 1]))) == 0
