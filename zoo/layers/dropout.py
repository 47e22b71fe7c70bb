"""Dropout that draws 16 random bits per element instead of a float.

Shape legend: any shape.

Keras' dropout draws one float per element with Philox (about 1/6 of a BERT-base training step on a CPU, with
the attention-probability masks [B, N, T, T] the largest). Here one 32-bit Philox draw serves two elements: an
element is kept when its 16 bits are >= round(rate * 65536), i.e. with probability 1 - rate to within 2^-17,
and kept values are scaled by the exact inverse of that probability, so the expectation is unchanged.
"""

import keras
import tensorflow as tf


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
        if not training or self.threshold == 0:
            return x
        shape = tf.shape(x)
        count = tf.reduce_prod(shape)
        # Stateless ops take an int32 seed pair; Keras' state may be int64 (as Keras' TF backend folds it).
        seed = tf.cast(tf.math.floormod(tf.cast(self.seed_generator.next(), tf.int64), 2**31 - 1), tf.int32)
        bits = tf.random.stateless_uniform([(count + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
        halves = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:count]  # two 16-bit draws per 32-bit one
        keep = tf.reshape(halves >= tf.constant(self.threshold, tf.uint16), shape)
        scale = tf.constant(65536.0 / (65536 - self.threshold), x.dtype)
        return x * (tf.cast(keep, x.dtype) * scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
