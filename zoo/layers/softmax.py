"""The attention softmax of a training step (mask bias, float32 softmax, cast, dropout) as two XLA islands.

Shape legend: B batch, N heads, T query length, S key length.

The plain ops make ~6 passes over [B, N, T, S] forward (cast to float32, bias add, softmax, cast, dropout
multiply) and ~6 backward (dropout multiply, cast, softmax's mul / sum / sub / mul, cast); each island is one
loop (see zoo/layers/islands.py). Inference runs the plain ops (`MultiHeadAttention`), so exports keep TF ops only.
"""

import tensorflow as tf

from zoo.layers.islands import xla_island


def _forward(scores, bias, keep_mask):
    """scores [B, N, T, S], bias f32 broadcastable, keep_mask like scores or a scalar 1 -> (probs, f32 softmax)."""
    p = tf.nn.softmax(tf.cast(scores, tf.float32) + bias, axis=-1)  # float32: bf16 rows of exponentials lose mass
    return tf.cast(p, keep_mask.dtype) * keep_mask, p


def _backward(p, keep_mask, dy):
    """The gradient with respect to the scores: p * (g - sum(g * p)), g = dy * keep_mask in float32."""
    g = tf.cast(dy * keep_mask, tf.float32)
    return tf.cast(p * (g - tf.reduce_sum(g * p, axis=-1, keepdims=True)), dy.dtype)


_forward_xla = xla_island(_forward)
_backward_xla = xla_island(_backward)


def attention_softmax_for_training(scores, bias, keep_mask=None, dtype=None):
    """softmax(scores + bias) in float32, cast to `dtype`, times the dropout keep_mask; hand-written gradient.

    Args:
      scores: float [B, N, T, S] (bf16 under mixed precision).
      bias: float32 additive mask broadcastable to scores (0 where attention is allowed, -1e9 elsewhere).
      keep_mask: None or [B, N, T, S] of `dtype`: `Dropout.scaled_keep_mask` (0 or 1 / keep probability).
      dtype: the probabilities' dtype (the values'); defaults to keep_mask's, else scores'.

    Returns:
      [B, N, T, S] probabilities of `dtype`, dropped out; the gradient flows to scores only.
    """
    dtype = tf.as_dtype(dtype or (keep_mask.dtype if keep_mask is not None else scores.dtype))
    if keep_mask is None:
        keep_mask = tf.ones([], dtype)
    bias = tf.cast(bias, tf.float32)

    @tf.custom_gradient
    def softmax(scores):
        probs, p = _forward_xla(scores, bias, keep_mask)
        return probs, lambda dy: tf.cast(_backward_xla(p, keep_mask, dy), scores.dtype)

    return tf.ensure_shape(softmax(scores), scores.shape)  # XLA outputs lose static dims
