"""The attention softmax of a training step (mask bias, float32 softmax, cast, dropout) as two XLA islands.

Shape legend: B batch, N heads, T query length, S key length.

The plain ops make ~6 passes over [B, N, T, S] forward (cast to float32, bias add, softmax, cast, dropout
multiply) and ~6 backward (dropout multiply, cast, softmax's mul / sum / sub / mul, cast); each island is one
loop (see zoo/layers/islands.py). Inference runs the plain ops (`MultiHeadAttention`), so exports keep TF ops only.
"""

import tensorflow as tf

from zoo.layers import native
from zoo.layers.dropout import check_size, keep_scale
from zoo.layers.islands import xla_island


def _forward(scores, bias, seed, threshold, dtype, scale):
    """scores [B, N, T, S], bias f32 broadcastable, scale f32 [] -> (probs of dtype, dropped out; the float32
    softmax)."""
    p = tf.nn.softmax(tf.cast(scores, tf.float32) * scale + bias, axis=-1)  # float32: bf16 exponentials lose mass
    probs = tf.cast(p, dtype)
    return (probs * keep_scale(tf.shape(scores), seed, threshold, dtype) if threshold else probs), p


def _backward(p, seed, threshold, dy, scale):
    """The gradient with respect to the scores: scale * p * (g - sum(g * p)), g = dy * keep mask in float32."""
    g = tf.cast(dy * keep_scale(tf.shape(dy), seed, threshold, dy.dtype) if threshold else dy, tf.float32)
    return tf.cast(p * (g - tf.reduce_sum(g * p, axis=-1, keepdims=True)) * scale, dy.dtype)


_forward_xla = xla_island(_forward)
_backward_xla = xla_island(_backward)


def attention_softmax_for_training(scores, bias, dropout_seed=None, dropout_threshold=0, dtype=None, scale=1.0):
    """softmax(scores * scale + bias) in float32, cast to `dtype`, dropped out; hand-written gradient.

    Args:
      scores: float [B, N, T, S] (bf16 under mixed precision), the unscaled query-key products.
      bias: float32 additive mask broadcastable to scores (0 where attention is allowed, -1e9 elsewhere).
      dropout_seed: None (no dropout) or the int32 [2] seed of `Dropout.next_seed`; the mask is
        `zoo.layers.dropout.keep_scale`, computed inside the forward island and again inside the backward one.
      dropout_threshold: `Dropout.threshold` (round(rate * 65536)).
      dtype: the probabilities' dtype (the values'); defaults to scores'.
      scale: python float, 1 / sqrt(head dim): applied in float32 inside the kernels, not as a pass of its own
        over the queries (forward) and their gradient (backward).

    Returns:
      [B, N, T, S] probabilities of `dtype`; the gradient flows to scores only.
    """
    dtype = tf.as_dtype(dtype or scores.dtype)
    threshold = int(dropout_threshold) if dropout_seed is not None else 0
    seed = dropout_seed if threshold else tf.zeros([2], tf.int32)
    if threshold:
        check_size(scores)
    bias = tf.cast(bias, tf.float32)
    library = native.layer_ops(scores.dtype) if dtype == scores.dtype and scores.shape.rank == 4 else None
    if library is not None:  # zoo/kernels/layer_ops.cc: the same maths and mask in one native pass each way
        scale = float(scale)

        @tf.custom_gradient
        def native_softmax(scores):
            probs, p = library.zoo_attention_softmax(scores, bias, seed, threshold=threshold, scale=scale)
            return probs, lambda dy: library.zoo_attention_softmax_grad(p, tf.cast(dy, scores.dtype), seed,
                                                                       threshold=threshold, scale=scale)

        return tf.ensure_shape(native_softmax(scores), scores.shape)
    scale = tf.constant(scale, tf.float32)  # a tensor: one XLA program for every head size

    @tf.custom_gradient
    def softmax(scores):
        probs, p = _forward_xla(scores, bias, seed, threshold, dtype, scale)
        return probs, lambda dy: tf.cast(_backward_xla(p, seed, threshold, dy, scale), scores.dtype)

    return tf.ensure_shape(softmax(scores), scores.shape)  # XLA outputs lose static dims
