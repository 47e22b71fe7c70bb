"""`ElmoTokenEncoder`: ELMo's context-free token representation from character ids (bilm-tf
`_build_word_char_embeddings`).

Shape legend: B batch, T words, C characters per word, E char embedding width, F CNN channels (sum of the filter
counts), P projection width.

char ids [B, T, C] -> embedding [B, T, C, E] -> per filter (w, n): valid conv1d over the C characters + bias,
max over time, THEN the activation (bilm-tf's order) -> concat [B, T, F] -> highway layers
`y = g * relu(x W_t + b_t) + (1 - g) * x`, `g = sigmoid(x W_carry + b_carry)` (b_carry starts at -2, so layers
start close to the identity) -> linear projection to P (only when F != P, as bilm-tf).
"""

import math

import keras
import tensorflow as tf

from zoo.layers import TokenEmbedding
from zoo.layers.dense import Dense


@keras.saving.register_keras_serializable(package="zoo.elmo")
class CharConvMaxPool(keras.layers.Layer):
    """One valid conv1d of width w over each word's characters, max over time, then the activation.

    Call: float [N, C, E] -> [N, n]. Weights `kernel` [w, E, n], `bias` [n] (bilm-tf `W_cnn_i` [1, w, E, n], `b_cnn_i`).
    """

    def __init__(self, width, num_filters, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.num_filters = int(num_filters)
        self.activation = activation

    def build(self, input_shape):
        embedding_dim = int(input_shape[-1])
        if self.activation == "relu":  # bilm-tf: Kim et al. 2015's +/- 0.05 for relu, glorot-normal for tanh
            init = keras.initializers.RandomUniform(-0.05, 0.05)
        else:
            init = keras.initializers.RandomNormal(stddev=math.sqrt(1.0 / (self.width * embedding_dim)))
        self.kernel = self.add_weight(name="kernel", shape=(self.width, embedding_dim, self.num_filters), initializer=init)
        self.bias = self.add_weight(name="bias", shape=(self.num_filters,), initializer="zeros")
        self.built = True

    def call(self, x):
        conv = tf.nn.conv1d(x, tf.cast(self.kernel, x.dtype), stride=1, padding="VALID")  # [N, C - w + 1, n]
        # An empty batch comes back with the input's channel count; the reshape puts n back (a no-op otherwise).
        conv = tf.reshape(conv, [tf.shape(x)[0], tf.shape(x)[1] - self.width + 1, self.num_filters])
        # The bias is the same at every position, so it is added after the max (one add on [N, n]).
        pooled = tf.reduce_max(conv, axis=1) + tf.cast(self.bias, x.dtype)  # [N, n]
        return keras.activations.get(self.activation)(pooled)

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, num_filters=self.num_filters, activation=self.activation)
        return config


@keras.saving.register_keras_serializable(package="zoo.elmo")
class Highway(keras.layers.Layer):
    """y = g * relu(x W_t + b_t) + (1 - g) * x, g = sigmoid(x W_carry + b_carry). Call: [N, F] -> [N, F].

    bilm-tf's names: `W_carry`/`b_carry` is `gate` (the transform gate, despite the name), `W_transform`/
    `b_transform` is `transform`.
    """

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        init = lambda: keras.initializers.RandomNormal(stddev=math.sqrt(1.0 / dim))  # noqa: E731  (bilm-tf's)
        self.transform = Dense(dim, kernel_initializer=init(), name="transform")
        self.gate = Dense(dim, kernel_initializer=init(), bias_initializer=keras.initializers.Constant(-2.0), name="gate")

    def build(self, input_shape=None):
        self.transform.build((None, self.dim))
        self.gate.build((None, self.dim))
        self.built = True

    def call(self, x, training=False):
        g = tf.sigmoid(self.gate(x, training=training))
        return g * tf.nn.relu(self.transform(x, training=training)) + (1.0 - g) * x

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim)
        return config


@keras.saving.register_keras_serializable(package="zoo.elmo")
class ElmoTokenEncoder(keras.layers.Layer):
    """Character ids -> token representation (see the module docstring).

    Args:
      num_characters: rows of the char embedding (262: bilm-tf's ids + 1, row 0 the mask).
      char_embedding_dim: E.
      filters: sequence of (width, count).
      num_highway: highway layers.
      projection_dim: P; the projection exists only when P != F (bilm-tf's `use_proj`).
      activation: "relu" or "tanh", after the max-pool.

    Call args:
      char_ids: int [B, T, C] (`zoo.elmo.chars.word_char_ids`); training: bool.

    Returns:
      float [B, T, P] in the compute dtype.

    Example:
      >>> import tensorflow as tf
      >>> from zoo.elmo.token_encoder import ElmoTokenEncoder
      >>> encoder = ElmoTokenEncoder(262, 4, ((1, 4), (2, 8)), num_highway=1, projection_dim=8)
      >>> encoder(tf.ones([2, 3, 50], tf.int32)).shape
      TensorShape([2, 3, 8])
    """

    def __init__(self, num_characters, char_embedding_dim, filters, num_highway, projection_dim, activation="relu",
                 **kwargs):
        super().__init__(**kwargs)
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh' (bilm-tf's), got {activation!r}.")
        self.num_characters = int(num_characters)
        self.char_embedding_dim = int(char_embedding_dim)
        self.filters = tuple((int(w), int(n)) for w, n in filters)
        self.num_highway = int(num_highway)
        self.projection_dim = int(projection_dim)
        self.activation = activation
        self.num_filters = sum(n for _, n in self.filters)
        self.char_embedding = TokenEmbedding(num_characters, char_embedding_dim,
                                             keras.initializers.RandomUniform(-1.0, 1.0), name="char_embedding")
        self.convolutions = [CharConvMaxPool(w, n, activation, name=f"conv_{i}") for i, (w, n) in enumerate(self.filters)]
        self.highways = [Highway(self.num_filters, name=f"highway_{i}") for i in range(num_highway)]
        # Named attributes too: tf.train.Checkpoint does not see layers that sit only in a Python list.
        for i, conv in enumerate(self.convolutions):
            setattr(self, f"conv_{i}", conv)
        for i, highway in enumerate(self.highways):
            setattr(self, f"highway_{i}", highway)
        self.projection = None
        if self.projection_dim != self.num_filters:
            self.projection = Dense(projection_dim, name="projection",
                                    kernel_initializer=keras.initializers.RandomNormal(stddev=math.sqrt(1.0 / self.num_filters)))

    def build(self, input_shape=None):
        self.char_embedding.build()
        for conv in self.convolutions:
            conv.build((None, None, self.char_embedding_dim))
        for highway in self.highways:
            highway.build()
        if self.projection is not None:
            self.projection.build((None, self.num_filters))
        self.built = True

    def call(self, char_ids, training=False):
        char_ids = tf.cast(char_ids, tf.int32)
        shape = tf.shape(char_ids)  # [B, T, C]
        chars = self.char_embedding(tf.reshape(char_ids, [-1, shape[2]]))  # [B*T, C, E]
        x = tf.concat([conv(chars) for conv in self.convolutions], axis=-1)  # [B*T, F]
        for highway in self.highways:
            x = highway(x, training=training)
        if self.projection is not None:
            x = self.projection(x, training=training)  # [B*T, P]
        x = tf.reshape(x, tf.concat([shape[:2], [self.projection_dim]], axis=0))  # [B, T, P]
        if char_ids.shape.rank == 3:
            x = tf.ensure_shape(x, [char_ids.shape[0], char_ids.shape[1], self.projection_dim])
        return x

    def get_config(self):
        config = super().get_config()
        config.update(num_characters=self.num_characters, char_embedding_dim=self.char_embedding_dim,
                      filters=[list(f) for f in self.filters], num_highway=self.num_highway,
                      projection_dim=self.projection_dim, activation=self.activation)
        return config
