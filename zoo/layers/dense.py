"""Dense layer whose training bias add is a kernel of its own, with the bias gradient summed in float32.

Shape legend: N rows (B*T), F units.

Training computes y = x @ kernel + bias with the add outside TensorFlow's graph rewrites (`bias_add_for_training`)
and the bias gradient sum(dy over rows) accumulated in float32 (`column_sum`, zoo/layers/reductions.py: a
ones[1, N] @ dy[N, F] matmul, exact to its one final rounding, in one read of dy). TensorFlow's `BiasAddGrad`
sums a bf16 gradient in bf16, with large rounding errors (tests/test_layers_fast_paths.py). Inference runs Keras'
own forward (oneDNN fuses the matmul and the bias add). Measurements behind these choices: benchmarks/RESULTS.md,
"Kernel notes moved from docstrings".
"""

import keras
import tensorflow as tf

from zoo.layers import tiers
from zoo.layers.islands import xla_island
from zoo.layers.reductions import column_sum


def _plus_bias(x, bias):
    return x + bias


_bias_add_xla = xla_island(_plus_bias)


def _bias_add_form(add, bias_dtype=None):
    """x + bias by add(x, bias); the gradient (dy, column_sum(dy)), the bias cast to bias_dtype first if given."""

    def prepare(x, bias):
        return x, bias if bias_dtype is None else tf.cast(bias, bias_dtype)

    def forward(x, bias):
        return add(x, bias), bias.dtype

    def backward(bias_dtype, dy):
        return dy, tf.cast(column_sum(dy), bias_dtype)

    return tiers.Form(forward, backward, prepare)


# The native kernel reads a float32 bias; the other forms add it in x's dtype.
bias_add = tiers.TieredOp(
    "bias_add",
    native=_bias_add_form(lambda x, bias: tiers.native_library().zoo_bias_add(x, bias), tf.float32),
    xla=_bias_add_form(_bias_add_xla),
    plain=_bias_add_form(_plus_bias),
)


def bias_add_for_training(x, bias):
    """x + bias (x [..., F], bias [F], same dtype) as one kernel; the bias gradient is summed in float32.

    The add is kept out of TensorFlow's graph in every tier but plain: grappler's remapper would fuse a MatMul with
    the BiasAdd (or AddV2) that follows it into `_MklNativeFusedMatMul`, which oneDNN runs on its non-AMX
    `inner_product` path, slower than the plain MatMul's AMX `brg_matmul`.
    """
    return bias_add(x, bias)


@keras.saving.register_keras_serializable(package="zoo")
class Dense(keras.layers.Dense):
    """y = activation(x @ kernel + bias): Keras' `Dense` (same weights, config and checkpoints); in training the
    bias is added by `bias_add_for_training` (bias gradient summed in float32).

    Call args:
      inputs: float [..., D]; training: bool.

    Returns:
      [..., F] in the layer's compute dtype.
    """

    def defers_bias(self):
        """True when `matmul` + the bias added by the caller is this layer's whole training forward."""
        return self.bias is not None and self.activation in (None, keras.activations.linear) and not self._is_modified()

    def matmul(self, inputs):
        """inputs [..., D] @ kernel -> [..., F] in the compute dtype, without the bias, for a caller that adds
        `self.bias` inside a kernel of its own (`gelu_for_training(layer.matmul(x), layer.bias)`); see `defers_bias`."""
        return keras.ops.matmul(tf.cast(inputs, self.compute_dtype), tf.cast(self.kernel, self.compute_dtype))

    def _is_modified(self):
        return bool(getattr(self, "lora_enabled", False) or self.quantization_mode)

    def call(self, inputs, training=False):
        if not training or self.bias is None or self._is_modified():
            return super().call(inputs)
        x = bias_add_for_training(keras.ops.matmul(inputs, self.kernel), tf.cast(self.bias, self.compute_dtype))
        return x if self.activation is None else self.activation(x)
