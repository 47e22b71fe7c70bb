"""Token and position embeddings.

Shape legend: B batch, T sequence length, H hidden, V vocabulary.
"""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class TokenEmbedding(keras.layers.Layer):
    """A [V, H] lookup table that can also project back onto the vocabulary (tied output embeddings).

    Call: int [B, T] -> float [B, T, H]. `reverse(x)`: float [..., H] -> logits [..., V] = x @ E^T.
    """

    def __init__(self, vocabulary_size, hidden_dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.hidden_dim),
            initializer=self.embeddings_initializer,
            autocast=False,  # cast by hand: only the gathered rows, and the table once for `reverse`
        )
        self.built = True

    def call(self, token_ids):
        # Gather, then cast: casting the [V, H] table first costs a pass over all of it (23M values at base).
        return ops.cast(ops.take(self.embeddings, token_ids, axis=0), self.compute_dtype)

    def reverse(self, x):
        # A 2-D MatMul with transpose_b: its gradient with respect to the table comes out as [V, H] directly
        # (x @ transpose(E) on [B, P, H] made a [H, V] gradient and then transposed it: 7.8M values at mini).
        kernel = ops.cast(self.embeddings, x.dtype)
        logits = tf.matmul(tf.reshape(x, [-1, self.hidden_dim]), kernel, transpose_b=True)  # [N, V]
        return ops.reshape(logits, tuple(ops.shape(x)[:-1]) + (self.vocabulary_size,))  # [..., V]

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="zoo")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions (BERT, GPT-1). Call: float [B, T, H] -> float [T, H] for positions 0..T-1."""

    def __init__(self, max_sequence_length, hidden_dim, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.max_sequence_length, self.hidden_dim), initializer=self.initializer
        )
        self.built = True

    def call(self, x, start=0):
        """float [B, T, ...] -> the rows of positions start .. start + T - 1, [T, H] (start: int or int32 scalar
        tensor, for cached decoding)."""
        length = ops.shape(x)[1]
        if isinstance(start, int) and start == 0:
            return ops.cast(self.embeddings[:length], self.compute_dtype)
        return ops.cast(tf.slice(self.embeddings, tf.stack([tf.cast(start, tf.int32), 0]), [length, -1]), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            max_sequence_length=self.max_sequence_length,
            hidden_dim=self.hidden_dim,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config
