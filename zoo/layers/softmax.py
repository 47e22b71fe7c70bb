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


def _forward(scores, bias, seed, threshold, dtype):
    """scores [B, N, T, S], bias f32 broadcastable -> (probs of dtype, dropped out; the float32 softmax)."""
    p = tf.nn.softmax(tf.cast(scores, tf.float32) + bias, axis=-1)  # float32: bf16 rows of exponentials lose mass
    probs = tf.cast(p, dtype)
    return (probs * keep_scale(tf.shape(scores), seed, threshold, dtype) if threshold else probs), p


def _backward(p, seed, threshold, dy):
    """The gradient with respect to the scores: p * (g - sum(g * p)), g = dy * keep mask in float32."""
    g = tf.cast(dy * keep_scale(tf.shape(dy), seed, threshold, dy.dtype) if threshold else dy, tf.float32)
    return tf.cast(p * (g - tf.reduce_sum(g * p, axis=-1, keepdims=True)), dy.dtype)


_forward_xla = xla_island(_forward)
_backward_xla = xla_island(_backward)


def attention_softmax_for_training(scores, bias, dropout_seed=None, dropout_threshold=0, dtype=None):
    """softmax(scores + bias) in float32, cast to `dtype`, dropped out; hand-written gradient.

    Args:
      scores: float [B, N, T, S] (bf16 under mixed precision).
      bias: float32 additive mask broadcastable to scores (0 where attention is allowed, -1e9 elsewhere).
      dropout_seed: None (no dropout) or the int32 [2] seed of `Dropout.next_seed`; the mask is
        `zoo.layers.dropout.keep_scale`, computed inside the forward island and again inside the backward one.
      dropout_threshold: `Dropout.threshold` (round(rate * 65536)).
      dtype: the probabilities' dtype (the values'); defaults to scores'.

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

        @tf.custom_gradient
        def native_softmax(scores):
            probs, p = library.zoo_attention_softmax(scores, bias, seed, threshold=threshold)
            return probs, lambda dy: library.zoo_attention_softmax_grad(p, tf.cast(dy, scores.dtype), seed,
                                                                       threshold=threshold)

        return tf.ensure_shape(native_softmax(scores), scores.shape)

    @tf.custom_gradient
    def softmax(scores):
        probs, p = _forward_xla(scores, bias, seed, threshold, dtype)
        return probs, lambda dy: tf.cast(_backward_xla(p, seed, threshold, dy), scores.dtype)

    return tf.ensure_shape(softmax(scores), scores.shape)  # XLA outputs lose static dims
