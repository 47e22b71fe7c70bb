"""Dense layer whose training bias gradient is summed in float32 (a ones-vector matmul) instead of `BiasAddGrad`.

Shape legend: N rows (B*T), F units.

Under mixed precision TensorFlow's `BiasAddGrad` sums a bf16 [N, F] gradient in bf16: at N = 2048 rows of unit
normals its column sums were off by several units (of ~45; up to 17 at [2048, 3072] in one ad hoc measurement):
the bias gradients of bf16 Dense layers carry large rounding errors. Here the sum is `column_sum`
(zoo/layers/reductions.py): ones[1, N] @ dy[N, F], which the matmul kernels accumulate in float32, so the result is
exact to its one final rounding (tests/test_layers_fast_paths.py), in one read of dy. (An XLA island of cast +
reduce was as exact but wrote a float32 copy of dy first: BERT-base step 2,045 -> 2,020 ms with the matmul, an
in-process A/B on the AMX Xeon.) Inference runs Keras' own forward (oneDNN fuses the matmul and the bias add).
"""

import keras
import tensorflow as tf

from zoo.layers import native
from zoo.layers.islands import xla_island
from zoo.layers.reductions import column_sum


@xla_island
def _bias_add_xla(x, bias):
    return x + bias


def bias_add_for_training(x, bias):
    """x + bias (x [..., F], bias [F], same dtype) as one kernel; the bias gradient is summed in float32.

    The add is kept out of TensorFlow's graph on purpose: grappler's remapper fuses a MatMul with the BiasAdd (or
    AddV2) that follows it into `_MklNativeFusedMatMul`, which oneDNN runs as an `inner_product` primitive on its
    `gemm:jit` path: no AMX. The plain MatMul runs `brg_matmul` on AMX tiles. At [2048, 768] x [768, 3072] in bf16
    the fused kernel took 30.9 ms against 20.8 ms for the plain MatMul (ONEDNN_VERBOSE shows the two primitives).
    The kernel is the native ZooBiasAdd where `zoo.layers.native` allows (an XLA launch per call cost more than
    the add), else an XLA island.
    """
    library = native.layer_ops(x.dtype)
    if library is not None:
        return _bias_add_native(library, x, tf.cast(bias, tf.float32))
    return _bias_add_island(x, bias)


@tf.custom_gradient
def _bias_add_island(x, bias):
    return _bias_add_xla(x, bias), lambda dy: (dy, column_sum(dy))


def _bias_add_native(library, x, bias):
    @tf.custom_gradient
    def bias_add(x, bias):
        return library.zoo_bias_add(x, bias), lambda dy: (dy, tf.cast(column_sum(dy), tf.float32))

    return bias_add(x, bias)


@keras.saving.register_keras_serializable(package="zoo")
class Dense(keras.layers.Dense):
    """Keras' `Dense` (same weights, config and checkpoints) with `bias_add_for_training` when training.

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
