"""BERT configuration: a dataclass whose fields are exactly `BertBackbone`'s constructor arguments."""

import dataclasses

from zoo import config as config_lib


@dataclasses.dataclass
class BertConfig(config_lib.FamilyConfig):
    """Architecture of a BERT encoder (Devlin et al. 2018).

    Attributes:
      vocabulary_size: V, WordPiece vocabulary size.
      num_layers: L Transformer blocks.
      num_heads: N attention heads (hidden_dim / num_heads = 64 in the paper's models).
      hidden_dim: H.
      intermediate_dim: feed-forward width, 4H in the paper.
      dropout: dropout on embeddings, residual branches and attention probabilities (0.1).
      max_sequence_length: number of learned positions (512).
      num_segments: segment (token type) vocabulary (2: sentence A and B).
      layer_norm_epsilon: 1e-12, as google-research/bert.
      initializer_range: stddev of the truncated-normal initializer (0.02).
    """

    vocabulary_size: int = 30522
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    intermediate_dim: int = 3072
    dropout: float = 0.1
    max_sequence_length: int = 512
    num_segments: int = 2
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02


def _preset(num_layers, hidden_dim, num_heads):
    return BertConfig(num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads, intermediate_dim=4 * hidden_dim)


# The sizes of Turc et al. 2019 ("Well-Read Students Learn Better", the official small BERTs) and the paper's two.
PRESETS = {
    "tiny": _preset(2, 128, 2),
    "mini": _preset(4, 256, 4),
    "small": _preset(4, 512, 8),
    "medium": _preset(8, 512, 8),
    "base": _preset(12, 768, 12),
    "large": _preset(24, 1024, 16),
}


def get_preset(name):
    """Returns a copy of the named preset's config, or raises ValueError listing the known presets."""
    return config_lib.get_preset(PRESETS, name, what="BERT")
