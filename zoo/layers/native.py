"""The native CPU kernels of a training step's memory-bound passes (zoo/kernels/layer_ops.cc), where they apply.

Layer norm (alone or fused with the residual add and dropout before it), bias + GELU, bias add, dropout and the
attention softmax each have three forms: the native kernel (one multithreaded pass per direction, float32 maths,
column sums accumulated inside), the XLA island (one XLA:CPU loop; zoo/layers/islands.py) and the plain TF ops.
At BERT-base shapes in bf16 on the AMX Xeon, forward + backward (`benchmarks/training_kernels.py`, 2026-12-04):
layer norm 1.75 vs 4.19 ms, residual + dropout + layer norm 2.96 vs 6.01, attention softmax 4.91 vs 7.50,
bias + GELU 7.19 vs 9.27, dropout 1.74 vs 2.18 ms. The kernels compute the islands' maths and draw the same
dropout masks (tests/test_layers_native.py compares them).

`layer_ops()` returns the op library only where a native kernel can run and nothing else is expected: a CPU-only
machine, outside any XLA compilation (a whole-step XLA compile, a `jit_compile=True` function, TPUs), with
ZOO_NATIVE_KERNELS unset or 1 and a C++ compiler available (zoo/kernels). Elsewhere callers take their island.
Inference never calls these paths, so exports never contain the ops (zoo.export also refuses Zoo* ops).
"""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from zoo import kernels
from zoo.layers.islands import in_whole_step_xla

NATIVE_DTYPES = (tf.float32, tf.bfloat16)


def layer_ops(*dtypes):
    """The `layer_ops` op library, or None where the native kernels do not apply (see the module docstring).

    dtypes: the dtypes of the tensors the kernels would read or write; any outside float32 / bfloat16 -> None.
    """
    if not kernels.enabled() or any(tf.as_dtype(d) not in NATIVE_DTYPES for d in dtypes):
        return None
    if in_whole_step_xla() or control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return None
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return None
    return kernels.load("layer_ops")


# Op gradients, for what differentiates the kernels themselves: first-order training gradients come from the
# layers' tf.custom_gradient functions; a tape around those (second order, Hessian-vector products) needs these.
# The two linear ops are differentiated exactly; the others point to the islands, which TF can differentiate.
@tf.RegisterGradient("ZooDropout")
def _dropout_gradient(op, dy):
    library = kernels.load("layer_ops")
    return library.zoo_dropout(dy, op.inputs[1], threshold=op.get_attr("threshold")), None


@tf.RegisterGradient("ZooBiasAdd")
def _bias_add_gradient(op, dy):
    axes = list(range(len(dy.shape) - 1)) if dy.shape.rank is not None else tf.range(tf.rank(dy) - 1)
    return dy, tf.reduce_sum(tf.cast(dy, tf.float32), axis=axes)


def _first_order_only(op, *grads):
    raise NotImplementedError(
        f"{op.type} (a native training kernel, zoo/kernels/layer_ops.cc) has no gradient of its own: "
        "second-order gradients through it are not implemented. Run with ZOO_NATIVE_KERNELS=0 to use the XLA "
        "islands, which TensorFlow differentiates.")


for _name in ("ZooLayerNorm", "ZooLayerNormGrad", "ZooDropoutAddLayerNorm", "ZooBiasGelu", "ZooBiasGeluGrad",
              "ZooAttentionSoftmax", "ZooAttentionSoftmaxGrad"):
    tf.RegisterGradient(_name)(_first_order_only)
