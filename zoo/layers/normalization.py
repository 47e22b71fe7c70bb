"""Layer normalization whose training forward and backward each run as one XLA island.

Keras' `LayerNormalization` under `mixed_bfloat16` spends ~10 elementwise and reduction passes over [B, T, H] in
float32 forward and backward (casts, moments, rsqrt, scale, shift, and the autodiff of each). Here the forward is
one XLA loop (bf16 in, float32 statistics, bf16 out) that also returns the per-row mean and 1/std, and the
backward is one more that recomputes x_hat from x and those statistics, with dgamma and dbeta summed by a
ones-vector matmul (zoo/layers/reductions.py): on the AMX Xeon at [2048, 768] bf16, forward + backward took 4.9 ms
against Keras' 9.1 ms with the sums inside the island (ad hoc, /tmp script); the matmul sums then cut the backward
from 5.7 to 3.3 ms (25 distinct inputs, out of cache) and the BERT-base step 2,193 -> 2,126 ms (in-process A/B).
In bf16, dbeta is the float32-accumulated sum of dy rounded once; dgamma sums the bf16-rounded products
dy * x_hat (as a mixed-precision matmul's kernel gradient sums bf16 inputs) and rounds once; float32 stays float32.
Inference (`layer_norm_for_inference`) takes oneDNN's fused layer norm on batches of 128 rows and more, Keras'
own ops below that; every configuration other than BERT's / GPT's (last axis, scale and centre, no RMS scaling)
runs Keras' own code. Exports stay plain TF ops.
"""

import keras
import tensorflow as tf

from zoo.layers import native
from zoo.layers.dropout import check_size
from zoo.layers.islands import in_whole_step_xla, xla_island
from zoo.layers.reductions import column_sum


def _forward(x, gamma, beta, epsilon):
    """x [..., H] (any float dtype), gamma/beta float32 [H] -> (y [..., H] x.dtype, mean and 1/std [..., 1] f32)."""
    xf = tf.cast(x, tf.float32)
    mean = tf.reduce_mean(xf, axis=-1, keepdims=True)
    centred = xf - mean
    inv_std = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + epsilon)
    return tf.cast(centred * inv_std * gamma + beta, x.dtype), mean, inv_std


def _backward(x, mean, inv_std, gamma, dy):
    """The row-wise part of `_forward`'s gradient: (dx [..., H] x.dtype, dy * x_hat [..., H] x.dtype).

    dgamma and dbeta, the column sums of dy * x_hat and dy, are left to `column_sum` (a ones-vector matmul with
    float32 accumulation): XLA:CPU's column reductions made them ~40 % of this island's time.
    """
    x_hat = (tf.cast(x, tf.float32) - mean) * inv_std
    dyf = tf.cast(dy, tf.float32)
    g = dyf * gamma
    dx = inv_std * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                    - x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True))
    return tf.cast(dx, x.dtype), tf.cast(dyf * x_hat, x.dtype)


_forward_xla = xla_island(_forward)
_backward_xla = xla_island(_backward)


def layer_norm_for_training(x, gamma, beta, epsilon):
    """Layer normalization over the last axis with a hand-written gradient, as two XLA islands.

    Args:
      x: float [..., H] (bf16 under mixed precision); statistics are computed in float32.
      gamma, beta: float32 [H].
      epsilon: python float added to the variance.

    Returns:
      [..., H] in x's dtype: (x - mean) / sqrt(var + epsilon) * gamma + beta.

    On a CPU-only machine the native kernels run instead of the islands (`zoo.layers.native`), with dgamma and
    dbeta summed inside the backward kernel in float32.
    """
    library = native.layer_ops(x.dtype)
    if library is not None:
        return _layer_norm_native(library, x, tf.cast(gamma, tf.float32), tf.cast(beta, tf.float32), float(epsilon))
    epsilon = tf.constant(epsilon, tf.float32)  # a tensor: one XLA program for every epsilon

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        y, mean, inv_std = _forward_xla(x, gamma, beta, epsilon)

        def grad(dy):
            dx, dy_x_hat = _backward_xla(x, mean, inv_std, gamma, dy)
            return dx, tf.cast(column_sum(dy_x_hat), tf.float32), tf.cast(column_sum(dy), tf.float32)

        return y, grad

    return normalize(x, gamma, beta)


def _layer_norm_native(library, x, gamma, beta, epsilon):
    """`layer_norm_for_training` as ZooLayerNorm / ZooLayerNormGrad (zoo/kernels/layer_ops.cc)."""

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        y, mean, inv_std = library.zoo_layer_norm(x, gamma, beta, epsilon=epsilon)

        def grad(dy):
            return library.zoo_layer_norm_grad(x, mean, inv_std, gamma, tf.cast(dy, x.dtype))  # dx, dgamma, dbeta

        return y, grad

    return normalize(x, gamma, beta)


@keras.saving.register_keras_serializable(package="zoo")
class LayerNormalization(keras.layers.LayerNormalization):
    """Keras' `LayerNormalization` (same weights, config and checkpoints) with `layer_norm_for_training` in training.

    Call args:
      inputs: float [..., H]; training: bool (True: the XLA islands, where the configuration allows).

    Returns:
      [..., H] in the layer's compute dtype.
    """

    def _islands_apply(self, inputs):
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        last = len(inputs.shape) - 1
        return self.center and self.scale and not self.rms_scaling and [a % (last + 1) for a in axes] == [last]

    def add_and_normalize(self, x, branch, dropout, training=False):
        """`self(x + dropout(branch))`: a post-LN Transformer's residual connection.

        In CPU training with the native kernels (zoo/layers/native.py) the dropout, the add and the normalization
        are one pass (`ZooDropoutAddLayerNorm`: the separate dropout and add passes over [B, T, H] and their
        intermediate tensor are gone); elsewhere the three layers' own paths, with the same dropout mask.

        Args:
          x: float [..., H], the residual; branch: float [..., H]; dropout: the branch's `zoo.layers.Dropout`.

        Returns:
          [..., H] in the layer's compute dtype.
        """
        library = native.layer_ops(self.compute_dtype) if training and self._islands_apply(x) else None
        if library is None:
            return self(x + dropout(branch, training=training), training=training)
        if not self.built:  # called without Keras' __call__, which would build it
            self.build(x.shape)
        seed = dropout.next_seed(training)
        threshold = dropout.threshold if seed is not None else 0
        seed = seed if threshold else tf.zeros([2], tf.int32)
        if threshold:
            check_size(branch)
        x, branch = tf.cast(x, self.compute_dtype), tf.cast(branch, self.compute_dtype)
        gamma, beta = tf.cast(tf.convert_to_tensor(self.gamma), tf.float32), tf.cast(tf.convert_to_tensor(self.beta), tf.float32)
        epsilon = float(self.epsilon)

        @tf.custom_gradient
        def dropout_add_layer_norm(branch, x, gamma, beta):
            y, total, mean, inv_std = library.zoo_dropout_add_layer_norm(branch, x, gamma, beta, seed,
                                                                          threshold=threshold, epsilon=epsilon)

            def grad(dy):
                dtotal, dgamma, dbeta = library.zoo_layer_norm_grad(total, mean, inv_std, gamma, tf.cast(dy, x.dtype))
                dbranch = library.zoo_dropout(dtotal, seed, threshold=threshold) if threshold else dtotal
                return dbranch, dtotal, dgamma, dbeta

            return y, grad

        return dropout_add_layer_norm(branch, x, gamma, beta)

    def call(self, inputs, training=False):
        if not self._islands_apply(inputs):
            return super().call(inputs)
        if not training:
            return layer_norm_for_inference(inputs, super().call, self.gamma, self.beta, self.epsilon, self.compute_dtype)
        inputs = tf.cast(inputs, self.compute_dtype)
        return layer_norm_for_training(inputs, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta),
                                       self.epsilon)


FUSED_MIN_ROWS = 128  # below this, oneDNN's layer norm costs more than Keras' ops (~100 µs to set up per call)


def _layer_norm_as_fused_batch_norm(x, rows, gamma, beta, epsilon):
    """x [..., H] (rows = the product of the leading axes) -> [..., H] in x's dtype, as a FusedBatchNormV3 in
    training mode over [1, rows, H, 1] (NCHW).

    This is the exact op pattern of tf.keras' fused layer norm, which TF's graph optimizer rewrites into oneDNN's
    `_MklLayerNorm` (one pass, float32 statistics; at 8,192 rows of H = 384 on the AMX Xeon ~1.2 ms against
    ~4.8 ms for Keras' ops in float32, 3.2 against 7.5 ms in bf16, ad hoc, a residual add included). Without
    oneDNN the op runs as TF's own fused batch norm, with the same result.
    """
    normalized, _, _ = tf.compat.v1.nn.fused_batch_norm(
        tf.reshape(x, tf.stack([1, rows, x.shape[-1], 1])), tf.fill([rows], 1.0), tf.fill([rows], 0.0),
        epsilon=epsilon, data_format="NCHW")
    return tf.reshape(normalized, tf.shape(x)) * tf.cast(gamma, x.dtype) + tf.cast(beta, x.dtype)


def layer_norm_for_inference(x, plain, gamma, beta, epsilon, dtype):
    """Layer normalization over the last axis for inference: x [..., H] -> [..., H] in `dtype` (as `plain`'s).

    plain: x -> the same result with ordinary ops (Keras' layer); taken below FUSED_MIN_ROWS rows and inside a
      whole-step XLA compile (XLA fuses it anyway). At FUSED_MIN_ROWS rows and more: one fused op
      (`_layer_norm_as_fused_batch_norm`). The choice is a tf.cond on the row count, so one exported graph
      serves batch 1 and batch 64 each the faster way.
    """
    if in_whole_step_xla() or tf.as_dtype(dtype) not in (tf.float32, tf.bfloat16, tf.float16):  # FusedBatchNormV3's
        return plain(x)
    rows = tf.reduce_prod(tf.shape(x)[:-1])
    return tf.cond(rows >= FUSED_MIN_ROWS,
                   lambda: _layer_norm_as_fused_batch_norm(tf.cast(x, dtype), rows, gamma, beta, epsilon),
                   lambda: plain(x))
