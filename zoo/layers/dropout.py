"""Dropout that draws 16 random bits per element instead of a float, its mask made by one XLA kernel.

Shape legend: any shape.

Keras' dropout draws one float per element with Philox (about 1/6 of a BERT-base training step on a CPU, with
the attention-probability masks [B, N, T, T] the largest). Here one 32-bit Philox draw serves two elements: an
element is kept when its 16 bits are >= round(rate * 65536), i.e. with probability 1 - rate to within 2^-17,
and kept values are scaled by the exact inverse of that probability, so the expectation is unchanged.
The mask (draw, split, compare, scale) is one XLA island (zoo/layers/islands.py) in the non-XLA step: 0.6x the
time of the same TensorFlow ops at [32, 4, 128, 128] and [16, 12, 128, 128] (ad hoc, on a 2-core CPU).
"""

import keras
import tensorflow as tf

from zoo.layers.islands import xla_island


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
        mask = self.scaled_keep_mask(x, training)
        return x if mask is None else x * mask

    def scaled_keep_mask(self, x, training=False):
        """The mask `call` multiplies x by (x's shape and dtype: 0 or 1 / keep probability), or None for identity.

        For callers that fuse the multiply into a kernel of their own (the attention softmax).
        """
        if not training or self.threshold == 0:
            return None
        # Stateless ops take an int32 seed pair; Keras' state may be int64 (as Keras' TF backend folds it).
        seed = tf.cast(tf.math.floormod(tf.cast(self.seed_generator.next(), tf.int64), 2**31 - 1), tf.int32)
        return tf.ensure_shape(_scaled_keep_mask(tf.shape(x), seed, self.threshold, x.dtype), x.shape)  # XLA drops static dims

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@xla_island
def _scaled_keep_mask(shape, seed, threshold, dtype):
    """[shape] of dtype: 65536 / (65536 - threshold) where an element's 16 random bits are >= threshold, else 0.

    XLA takes `shape` as a compile-time constant (one program per shape, as a static-shape step has).
    """
    count = tf.reduce_prod(shape)
    bits = tf.random.stateless_uniform([(count + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox")
    limit = tf.constant(threshold, tf.uint32)
    # The low then the high 16 bits of each draw (shifts: XLA's uint32 -> uint16 bitcast is slow on CPUs).
    halves = tf.stack([tf.bitwise.bitwise_and(bits, 0xFFFF) >= limit, tf.bitwise.right_shift(bits, 16) >= limit], 1)
    keep = tf.reshape(tf.reshape(halves, [-1])[:count], shape)
    scale = 65536.0 / (65536 - threshold)
    return tf.where(keep, tf.constant(scale, dtype), tf.constant(0.0, dtype))
