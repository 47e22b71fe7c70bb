"""Layer normalization over the last axis: y = (x - mean) / sqrt(var + epsilon) * gamma + beta.

Shape legend: H the normalized (last) axis; statistics per row of the leading axes.

Training (`layer_norm_for_training`, and `LayerNormalization.add_and_normalize` for a post-LN residual
connection) runs one kernel forward (x in, float32 statistics, y out in x's dtype, the per-row mean and 1/std
kept) and one backward that recomputes x_hat from x and those statistics, in the tier zoo/layers/tiers.py picks.
In bf16, dbeta is the float32-accumulated sum of dy rounded once; in the island and plain forms dgamma sums the
bf16-rounded products dy * x_hat (as a mixed-precision matmul's kernel gradient sums bf16 inputs) by a ones-vector
matmul (zoo/layers/reductions.py) and rounds once, the native kernel sums float32 products; float32 stays
float32. Inference (`layer_norm_for_inference`) takes oneDNN's fused layer norm on batches of FUSED_MIN_ROWS rows
and more, Keras' own ops below that; every configuration other than BERT's / GPT's (last axis, scale and centre,
no RMS scaling) runs Keras' own code. Exports stay plain TF ops.
"""

import keras
import tensorflow as tf

from zoo.layers import tiers
from zoo.layers.dropout import apply_keep_scale, apply_keep_scale_xla, check_size
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
    float32 accumulation), outside the island: XLA:CPU's column reductions are slow.
    """
    x_hat = (tf.cast(x, tf.float32) - mean) * inv_std
    dyf = tf.cast(dy, tf.float32)
    g = dyf * gamma
    dx = inv_std * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                    - x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True))
    return tf.cast(dx, x.dtype), tf.cast(dyf * x_hat, x.dtype)


_forward_xla = xla_island(_forward)
_backward_xla = xla_island(_backward)


def _gradients(backward, x, mean, inv_std, gamma, dy):
    """(dx, dgamma, dbeta) from the row-wise `backward` and float32-accumulated column sums."""
    dx, dy_x_hat = backward(x, mean, inv_std, gamma, dy)
    return dx, tf.cast(column_sum(dy_x_hat), tf.float32), tf.cast(column_sum(dy), tf.float32)


def _layer_norm_form(forward, backward):
    """The plain or island form; epsilon enters as a tensor (one XLA program for every epsilon)."""

    def forward_(x, gamma, beta, *, epsilon):
        y, mean, inv_std = forward(x, gamma, beta, tf.constant(epsilon, tf.float32))
        return y, (x, mean, inv_std, gamma)

    return tiers.Form(forward_, lambda saved, dy, *, epsilon: _gradients(backward, *saved, dy))


def _dropout_add_layer_norm_form(mask, forward, backward):
    """LN(x + mask(branch)) by the dropout and layer norm forms (mask(t, seed, threshold) -> t * keep_scale)."""

    def forward_(branch, x, gamma, beta, *, seed, threshold, epsilon):
        total = x + (mask(branch, seed, threshold) if threshold else branch)
        y, mean, inv_std = forward(total, gamma, beta, tf.constant(epsilon, tf.float32))
        return y, (total, mean, inv_std, gamma)

    def backward_(saved, dy, *, seed, threshold, epsilon):
        dtotal, dgamma, dbeta = _gradients(backward, *saved, dy)
        return (mask(dtotal, seed, threshold) if threshold else dtotal), dtotal, dgamma, dbeta

    return tiers.Form(forward_, backward_)


def _native_float32_parameters(*inputs, **attrs):
    """The native kernels read gamma and beta (the last two inputs) in float32."""
    return (*inputs[:-2], tf.cast(inputs[-2], tf.float32), tf.cast(inputs[-1], tf.float32))


def _native_layer_norm_forward(x, gamma, beta, *, epsilon):
    y, mean, inv_std = tiers.native_library().zoo_layer_norm(x, gamma, beta, epsilon=float(epsilon))
    return y, (x, mean, inv_std, gamma)


def _native_layer_norm_backward(saved, dy, **attrs):
    """ZooLayerNormGrad: dx, dgamma and dbeta (float32 sums inside the kernel)."""
    x, mean, inv_std, gamma = saved
    return tiers.native_library().zoo_layer_norm_grad(x, mean, inv_std, gamma, tf.cast(dy, x.dtype))


def _native_dropout_add_layer_norm_forward(branch, x, gamma, beta, *, seed, threshold, epsilon):
    """ZooDropoutAddLayerNorm: the mask, the residual add and the layer norm in one pass."""
    y, total, mean, inv_std = tiers.native_library().zoo_dropout_add_layer_norm(
        branch, x, gamma, beta, seed, threshold=threshold, epsilon=float(epsilon))
    return y, (total, mean, inv_std, gamma)


def _native_dropout_add_layer_norm_backward(saved, dy, *, seed, threshold, epsilon):
    dtotal, dgamma, dbeta = _native_layer_norm_backward(saved, dy)
    dbranch = tiers.native_library().zoo_dropout(dtotal, seed, threshold=threshold) if threshold else dtotal
    return dbranch, dtotal, dgamma, dbeta


layer_norm = tiers.TieredOp(
    "layer_norm",
    native=tiers.Form(_native_layer_norm_forward, _native_layer_norm_backward, _native_float32_parameters),
    xla=_layer_norm_form(_forward_xla, _backward_xla),
    plain=_layer_norm_form(_forward, _backward),
)

# Inputs (branch, x, gamma, beta) -> LN(x + dropout(branch)); the gradient of x is the total's.
dropout_add_layer_norm = tiers.TieredOp(
    "dropout_add_layer_norm",
    native=tiers.Form(_native_dropout_add_layer_norm_forward, _native_dropout_add_layer_norm_backward,
                      _native_float32_parameters),
    xla=_dropout_add_layer_norm_form(apply_keep_scale_xla, _forward_xla, _backward_xla),
    plain=_dropout_add_layer_norm_form(apply_keep_scale, _forward, _backward),
)


def layer_norm_for_training(x, gamma, beta, epsilon):
    """Layer normalization over the last axis with a hand-written gradient (one kernel each way).

    Args:
      x: float [..., H] (bf16 under mixed precision); statistics are computed in float32.
      gamma, beta: float32 [H].
      epsilon: python float added to the variance.

    Returns:
      [..., H] in x's dtype: (x - mean) / sqrt(var + epsilon) * gamma + beta. Gradients: dx through the
      recomputed x_hat; dgamma = sum(dy * x_hat), dbeta = sum(dy) over the rows, accumulated in float32.
    """
    return layer_norm(x, gamma, beta, epsilon=float(epsilon))


@keras.saving.register_keras_serializable(package="zoo")
class LayerNormalization(keras.layers.LayerNormalization):
    """y = (x - mean) / sqrt(var + epsilon) * gamma + beta over the last axis: Keras' `LayerNormalization` (same
    weights, config and checkpoints), with `layer_norm_for_training` in training.

    Call args:
      inputs: float [..., H]; training: bool (True: `layer_norm_for_training`, where the configuration is
        BERT's / GPT's: last axis, scale and centre, no RMS scaling).

    Returns:
      [..., H] in the layer's compute dtype.
    """

    def _takes_training_kernels(self, inputs):
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        last = len(inputs.shape) - 1
        return self.center and self.scale and not self.rms_scaling and [a % (last + 1) for a in axes] == [last]

    def add_and_normalize(self, x, branch, dropout, training=False):
        """`self(x + dropout(branch))`: a post-LN Transformer's residual connection.

        In training one kernel each way computes the dropout (the layer's mask and seed), the add and the
        normalization (the native kernel in one pass; `dropout_add_layer_norm`).

        Args:
          x: float [..., H], the residual; branch: float [..., H]; dropout: the branch's `zoo.layers.Dropout`.

        Returns:
          [..., H] in the layer's compute dtype.
        """
        if not (training and self._takes_training_kernels(x)):
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
        return dropout_add_layer_norm(branch, x, gamma, beta, seed=seed, threshold=threshold,
                                      epsilon=float(self.epsilon))

    def call(self, inputs, training=False):
        if not self._takes_training_kernels(inputs):
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
    `_MklLayerNorm` (one pass, float32 statistics). Without oneDNN the op runs as TF's own fused batch norm, with
    the same result.
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
