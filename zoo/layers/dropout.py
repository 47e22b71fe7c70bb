"""Dropout whose mask is a keyed hash of each element's index, computed inside the XLA island that applies it.

Shape legend: any shape.

Keras' dropout draws one float per element with Philox, stores the mask and multiplies twice (forward and
backward), each a separate pass. Here an element's 16 random bits are the high half of a 32-bit keyed hash of its
flat index (two rounds of murmur3's finalizer, `_mix32`, under two keys derived from the layer's seed pair), so:
  * the mask is computed inside the same loop that applies it (`x * mask`, one XLA island), and the backward
    island recomputes it from the seed instead of reading a stored mask (nothing [B, N, T, T]-sized is kept);
  * an element is kept when its 16 bits are >= round(rate * 65536), i.e. with probability 1 - rate to within
    2^-17, and kept values are scaled by the exact inverse of that probability, so the expectation is unchanged.
Why not Philox: XLA's CPU Philox ran at ~2 ns per element (a [2048, 768] bf16 mask 3.0 ms plus 1.4 ms for TF's
bf16 multiply, ad hoc on the AMX Xeon), and a hand-written Philox-4x32 in XLA is recomputed once per output word
by XLA's fusion; the hash applies the same dropout in 0.9 ms. The keys enter after a nonlinear round, so two
layers' or two steps' masks are not shifted copies of each other (tests/test_layers_fast_paths.py checks the keep
rate, neighbour and cross-seed correlations). The attention softmax islands (zoo/layers/softmax.py) use the same
`keep_scale` for the attention-probability dropout. Under a multi-replica strategy each replica folds its id
into the seed (`Dropout.next_seed`), so replicas do not repeat each other's masks.
"""

import keras
import tensorflow as tf

from zoo.layers import native
from zoo.layers.islands import xla_island

_U32 = tf.uint32


def _mix32(h):
    """murmur3's 32-bit finalizer: a bijection of uint32 with full avalanche (each input bit flips each output
    bit with probability ~1/2)."""
    for shift, multiplier in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(shift, _U32))) * tf.constant(multiplier, _U32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, _U32)))


def keep_scale(shape, seed, threshold, dtype):
    """[shape] of dtype: 65536 / (65536 - threshold) where an element's 16 hash bits are >= threshold, else 0.

    Plain TF ops, meant to be traced inside an XLA island next to their consumer.

    Args:
      shape: int32 shape (a compile-time constant in an island: one program per shape).
      seed: int32 [2], the layer's seed for this call.
      threshold: python int in [0, 65536), round(rate * 65536).
      dtype: the mask's dtype.
    """
    words = tf.bitcast(seed, _U32)
    key_0 = _mix32(tf.bitwise.bitwise_xor(words[0], _mix32(words[1] + tf.constant(0x9E3779B9, _U32))))
    key_1 = _mix32(key_0 + tf.constant(0x7F4A7C15, _U32))
    index = tf.bitcast(tf.reshape(tf.range(tf.reduce_prod(shape)), shape), _U32)  # int32: < 2^31 elements
    bits = tf.bitwise.right_shift(_mix32(_mix32(tf.bitwise.bitwise_xor(index, key_0)) + key_1), tf.constant(16, _U32))
    scale = 65536.0 / (65536 - threshold)
    return tf.where(bits >= tf.constant(threshold, _U32), tf.constant(scale, dtype), tf.constant(0.0, dtype))


@xla_island
def _apply_keep_scale(x, seed, threshold):
    """x * keep_scale(x's shape): the forward of dropout, and (on dy, same seed) its gradient."""
    return x * keep_scale(tf.shape(x), seed, threshold, x.dtype)


def check_size(x):
    """Raises ValueError when x has 2^31 elements or more (the hash counts elements in int32)."""
    count = x.shape.num_elements()
    if count is not None and count >= 2**31:
        raise ValueError(f"Dropout on {count} elements: at most 2^31 - 1 per call; split the tensor.")


@keras.saving.register_keras_serializable(package="zoo")
class Dropout(keras.layers.Layer):
    """Inverted dropout with a Keras `SeedGenerator` (its state is checkpointed with the model).

    Args:
      rate: fraction of elements zeroed during training, in [0, 1).
      seed: optional int seed of the generator.

    Call args:
      x: float tensor; training: bool (identity when False or rate == 0).

    Returns:
      a tensor of x's shape and dtype.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.seed = seed
        self.threshold = int(round(self.rate * 65536))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, x, training=False):
        seed = self.next_seed(training)
        if seed is None:
            return x
        check_size(x)
        threshold = self.threshold
        library = native.layer_ops(x.dtype)
        if library is not None:  # the same mask from the native kernel (zoo/kernels/layer_ops.cc)
            apply = lambda t: library.zoo_dropout(t, seed, threshold=threshold)  # noqa: E731
        else:  # the XLA island, which drops static dims
            apply = lambda t: tf.ensure_shape(_apply_keep_scale(t, seed, threshold), t.shape)  # noqa: E731

        @tf.custom_gradient
        def dropout(x):
            # The gradient is the same mask, recomputed from the seed.
            return apply(x), lambda dy: apply(tf.cast(dy, x.dtype))

        return dropout(x)

    def next_seed(self, training=False):
        """The int32 [2] seed of this call's mask (advancing the generator), or None when dropout is off.

        For callers that apply the mask inside a kernel of their own (`keep_scale`; the attention softmax).
        """
        if not training or self.threshold == 0:
            return None
        # Stateless ops take an int32 seed pair; Keras' state may be int64 (as Keras' TF backend folds it).
        seed = tf.math.floormod(tf.cast(self.seed_generator.next(), tf.int64), 2**31 - 1)
        # The generator's state is mirrored across replicas: fold the replica id into the layer's word so that
        # replicas (each with its own slice of the global batch) draw different masks, as one device would.
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
            seed = tf.stack([tf.math.floormod(seed[0] + replica * 1_000_003, 2**31 - 1), seed[1]])
        return tf.cast(seed, tf.int32)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
