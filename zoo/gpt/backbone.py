"""GPTBackbone: token + learned position embeddings, dropout, post-LN causal Transformer blocks, no final LayerNorm.

Shape legend: B batch, T sequence length, S cache length, H hidden, L layers, N heads, D head dim (H = N * D).
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.backbone import Backbone
from zoo.gpt.config import GPTConfig
from zoo.layers import Dropout, PositionEmbedding, TokenEmbedding, TransformerBlock, make_attention_mask


@keras.saving.register_keras_serializable(package="zoo.gpt")
class GPTBackbone(Backbone):
    """The GPT-1 decoder (openai/finetune-transformer-lm `model`): h0 = E[tokens] + P[positions], dropout, then L
    blocks `n = LN(x + attn(x)); h = LN(n + mlp(n))` with a causal mask. Constructor arguments are `GPTConfig`'s.

    Call args:
      inputs: dict with `token_ids` int [B, T] and `padding_mask` int/bool [B, T] (1 = real token).
      training: bool (dropout).

    Returns:
      dict: `sequence_output` [B, T, H] (the last block; the LM head and task heads read it),
        `embedding_output` [B, T, H] (layer 0), `encoder_outputs`: list of L tensors [B, T, H].

    Position i sees positions <= i only; padded keys are masked too, so left or right padding both work.

    Example:
      >>> import tensorflow as tf
      >>> from zoo.gpt import GPTBackbone
      >>> backbone = GPTBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64)
      >>> ids = tf.constant([[5, 17, 42, 0]])
      >>> backbone({"token_ids": ids, "padding_mask": ids > 0})["sequence_output"].shape
      TensorShape([1, 4, 32])
    """

    config_class = GPTConfig

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, dropout=0.1,
                 max_sequence_length=512, layer_norm_epsilon=1e-5, initializer_range=0.02, activation="gelu_tanh",
                 **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.activation = activation
        init = lambda: keras.initializers.RandomNormal(stddev=initializer_range)  # noqa: E731  (the original's N(0, 0.02))
        self.token_embedding = TokenEmbedding(vocabulary_size, hidden_dim, init(), name="token_embedding")
        self.position_embedding = PositionEmbedding(max_sequence_length, hidden_dim, init(), name="position_embedding")
        # The original drops elements of the embedding matrix; this drops them from the summed embeddings (as HF
        # does): the same rate, a fresh mask per position instead of per vocabulary row.
        self.embeddings_dropout = Dropout(dropout)
        self.blocks = [
            TransformerBlock(num_heads, hidden_dim, intermediate_dim, dropout=dropout, activation=activation,
                             layer_norm_epsilon=layer_norm_epsilon, kernel_initializer=init(), name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]
        for i, block in enumerate(self.blocks):  # named attributes, so checkpoints see every block
            setattr(self, f"transformer_layer_{i}", block)

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    def build_weights(self):
        self.token_embedding.build()
        self.position_embedding.build()
        for block in self.blocks:
            block.build((None, None, self.hidden_dim))

    def embed(self, token_ids, start=0, training=False):
        """int [B, T] at positions start .. start + T - 1 -> float [B, T, H], with embedding dropout."""
        x = self.token_embedding(ops.cast(token_ids, "int32"))
        x = x + self.position_embedding(x, start=start)[None]
        return self.embeddings_dropout(x, training=training)

    def call(self, inputs, training=False):
        x = self.embed(inputs["token_ids"], training=training)
        embedding_output = x
        mask = make_attention_mask(inputs["padding_mask"], causal=True)  # [B, 1, T, T]
        encoder_outputs = []
        for block in self.blocks:
            x = block(x, attention_mask=mask, training=training)
            encoder_outputs.append(x)
        return {"sequence_output": x, "embedding_output": embedding_output, "encoder_outputs": encoder_outputs}

    # ---- cached decoding (inference) -----------------------------------------------------------------------
    def empty_cache(self, batch_size, cache_length, dtype=None):
        """Zeros float [B, L, 2, N, S, D]: every block's keys and values of S positions."""
        return tf.zeros([batch_size, self.num_layers, 2, self.num_heads, cache_length, self.head_dim],
                        dtype or self.compute_dtype)

    def call_with_cache(self, token_ids, cache, cache_index):
        """Runs T new positions cache_index .. cache_index + T - 1 against the cache (inference only).

        Args:
          token_ids: int [B, T]; cache: float [B, L, 2, N, S, D] (`empty_cache`); cache_index: int32 scalar.

        Returns:
          (sequence_output float [B, T, H], the updated cache). Position cache_index + i attends to cache
          positions <= cache_index + i, so what the cache holds beyond them is never read.
        """
        x = self.embed(token_ids, start=cache_index)
        length, cache_length = tf.shape(token_ids)[1], tf.shape(cache)[4]
        query_positions = tf.cast(cache_index, tf.int32) + tf.range(length)
        mask = (tf.range(cache_length)[None, :] <= query_positions[:, None])[None, None]  # [1, 1, T, S]
        caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, attention_mask=mask, cache=cache[:, i], cache_index=cache_index)
            caches.append(layer_cache)
        return x, tf.stack(caches, axis=1)
