"""Dense layer whose training bias gradient is summed in float32 (a ones-vector matmul) instead of `BiasAddGrad`.

Shape legend: N rows (B*T), F units.

Under mixed precision TensorFlow's `BiasAddGrad` sums a bf16 [N, F] gradient in bf16: at N = 2048 rows of unit
normals its column sums were off by several units (of ~45; up to 17 at [2048, 3072] in one ad hoc measurement):
the bias gradients of bf16 Dense layers carry large rounding errors. Here the sum is `column_sum`
(zoo/layers/reductions.py): ones[1, N] @ dy[N, F], which the matmul kernels accumulate in float32, so the result is
exact to its one final rounding (tests/test_layers_fast_paths.py), in one read of dy. (An XLA island of cast +
reduce was as exact but wrote a float32 copy of dy first: BERT-base step 2,045 -> 2,020 ms with the matmul, an
in-process A/B on the AMX Xeon.) The forward is Keras' (oneDNN fuses the matmul and the bias add).
"""

import keras
import tensorflow as tf

from zoo.layers.reductions import column_sum


@tf.custom_gradient
def bias_add_for_training(x, bias):
    """tf.nn.bias_add(x, bias) (x [..., F], bias [F], same dtype); the bias gradient is summed in float32."""
    return tf.nn.bias_add(x, bias), lambda dy: (dy, column_sum(dy))


@keras.saving.register_keras_serializable(package="zoo")
class Dense(keras.layers.Dense):
    """Keras' `Dense` (same weights, config and checkpoints) with `bias_add_for_training` when training.

    Call args:
      inputs: float [..., D]; training: bool.

    Returns:
      [..., F] in the layer's compute dtype.
    """

    def call(self, inputs, training=False):
        if not training or self.bias is None or getattr(self, "lora_enabled", False) or self.quantization_mode:
            return super().call(inputs)
        x = bias_add_for_training(keras.ops.matmul(inputs, self.kernel), tf.cast(self.bias, self.compute_dtype))
        return x if self.activation is None else self.activation(x)
