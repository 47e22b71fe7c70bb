"""ELMo configuration: a dataclass whose fields are exactly `ElmoBackbone`'s architecture arguments."""

import dataclasses

from zoo import config as config_lib

PAPER_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))  # 2048 channels


@dataclasses.dataclass
class ElmoConfig(config_lib.FamilyConfig):
    """Architecture of an ELMo biLM (Peters et al. 2018; allenai/bilm-tf `options.json` names in brackets).

    Attributes:
      vocabulary_size: V, words of the softmax (`n_tokens_vocab`), sorted by descending count for the log-uniform
        sampler; 0 for a model without a softmax (feature extraction, converted weights).
      char_embedding_dim: width of the character embedding (`char_cnn.embedding.dim`, 16).
      filters: (width, count) per convolution (`char_cnn.filters`); the paper's sum to 2048 channels.
      num_highway: highway layers after the CNN (`char_cnn.n_highway`, 2).
      projection_dim: P, the token representation and each LSTM's projection width (`lstm.projection_dim`, 512).
      lstm_dim: LSTM cells per layer (`lstm.dim`, 4096).
      num_layers: L LSTM layers per direction (`lstm.n_layers`, 2).
      cell_clip: clip of the LSTM cell state (`lstm.cell_clip`, 3); 0 or None: no clip.
      projection_clip: clip of the projected output (`lstm.proj_clip`, 3); 0 or None: no clip.
      use_skip_connections: residual from the input of layer 2 on to its output (`lstm.use_skip_connections`).
      activation: of the CNN ("relu" in released models, or "tanh") (`char_cnn.activation`).
      dropout: between the layers in training (`dropout`, 0.1).
      max_characters_per_token: C (`char_cnn.max_characters_per_token`, 50).
      num_characters: rows of the character embedding (`char_cnn.n_characters`, 262: 261 ids + the mask 0).
      max_sequence_length: T of training batches (`unroll_steps`, 20; sentences include <S> and </S>).
      num_samples: negatives of the sampled softmax in training (`n_negative_samples_batch`, 8192).
    """

    vocabulary_size: int = 793471  # the 1B Word Benchmark vocabulary of the released models
    char_embedding_dim: int = 16
    filters: tuple = PAPER_FILTERS
    num_highway: int = 2
    projection_dim: int = 512
    lstm_dim: int = 4096
    num_layers: int = 2
    cell_clip: float = 3.0
    projection_clip: float = 3.0
    use_skip_connections: bool = True
    activation: str = "relu"
    dropout: float = 0.1
    max_characters_per_token: int = 50
    num_characters: int = 262
    max_sequence_length: int = 20
    num_samples: int = 8192

    def __post_init__(self):
        # JSON gives lists; keep one hashable, comparable form.
        self.filters = tuple((int(w), int(n)) for w, n in self.filters)

    @property
    def num_filters(self):
        """Channels out of the CNN (the sum of the counts)."""
        return sum(n for _, n in self.filters)


# allennlp's released sizes (elmo_2x1024_128_2048cnn_1xhighway, 2x2048_256_2048cnn_1xhighway,
# 2x4096_512_2048cnn_2xhighway), and a small CPU model for tests and demos.
PRESETS = {
    "tiny": ElmoConfig(vocabulary_size=10000, filters=((1, 16), (2, 16), (3, 32), (4, 64), (5, 128)),
                       num_highway=1, projection_dim=64, lstm_dim=256, num_samples=1024),
    "small": ElmoConfig(num_highway=1, projection_dim=128, lstm_dim=1024),
    "medium": ElmoConfig(num_highway=1, projection_dim=256, lstm_dim=2048),
    "original": ElmoConfig(num_highway=2, projection_dim=512, lstm_dim=4096),
}


def get_preset(name):
    """A copy of the named preset's config, or ValueError listing the known presets."""
    return config_lib.get_preset(PRESETS, name, what="ELMo")
