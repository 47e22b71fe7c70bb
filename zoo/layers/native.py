"""The op gradients of the native training kernels (zoo/kernels/layer_ops.cc), and `layer_ops()`.

The choice of tier (native kernel, XLA island, plain ops) is made in zoo/layers/tiers.py; the layers'
first-order training gradients come from `tiers.TieredOp`'s hand-written gradient. What is registered here is
for what differentiates the raw ops themselves: a tape around those (second order, Hessian-vector products).
The two linear ops are differentiated exactly; the others raise, naming the tiers TensorFlow can differentiate.
Inference never calls the native kernels, so exports never contain them (zoo.export also refuses Zoo* ops).
"""

import tensorflow as tf

from zoo import kernels
from zoo.layers import tiers

NATIVE_DTYPES = tiers.NATIVE_DTYPES


def layer_ops(*dtypes):
    """The `layer_ops` op library where the native tier runs for tensors of these dtypes now (ZOO_KERNELS auto or
    native, a CPU-only machine, outside any XLA compilation, g++ available), else None."""
    if any(tf.as_dtype(d) not in NATIVE_DTYPES for d in dtypes) or kernels.setting() not in ("auto", "native"):
        return None
    return tiers.native_library() if tiers.select("layer_ops") == "native" else None


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
        f"second-order gradients through it are not implemented. Run with {kernels.ENV}=xla (XLA islands) or "
        f"{kernels.ENV}=plain (plain TF ops), which TensorFlow differentiates.")


for _name in ("ZooLayerNorm", "ZooLayerNormGrad", "ZooDropoutAddLayerNorm", "ZooBiasGelu", "ZooBiasGeluGrad",
              "ZooAttentionSoftmax", "ZooAttentionSoftmaxGrad"):
    tf.RegisterGradient(_name)(_first_order_only)
