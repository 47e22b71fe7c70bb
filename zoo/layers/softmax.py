"""The attention softmax of a training step: probs = dropout(softmax(scores * scale + bias)) in float32, cast to
the values' dtype, with a hand-written gradient.

Shape legend: B batch, N heads, T query length, S key length.

The plain ops make ~6 passes over [B, N, T, S] forward (cast to float32, bias add, softmax, cast, dropout
multiply) and ~6 backward (dropout multiply, cast, softmax's mul / sum / sub / mul, cast); here each direction is
one kernel, in the tier zoo/layers/tiers.py picks. Inference runs the plain ops (`MultiHeadAttention`), so
exports keep TF ops only.
"""

import tensorflow as tf

from zoo.layers import tiers
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


def _softmax_form(forward, backward):
    """The plain or island form; the scale enters as a tensor (one XLA program for every head size)."""

    def forward_(scores, *, bias, seed, threshold, dtype, scale):
        scale = tf.constant(scale, tf.float32)
        probs, p = forward(scores, bias, seed, threshold, dtype, scale)
        return probs, (p, scale, scores.dtype)

    def backward_(saved, dy, *, bias, seed, threshold, dtype, scale):
        p, scale, scores_dtype = saved
        return tf.cast(backward(p, seed, threshold, dy, scale), scores_dtype)

    return tiers.Form(forward_, backward_)


def _native_forward(scores, *, bias, seed, threshold, dtype, scale):
    """ZooAttentionSoftmax: the same maths and mask in one pass (probs in the scores' dtype)."""
    probs, p = tiers.native_library().zoo_attention_softmax(scores, bias, seed, threshold=threshold, scale=scale)
    return probs, (p, scores.dtype)


def _native_backward(saved, dy, *, bias, seed, threshold, dtype, scale):
    p, scores_dtype = saved
    return tiers.native_library().zoo_attention_softmax_grad(p, tf.cast(dy, scores_dtype), seed,
                                                             threshold=threshold, scale=scale)


attention_softmax = tiers.TieredOp(
    "attention_softmax",
    native=tiers.Form(_native_forward, _native_backward),
    xla=_softmax_form(_forward_xla, _backward_xla),
    plain=_softmax_form(_forward, _backward),
)


def attention_softmax_for_training(scores, bias, dropout_seed=None, dropout_threshold=0, dtype=None, scale=1.0):
    """dropout(softmax(scores * scale + bias)) in float32, cast to `dtype`; hand-written gradient.

    Args:
      scores: float [B, N, T, S] (bf16 under mixed precision), the unscaled query-key products.
      bias: float32 additive mask broadcastable to scores (0 where attention is allowed, -1e9 elsewhere).
      dropout_seed: None (no dropout) or the int32 [2] seed of `Dropout.next_seed`; the mask is
        `zoo.layers.dropout.keep_scale`, computed inside the forward kernel and again inside the backward one.
      dropout_threshold: `Dropout.threshold` (round(rate * 65536)).
      dtype: the probabilities' dtype (the values'); defaults to scores'.
      scale: python float, 1 / sqrt(head dim), applied in float32 inside the kernels.

    Returns:
      [B, N, T, S] probabilities of `dtype`. The gradient flows to scores only:
      scale * p * (g - sum(g * p)) with g = dy * mask, p the float32 softmax.
    """
    dtype = tf.as_dtype(dtype or scores.dtype)
    threshold = int(dropout_threshold) if dropout_seed is not None else 0
    seed = dropout_seed if threshold else tf.zeros([2], tf.int32)
    if threshold:
        check_size(scores)
    return attention_softmax(scores, bias=tf.cast(bias, tf.float32), seed=seed, threshold=threshold, dtype=dtype,
                             scale=float(scale), native_applies=dtype == scores.dtype and scores.shape.rank == 4)
