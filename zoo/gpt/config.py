"""GPT configuration: a dataclass whose fields are exactly `GPTBackbone`'s constructor arguments."""

import dataclasses

from zoo import config as config_lib


@dataclasses.dataclass
class GPTConfig(config_lib.FamilyConfig):
    """Architecture of a GPT-1 decoder (Radford et al. 2018; openai/finetune-transformer-lm).

    Attributes:
      vocabulary_size: V, BPE symbols + special tokens (GPT-1: 40,478 + _start_, _delimiter_, _classify_, and the
        zoo's _pad_ and _end_ = 40,483).
      num_layers: L decoder blocks (12).
      num_heads: N attention heads (12).
      hidden_dim: H (768).
      intermediate_dim: feed-forward width (3072 = 4H).
      dropout: dropout on embeddings, residual branches and attention probabilities (0.1).
      max_sequence_length: learned positions, the context (512).
      layer_norm_epsilon: 1e-5, as the original.
      initializer_range: stddev of the N(0, 0.02) initializer of every matrix.
      activation: "gelu_tanh", the original's tanh-approximated GELU.
    """

    vocabulary_size: int = 40483
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    intermediate_dim: int = 3072
    dropout: float = 0.1
    max_sequence_length: int = 512
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    activation: str = "gelu_tanh"


def _preset(num_layers, hidden_dim, num_heads, max_sequence_length=512):
    return GPTConfig(num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
                     intermediate_dim=4 * hidden_dim, max_sequence_length=max_sequence_length)


# Small sizes for CPUs (the BERT preset widths), then the paper's model ("base" = "gpt1").
PRESETS = {
    "tiny": _preset(2, 128, 2, max_sequence_length=256),
    "mini": _preset(4, 256, 4),
    "small": _preset(6, 512, 8),
    "base": _preset(12, 768, 12),
    "gpt1": _preset(12, 768, 12),
}
