"""Building blocks shared by every family (BERT, GPT, ELMo). Imports no zoo module but zoo.kernels (native ops)."""

from zoo.layers.activations import gelu
from zoo.layers.attention import MultiHeadAttention, make_attention_mask
from zoo.layers.dropout import Dropout
from zoo.layers.embeddings import PositionEmbedding, TokenEmbedding
from zoo.layers.heads import ClassificationHead, MaskedLMHead, gather_positions
from zoo.layers.normalization import LayerNormalization, layer_norm_for_training
from zoo.layers.losses import softmax_cross_entropy_with_hits
from zoo.layers.transformer import TransformerBlock
from zoo.layers import native  # noqa: E402,F401 (registers the native ops' gradients for tapes around them)

__all__ = [
    "ClassificationHead",
    "Dropout",
    "LayerNormalization",
    "MaskedLMHead",
    "MultiHeadAttention",
    "PositionEmbedding",
    "TokenEmbedding",
    "TransformerBlock",
    "gather_positions",
    "gelu",
    "layer_norm_for_training",
    "make_attention_mask",
    "softmax_cross_entropy_with_hits",
]
