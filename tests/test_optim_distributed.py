"""The global-norm clip acts on the cross-replica gradient sum: R replicas take the step of one device.

(That the clip acts at all, on one device, equal to Keras' AdamW: tests/test_layers_fast_paths.py.)
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: logical CPU devices must be set before TensorFlow initialises.
SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from zoo import optim

which = sys.argv[1]
x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
x[4:] *= 30.0  # replica 1's half of the global batch: a ~30x larger gradient, so per-replica norms differ a lot
GLOBAL_BATCH = 8


def make_optimizer(variables):
    if which == "keras":
        return keras.optimizers.AdamW(1e-2, weight_decay=0.01, epsilon=1e-6, global_clipnorm=1.0)
    optimizer = optim.adamw(1e-2, variables=variables)
    optimizer.use_native_kernels = which == "zoo_native"  # ZooApplyAdamW on each replica's copy (as the loop sets it)
    return optimizer


def train(strategy, replicas):
    with strategy.scope():
        w = keras.Variable(np.random.default_rng(1).normal(size=(5, 3)).astype("float32"))
        b = keras.Variable(np.zeros(3, "float32"))
        opt = make_optimizer([w, b])
        opt.build([w, b])

    def replica_step(rows):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.matmul(rows, w) + b - 1.0)) / GLOBAL_BATCH  # global normalisation
        opt.apply(tape.gradient(loss, [w, b]), [w, b])

    per = GLOBAL_BATCH // replicas
    rows = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[ctx.replica_id_in_sync_group * per:(ctx.replica_id_in_sync_group + 1) * per]))
    step = tf.function(lambda: strategy.run(replica_step, args=(rows,)))
    for _ in range(4):
        step()
    graph = step.get_concrete_function().graph
    NATIVE_OPS.append(sum(op == "ZooApplyAdamW" for op in [o.type for o in graph.get_operations()]
                          + [n.op for f in graph.as_graph_def().library.function for n in f.node_def]))
    return [np.asarray(v.numpy()).tolist() for v in (w, b)]


NATIVE_OPS = []  # ZooApplyAdamW ops in each run's step graph


one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), 1)
two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 2)
from zoo import kernels
print("RESULT " + json.dumps({"one": one, "two": two, "native_built": kernels.load("fused_adamw") is not None,
                              "native_ops": NATIVE_OPS}))
"""


def _run(which):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    if which == "zoo_native" and not result["native_built"]:
        import shutil  # skip only without a compiler; with one, a failed build is a failure

        if shutil.which("g++") is None:
            pytest.skip("no g++ on this machine: zoo/kernels/fused_adamw.cc cannot build")
        raise AssertionError("g++ is here but zoo/kernels/fused_adamw.cc did not build:\n" + proc.stderr[-3000:])
    # The native kernel updates w and b on every replica (1 + 2 copies each), and only when asked for.
    assert result["native_ops"] == ([2, 4] if which == "zoo_native" else [0, 0]), result["native_ops"]
    return [np.array(v) for v in result["one"]], [np.array(v) for v in result["two"]]


@pytest.mark.parametrize("which", ["zoo", "zoo_native", "keras"])
def test_two_replicas_take_the_one_device_step_with_clipping(which):
    one, two = _run(which)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    if which != "keras":
        assert diff < 1e-6, diff
    else:
        # Keras clips each replica's gradient by its own norm before the sum: the control shows that this test
        # can tell the two apart.
        assert diff > 1e-3, diff


DROPOUT_SCRIPT = r"""
import json
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from zoo.layers import Dropout

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    layer = Dropout(0.5, seed=7)
masks = strategy.run(tf.function(lambda: layer(tf.ones([64, 32]), training=True)))
a, b = (t.numpy() > 0 for t in strategy.experimental_local_results(masks))
single = Dropout(0.5, seed=7)(tf.ones([64, 32]), training=True).numpy() > 0
print("RESULT " + json.dumps({"differ": float((a != b).mean()), "first_is_single": bool((a == single).all())}))
"""


def test_replicas_draw_different_dropout_masks():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", DROPOUT_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert 0.4 < result["differ"] < 0.6, result  # independent masks at rate 0.5 disagree on half the elements
    assert result["first_is_single"], result  # replica 0 keeps the single-device mask (checkpoints resume alike)
