"""Multi-head self-attention with padding and causal masks.

Shape legend: B batch, T sequence length, H hidden, N heads, D head dim (H = N * D).

One fused query/key/value projection (a single [H, 3H] matmul) instead of three: the same maths as the
papers, one GEMM launch instead of three, which matters on CPUs and small batches. Converters split or
join the kernel (columns are laid out [q | k | v], each head-major like the originals).
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.layers.dense import Dense
from zoo.layers.dropout import Dropout
from zoo.layers.islands import in_whole_step_xla
from zoo.layers.softmax import attention_softmax_for_training
from zoo.layers.transpose import transpose


def make_attention_mask(padding_mask, causal=False):
    """Builds a boolean attention mask.

    Args:
      padding_mask: [B, T] int or bool, 1/True for real tokens.
      causal: if True, position i attends only to positions <= i (GPT).

    Returns:
      bool [B, 1, T, T] (broadcast over heads): True where attention is allowed.
    """
    keys = ops.cast(padding_mask, "bool")[:, None, None, :]  # [B, 1, 1, T]
    if not causal:
        return keys
    length = ops.shape(padding_mask)[1]
    idx = ops.arange(length)
    causal_mask = idx[:, None] >= idx[None, :]  # [T, T]
    return ops.logical_and(keys, causal_mask[None, None, :, :])


def _update_cache(cache, update, index):
    """cache [B, 2, N, S, D] with update [B, 2, N, T, D] written at positions index .. index + T - 1.

    A TensorScatterUpdate of B*2*N*T rows of D (TF core, in TF Serving and XLA; DynamicUpdateSlice is XLA-only),
    which TF runs in place when the cache has no other reader, as in a decoding loop.
    """
    shape = tf.shape(update)
    b, c, n, t = (tf.range(shape[i]) for i in range(4))
    grid = tf.meshgrid(b, c, n, t + tf.cast(index, tf.int32), indexing="ij")  # 4 x [B, 2, N, T]
    return tf.tensor_scatter_nd_update(cache, tf.stack(grid, axis=-1), update)


SMALL_ATTENTION_MAX_MACS = 2**18  # B*N*T*S*D; above it oneDNN's kernels win (crossover ~1x32 tokens at N12 D32)


def _attention_onednn(query, key, value, bias, scale):
    """The batch form: `BatchMatMul * scale + bias` is oneDNN's fused `_MklFusedBatchMatMulV2` (no separate passes
    over [B, N, T, S] or [B, N, T, D]; the scale applied to the float32 accumulator, before any bf16 rounding).
    Adding 0 or -1e9 in bf16 is as exact as in float32 for the softmax. Softmax in float32: bf16 has too few
    mantissa bits for long rows of exponentials where the kernel does not compute in float32 inside (TF without
    oneDNN)."""
    scores = tf.linalg.matmul(query, key, adjoint_b=True) * scale + ops.cast(bias, query.dtype)
    probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), value.dtype)
    return ops.matmul(probs, value)


def _attention_eigen(query, key, value, bias, scale):
    """The small-request form, in float32 on TF's own (Eigen) kernels: oneDNN's batch matmul and softmax cost
    ~25-40 µs each in primitive setup even on a few kilobytes (at batch 1 x 8 tokens, 6 layers: ~0.9 of a ~4.1 ms
    request). TF's graph rewrite sends BatchMatMulV2 and Softmax to oneDNN but leaves BatchMatMulV3 and
    LogSoftmax to TF's own kernels (~3 µs each at that size)."""
    f32 = tf.float32
    scores = tf.raw_ops.BatchMatMulV3(x=tf.cast(query, f32), y=tf.cast(key, f32), adj_y=True, Tout=f32)
    probs = tf.exp(tf.nn.log_softmax(scores * tf.cast(scale, f32) + tf.cast(bias, f32), axis=-1))
    return tf.cast(tf.raw_ops.BatchMatMulV3(x=probs, y=tf.cast(value, f32), Tout=f32), value.dtype)


def attention_for_inference(query, key, value, bias, scale):
    """softmax(query key^T * scale + bias) value without dropout, each request size its faster way.

    Args:
      query: [B, N, T, D]; key, value: [B, N, S, D] (float32, bfloat16 or float16).
      bias: float additive mask broadcastable to [B, N, T, S] (0 allowed, -1e9 masked), or the scalar 0.
      scale: scalar of query's dtype.

    Returns:
      [B, N, T, D] of value's dtype. The softmax is computed in float32 in every form. A tf.cond picks the Eigen
      form (`_attention_eigen`) up to SMALL_ATTENTION_MAX_MACS multiply-adds per product and oneDNN's above it,
      so one exported graph serves batch 1 and batch 64 each the faster way; inside a whole-step XLA compile
      (jit exports) the plain ops, which XLA fuses itself.
    """
    if query.dtype == "float16":  # -1e9 overflows float16: scale first and mask in float32, as in training
        scores = tf.linalg.matmul(query * scale, key, adjoint_b=True)
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32") + bias, axis=-1), value.dtype)
        return ops.matmul(probs, value)
    if in_whole_step_xla():
        return _attention_onednn(query, key, value, bias, scale)
    macs = tf.reduce_prod(tf.shape(query, out_type=tf.int64)) * tf.shape(key, out_type=tf.int64)[2]  # no int32 overflow
    return tf.cond(macs <= SMALL_ATTENTION_MAX_MACS,
                   lambda: _attention_eigen(query, key, value, bias, scale),
                   lambda: _attention_onednn(query, key, value, bias, scale))


@keras.saving.register_keras_serializable(package="zoo")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product self-attention over N heads.

    Args:
      num_heads: N.
      hidden_dim: H; must be divisible by num_heads.
      dropout: dropout rate on the attention probabilities.
      kernel_initializer: initializer of the projections.

    Call args:
      x: float [B, T, H].
      attention_mask: bool broadcastable to [B, N, T, T], True = may attend (see `make_attention_mask`); with a
        cache, broadcastable to [B, N, T, S] over the cache's S positions.
      training: bool.
      cache: optional float [B, 2, N, S, D], the keys and values of S positions (cached decoding, inference
        only): x's T positions are written into it at `cache_index` and attend over all S of them.
      cache_index: int32 scalar, the position of x's first row in the cache.

    Returns:
      float [B, T, H]; with a cache, (float [B, T, H], the updated cache [B, 2, N, S, D]).
    """

    def __init__(self, num_heads, hidden_dim, dropout=0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.qkv = Dense(3 * hidden_dim, kernel_initializer=self.kernel_initializer, name="qkv")
        self.output_dense = Dense(hidden_dim, kernel_initializer=self.kernel_initializer, name="output")
        self.dropout_layer = Dropout(dropout)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.output_dense.build(input_shape[:-1] + (self.hidden_dim,))
        self.built = True

    def call(self, x, attention_mask=None, training=False, cache=None, cache_index=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        # Projections on [B*T, H] rows, so at inference each 2-D MatMul fuses with its bias add (see TransformerBlock).
        qkv = self.qkv(ops.reshape(x, (-1, self.hidden_dim)), training=training)  # [B*T, 3H]
        qkv = ops.reshape(qkv, (batch, length, 3, self.num_heads, self.head_dim))  # [B, T, 3, N, D]
        # unstack, not qkv[i]: the gradient of an unstack is one concatenation, that of three strided slices is
        # three zero-padded [3, B, N, T, D] tensors added up (a third of the non-matmul backward time at base).
        # Transposes in TF's own kernel, not oneDNN's (zoo.layers.transpose); the key's through adjoint_b.
        query, key, value = ops.unstack(transpose(qkv, (2, 0, 3, 1, 4), training), 3, axis=0)  # 3 x [B, N, T, D]
        scale = ops.cast(1.0 / self.head_dim**0.5, query.dtype)
        # An additive bias built on the small [B, 1, 1, T] mask (as google-research/bert): one add on the
        # scores, no select in the forward or backward pass.
        bias = 0.0 if attention_mask is None else ops.where(attention_mask, 0.0, -1e9)
        if cache is not None:
            if training:
                raise ValueError("MultiHeadAttention: a key/value cache is for inference (training=False).")
            kv = ops.cast(ops.stack([key, value], axis=1), cache.dtype)  # [B, 2, N, T, D]
            cache = _update_cache(cache, kv, cache_index)
            context = attention_for_inference(query, ops.cast(cache[:, 0], query.dtype), ops.cast(cache[:, 1], query.dtype),
                                              bias, scale)
            context = ops.reshape(transpose(context, (0, 2, 1, 3), False), (-1, self.hidden_dim))
            output = ops.reshape(self.output_dense(context, training=False), (batch, length, self.hidden_dim))
            return output, cache
        if training:
            # The scale is applied inside the softmax kernel (one pass less each way), except in float16, whose
            # unscaled products could overflow.
            softmax_scale = 1.0 if query.dtype == "float16" else 1.0 / self.head_dim**0.5
            if query.dtype == "float16":
                query = query * scale
            scores = tf.linalg.matmul(query, key, adjoint_b=True)  # [B, N, T, T]
            # Scale, softmax, cast and dropout in one kernel each way (zoo/layers/tiers.py); inference and
            # exports run `attention_for_inference`.
            probs = attention_softmax_for_training(scores, bias, self.dropout_layer.next_seed(training=True),
                                                   self.dropout_layer.threshold, dtype=value.dtype,
                                                   scale=softmax_scale)
            context = ops.matmul(probs, value)  # [B, N, T, D]
        else:
            context = attention_for_inference(query, key, value, bias, scale)
        context = ops.reshape(transpose(context, (0, 2, 1, 3), training), (-1, self.hidden_dim))  # [B*T, H]
        return ops.reshape(self.output_dense(context, training=training), (batch, length, self.hidden_dim))  # [B, T, H]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
