"""The post-LN Transformer block shared by BERT (bidirectional) and GPT-1 (causal): only the mask differs.

Shape legend: B batch, T sequence length, H hidden, F intermediate (feed-forward) dim.
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.layers.activations import gelu_for_inference, gelu_for_training, gelu_tanh_for_inference, gelu_tanh_for_training
from zoo.layers.attention import MultiHeadAttention
from zoo.layers.dense import Dense
from zoo.layers.dropout import Dropout
from zoo.layers.normalization import LayerNormalization


@keras.saving.register_keras_serializable(package="zoo")
class TransformerBlock(keras.layers.Layer):
    """x -> LN(x + Drop(Attn(x))) -> LN(h + Drop(FFN(h))), as in Vaswani et al., BERT and GPT-1.

    Args:
      num_heads: N attention heads.
      hidden_dim: H.
      intermediate_dim: F, the feed-forward width (4H in the papers).
      dropout: dropout on the residual branches and the attention probabilities.
      activation: feed-forward activation: "gelu", the exact erf GELU of BERT, or "gelu_tanh", the tanh form of
        GPT-1 (openai/finetune-transformer-lm); both take the fast training kernels. Any other Keras activation
        name runs as plain Keras.
      layer_norm_epsilon: 1e-12 in BERT, 1e-5 in GPT.
      kernel_initializer: initializer of every kernel (BERT and GPT: truncated normal, stddev 0.02).

    Call args:
      x: float [B, T, H]; attention_mask: bool broadcastable to [B, N, T, T]; training: bool.

    Returns:
      float [B, T, H].
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        activation="gelu",
        layer_norm_epsilon=1e-12,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        init = self.kernel_initializer
        self.attention = MultiHeadAttention(num_heads, hidden_dim, dropout, init, name="attention")
        self.attention_dropout = Dropout(dropout)
        self.attention_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="attention_layer_norm")
        # The activation is applied in `call`: training uses `gelu_for_training` (bias + GELU in one kernel each
        # way, zoo/layers/tiers.py), inference the form oneDNN fuses into the matmul (and that any TF Serving runs).
        forms = {"gelu": (gelu_for_training, gelu_for_inference), "gelu_tanh": (gelu_tanh_for_training, gelu_tanh_for_inference)}
        if activation in forms:
            self._train_activation, self._inference_activation = forms[activation]
        else:
            self._train_activation = self._inference_activation = keras.activations.get(activation)
        self.intermediate = Dense(intermediate_dim, kernel_initializer=init, name="intermediate")
        self.ffn_output = Dense(hidden_dim, kernel_initializer=init, name="ffn_output")
        self.ffn_dropout = Dropout(dropout)
        self.ffn_norm = LayerNormalization(epsilon=layer_norm_epsilon, name="ffn_layer_norm")

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.intermediate.build(input_shape)
        self.ffn_output.build(input_shape[:-1] + (self.intermediate_dim,))
        self.ffn_norm.build(input_shape)
        self.built = True

    def call(self, x, attention_mask=None, training=False, cache=None, cache_index=None):
        """See the class docstring; with `cache` (float [B, 2, N, S, D], inference only) x's positions start at
        `cache_index`, attend over the cache, and the result is (float [B, T, H], the updated cache)."""
        if cache is not None:
            attended, cache = self.attention(x, attention_mask=attention_mask, cache=cache, cache_index=cache_index)
            return self._feed_forward(self.attention_norm.add_and_normalize(x, attended, self.attention_dropout)), cache
        attended = self.attention(x, attention_mask=attention_mask, training=training)
        x = self.attention_norm.add_and_normalize(x, attended, self.attention_dropout, training=training)
        return self._feed_forward(x, training=training)

    def _feed_forward(self, x, training=False):
        # The feed-forward runs on [B*T, H] rows. At inference a 2-D MatMul sits right next to its bias add and
        # GELU, which oneDNN fuses (on [B, T, H] a reshape between them blocks that). In training the bias is
        # added inside the GELU kernel, so the MatMul stays a plain MatMul (zoo/layers/dense.py).
        rows = ops.reshape(x, (-1, self.hidden_dim))
        if training and self.activation in ("gelu", "gelu_tanh") and self.intermediate.defers_bias():
            h = self._train_activation(self.intermediate.matmul(rows), tf.convert_to_tensor(self.intermediate.bias))  # [B*T, F]
        else:
            h = self.intermediate(rows, training=training)  # [B*T, F]
            h = self._train_activation(h) if training else self._inference_activation(h)
        h = ops.reshape(self.ffn_output(h, training=training), ops.shape(x))  # [B, T, H]
        return self.ffn_norm.add_and_normalize(x, h, self.ffn_dropout, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config

