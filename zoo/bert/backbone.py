"""BertBackbone: token + position + segment embeddings, LayerNorm, dropout, post-LN Transformer stack, pooler.

Shape legend: B batch, T sequence length, H hidden, L layers.
"""

import keras
from keras import ops

from zoo.backbone import Backbone
from zoo.bert.config import BertConfig
from zoo.layers import Dropout, LayerNormalization, PositionEmbedding, TokenEmbedding, TransformerBlock, make_attention_mask


@keras.saving.register_keras_serializable(package="zoo.bert")
class BertBackbone(Backbone):
    """The BERT encoder. Constructor arguments are the fields of `BertConfig`.

    Call args:
      inputs: dict with `token_ids` int [B, T], `segment_ids` int [B, T], `padding_mask` int/bool [B, T].
      training: bool (dropout).

    Returns:
      dict:
        `sequence_output` [B, T, H]: the last layer;
        `pooled_output` [B, H]: tanh(dense([CLS] of the last layer)), the NSP/classification feature;
        `embedding_output` [B, T, H]: the normalised input embeddings (layer 0);
        `encoder_outputs`: list of L tensors [B, T, H], every block's output (feature-based use).

    Example:
      >>> import tensorflow as tf
      >>> from zoo.bert import BertBackbone
      >>> backbone = BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64)
      >>> ids = tf.constant([[2, 17, 42, 3, 0]])
      >>> out = backbone({"token_ids": ids, "segment_ids": tf.zeros_like(ids), "padding_mask": ids > 0})
      >>> out["sequence_output"].shape
      TensorShape([1, 5, 32])
    """

    config_class = BertConfig

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length
        self.num_segments = num_segments
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        init = lambda: keras.initializers.TruncatedNormal(stddev=initializer_range)  # noqa: E731
        self.token_embedding = TokenEmbedding(vocabulary_size, hidden_dim, init(), name="token_embedding")
        self.position_embedding = PositionEmbedding(max_sequence_length, hidden_dim, init(), name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(num_segments, hidden_dim, embeddings_initializer=init(), name="segment_embedding")
        self.embeddings_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="embeddings_layer_norm")
        self.embeddings_dropout = Dropout(dropout)
        self.blocks = [
            TransformerBlock(
                num_heads,
                hidden_dim,
                intermediate_dim,
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=init(),
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        # tf.train.Checkpoint does not see into Keras' tracked lists: name each block as an attribute too, so
        # checkpoints and SavedModels hold them (as transformer_layer_i).
        for i, block in enumerate(self.blocks):
            setattr(self, f"transformer_layer_{i}", block)
        self.pooler = keras.layers.Dense(hidden_dim, activation="tanh", kernel_initializer=init(), name="pooler")

    def build_weights(self):
        shape = (None, None, self.hidden_dim)
        self.token_embedding.build()
        self.position_embedding.build()
        self.segment_embedding.build((None, None))
        self.embeddings_norm.build(shape)
        for block in self.blocks:
            block.build(shape)
        self.pooler.build((None, self.hidden_dim))

    def call(self, inputs, training=False):
        token_ids = ops.cast(inputs["token_ids"], "int32")
        segment_ids = ops.cast(inputs["segment_ids"], "int32")
        x = self.token_embedding(token_ids)  # [B, T, H]
        x = x + self.position_embedding(x)[None] + self.segment_embedding(segment_ids)
        x = self.embeddings_dropout(self.embeddings_norm(x, training=training), training=training)
        embedding_output = x
        mask = make_attention_mask(inputs["padding_mask"])  # [B, 1, 1, T]
        encoder_outputs = []
        for block in self.blocks:
            x = block(x, attention_mask=mask, training=training)
            encoder_outputs.append(x)
        pooled = self.pooler(x[:, 0, :])  # [B, H] from [CLS]
        return {
            "sequence_output": x,
            "pooled_output": pooled,
            "embedding_output": embedding_output,
            "encoder_outputs": encoder_outputs,
        }
