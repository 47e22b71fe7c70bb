"""Inverted dropout whose mask is a keyed hash of each element's index.

Shape legend: any shape.

An element's 16 random bits are the high half of a 32-bit keyed hash of its flat index (two rounds of murmur3's
finalizer, `_mix32`, under two keys derived from the layer's seed pair). An element is kept when its 16 bits are
>= round(rate * 65536), i.e. with probability 1 - rate to within 2^-17, and kept values are scaled by the exact
inverse of that probability, so the expectation is unchanged (`keep_scale`). So:
  * the mask is computed inside the kernel that applies it, and the backward recomputes it from the seed instead
    of reading a stored mask (nothing [B, N, T, T]-sized is kept);
  * every tier (zoo/layers/tiers.py: native kernel, XLA island, plain ops) draws the same mask bit for bit;
  * the keys enter after a nonlinear round, so two layers' or two steps' masks are not shifted copies of each
    other (tests/test_layers_fast_paths.py checks the keep rate, neighbour and cross-seed correlations).
The attention softmax (zoo/layers/softmax.py) uses the same `keep_scale` for the attention-probability dropout.
Under a multi-replica strategy each replica folds its id into the seed (`Dropout.next_seed`), so replicas do not
repeat each other's masks. Why a hash and not Philox: benchmarks/RESULTS.md, "Kernel notes moved from docstrings".
"""

import keras
import tensorflow as tf

from zoo.layers import tiers
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

    Plain TF ops, meant to be traced inside the kernel of their consumer (an XLA island fuses them into its loop).

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


def apply_keep_scale(x, seed, threshold):
    """x * keep_scale(x's shape): the forward of dropout, and (on dy, same seed) its gradient."""
    return x * keep_scale(tf.shape(x), seed, threshold, x.dtype)


_apply_keep_scale = xla_island(apply_keep_scale)


def apply_keep_scale_xla(x, seed, threshold):
    """`apply_keep_scale` as an XLA island, with x's static shape (XLA's outputs lose static dims)."""
    return tf.ensure_shape(_apply_keep_scale(x, seed, threshold), x.shape)


def _mask_form(apply):
    """The dropout op's form given apply(t, seed, threshold) -> t * mask; the gradient is the same mask on dy."""

    def forward(x, *, seed, threshold):
        return apply(x, seed, threshold), x.dtype

    def backward(dtype, dy, *, seed, threshold):
        return apply(tf.cast(dy, dtype), seed, threshold)

    return tiers.Form(forward, backward)


# x -> x * keep_scale(x's shape, seed, threshold); the gradient is the same mask on dy.
dropout_mask = tiers.TieredOp(
    "dropout",
    native=_mask_form(lambda t, seed, threshold: tiers.native_library().zoo_dropout(t, seed, threshold=threshold)),
    xla=_mask_form(apply_keep_scale_xla),
    plain=_mask_form(apply_keep_scale),
)


def check_size(x):
    """Raises ValueError when x has 2^31 elements or more (the hash counts elements in int32)."""
    count = x.shape.num_elements()
    if count is not None and count >= 2**31:
        raise ValueError(f"Dropout on {count} elements: at most 2^31 - 1 per call; split the tensor.")


def replica_seed(seed_generator):
    """The next int32 [2] seed of a Keras `SeedGenerator` for stateless random ops, one per replica.

    The generator's state is a variable (checkpointed with the model, so a resumed run draws the same numbers);
    under a multi-replica strategy it is mirrored, so the replica id is folded in: replicas (each with its own
    slice of the global batch) draw different numbers, as one device would over the whole batch.
    """
    # Stateless ops take an int32 seed pair; Keras' state may be int64 (as Keras' TF backend folds it).
    seed = tf.math.floormod(tf.cast(seed_generator.next(), tf.int64), 2**31 - 1)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        seed = tf.stack([tf.math.floormod(seed[0] + replica * 1_000_003, 2**31 - 1), seed[1]])
    return tf.cast(seed, tf.int32)


@keras.saving.register_keras_serializable(package="zoo")
class Dropout(keras.layers.Layer):
    """Inverted dropout: x * keep_scale, the keyed-hash mask scaled by 1 / keep probability; its gradient is the
    same mask on dy. The seed comes from a Keras `SeedGenerator` (its state is checkpointed with the model).

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
        return dropout_mask(x, seed=seed, threshold=self.threshold)

    def next_seed(self, training=False):
        """The int32 [2] seed of this call's mask (advancing the generator), or None when dropout is off.

        For callers that apply the mask inside a kernel of their own (`keep_scale`; the attention softmax).
        """
        if not training or self.threshold == 0:
            return None
        return replica_seed(self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
