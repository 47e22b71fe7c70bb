"""ElmoBackbone: the biLM of ELMo (allenai/bilm-tf `BidirectionalLanguageModelGraph`) without its softmax.

Shape legend: B batch, T words (with the <S> and </S> positions), C characters per word, P projection width,
U LSTM cells, L LSTM layers per direction.

char ids [B, T, C] -> `ElmoTokenEncoder` -> token embedding [B, T, P] (layer 0, shared by both directions) ->
forward: L `ProjectedLSTM`s over positions 0 .. T-1; backward: L `ProjectedLSTM`s over each sentence reversed
within its length (`tf.reverse_sequence`), their outputs reversed back. Each layer's input gets dropout in
training (bilm-tf's `DropoutWrapper(input_keep_prob)`); with `use_skip_connections` every layer after the first
adds its (dropped-out) input to its output (bilm-tf's `ResidualWrapper`). Padding must be on the right.
"""

import keras
import tensorflow as tf

from zoo.backbone import Backbone
from zoo.elmo.config import PAPER_FILTERS, ElmoConfig
from zoo.elmo.token_encoder import ElmoTokenEncoder
from zoo.layers import Dropout
from zoo.layers.projected_lstm import ProjectedLSTM

DIRECTIONS = ("forward", "backward")


@keras.saving.register_keras_serializable(package="zoo.elmo")
class ElmoBackbone(Backbone):
    """ELMo's character-CNN biLSTM (see the module docstring). Constructor arguments are `ElmoConfig`'s, plus:

    Args:
      stateful: carry each LSTM's (c, h) from one call to the next in non-trainable variables (bilm-tf's
        inference LSTMs are stateful); `reset_states()` zeros them. Default False: every call starts from zeros.
      batch_size: with `stateful`, the largest batch; a call with b rows uses and updates the first b rows of
        the state (as bilm-tf's `max_batch_size`).

    Call args:
      inputs: dict with `char_ids` int [B, T, C] (`zoo.elmo.chars.word_char_ids`) and `padding_mask` int/bool
        [B, T] (1 = real position, <S> and </S> included; real positions first).
      training: bool (dropout).

    Returns:
      dict: `token_embedding` [B, T, P] (zero at padding); `forward_layers`, `backward_layers`: lists of L
        [B, T, P], aligned with the positions (the forward layer at t has read positions <= t only, the backward
        layer at t positions >= t only); `layers`: L + 1 tensors [B, T, 2P], layer 0 = [tok, tok], layer j =
        [forward_j, backward_j]; `sequence_output` = layers[-1] [B, T, 2P] (the name every backbone gives its top
        layer); `padding_mask` [B, T] (bool).

    Example:
      >>> import tensorflow as tf
      >>> from zoo.elmo.backbone import ElmoBackbone
      >>> from zoo.elmo.chars import word_char_ids
      >>> backbone = ElmoBackbone(vocabulary_size=0, filters=((1, 4), (2, 8)), num_highway=1, projection_dim=8,
      ...                         lstm_dim=16)
      >>> char_ids = word_char_ids(tf.constant([["<S>", "hello", "</S>"]]))
      >>> backbone({"char_ids": char_ids, "padding_mask": tf.ones([1, 3])})["layers"][2].shape
      TensorShape([1, 3, 16])
    """

    config_class = ElmoConfig
    layer_outputs_key = "layers"  # tests/harness.py: the output that holds every layer's output

    def __init__(self, vocabulary_size, char_embedding_dim=16, filters=PAPER_FILTERS, num_highway=2,
                 projection_dim=512, lstm_dim=4096, num_layers=2, cell_clip=3.0, projection_clip=3.0,
                 use_skip_connections=True, activation="relu", dropout=0.1, max_characters_per_token=50,
                 num_characters=262, max_sequence_length=20, num_samples=8192, stateful=False, batch_size=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.char_embedding_dim = char_embedding_dim
        self.filters = tuple((int(w), int(n)) for w, n in filters)
        self.num_highway = num_highway
        self.projection_dim = projection_dim
        self.lstm_dim = lstm_dim
        self.num_layers = num_layers
        self.cell_clip = cell_clip
        self.projection_clip = projection_clip
        self.use_skip_connections = use_skip_connections
        self.activation = activation
        self.dropout = dropout
        self.max_characters_per_token = max_characters_per_token
        self.num_characters = num_characters
        self.max_sequence_length = max_sequence_length
        self.num_samples = num_samples
        if stateful and not batch_size:
            raise ValueError("A stateful ElmoBackbone needs batch_size (the largest batch it will be called with).")
        self.stateful = bool(stateful)
        self.batch_size = batch_size
        self.token_encoder = ElmoTokenEncoder(num_characters, char_embedding_dim, self.filters, num_highway,
                                              projection_dim, activation, name="token_encoder")
        # TF1's LSTMCell projects only when num_proj is given; bilm-tf gives it when P < U.
        lstm_projection = projection_dim if projection_dim < lstm_dim else None
        self.lstms = {
            direction: [ProjectedLSTM(lstm_dim, lstm_projection, cell_clip, projection_clip,
                                      name=f"{direction}_lstm_{i}") for i in range(num_layers)]
            for direction in DIRECTIONS
        }
        for direction in DIRECTIONS:  # named attributes, so checkpoints see every layer
            for i, lstm in enumerate(self.lstms[direction]):
                setattr(self, f"{direction}_lstm_{i}", lstm)
        self.layer_dropout = {direction: Dropout(dropout, name=f"{direction}_dropout") for direction in DIRECTIONS}
        self.forward_dropout = self.layer_dropout["forward"]
        self.backward_dropout = self.layer_dropout["backward"]
        self._states = None

    def build_weights(self):
        self.token_encoder.build()
        for direction in DIRECTIONS:
            for lstm in self.lstms[direction]:
                lstm.build((None, None, self.projection_dim))
        if self.stateful:
            self._states = {
                direction: [tuple(self.add_weight(name=f"{direction}_lstm_{i}_{part}", shape=(self.batch_size, size),
                                                  initializer="zeros", trainable=False, autocast=False)
                                  for part, size in zip(("c", "h"), lstm.state_size))
                            for i, lstm in enumerate(self.lstms[direction])]
                for direction in DIRECTIONS
            }

    @property
    def state_variables(self):
        """Stateful mode: {"forward" | "backward": [(c [batch_size, U], h [batch_size, P]) per layer]}; else None."""
        return self._states

    def reset_states(self):
        """Zeros every LSTM state variable (stateful mode); a no-op for a stateless backbone."""
        for direction in (self._states or {}):
            for variables in self._states[direction]:
                for variable in variables:
                    variable.assign(tf.zeros_like(variable))

    def call(self, inputs, training=False):
        token_embedding = self.token_encoder(inputs["char_ids"], training=training)
        return self.contextualize(token_embedding, inputs["padding_mask"], training=training)

    def contextualize(self, token_embedding, padding_mask, training=False):
        """The biLSTM over given token embeddings (for a token-embedding table in place of the char CNN).

        Args:
          token_embedding: float [B, T, P]; padding_mask: int/bool [B, T], real positions first.

        Returns:
          the dict `call` returns.
        """
        mask = tf.cast(padding_mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # [B]
        tokens = tf.where(mask[:, :, None], token_embedding, tf.zeros([], token_embedding.dtype))  # [B, T, P]
        forward = self._run_direction("forward", tokens, mask, training)
        # Right padding stays on the right under reverse_sequence, so the mask is the reversed sequence's too.
        backward = self._run_direction("backward", tf.reverse_sequence(tokens, lengths, seq_axis=1, batch_axis=0),
                                       mask, training)
        backward = [tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0) for x in backward]
        layers = [tf.concat([tokens, tokens], axis=-1)] + [tf.concat(pair, axis=-1) for pair in zip(forward, backward)]
        return {"token_embedding": tokens, "forward_layers": forward, "backward_layers": backward, "layers": layers,
                "sequence_output": layers[-1], "padding_mask": mask}

    def _run_direction(self, direction, x, mask, training):
        """L LSTM layers of one direction over x [B, T, P] -> list of L outputs [B, T, P] (zero at padding)."""
        outputs = []
        batch = tf.shape(x)[0]
        for i, lstm in enumerate(self.lstms[direction]):
            layer_input = self.layer_dropout[direction](x, training=training)
            initial_state = None
            if self.stateful:
                tf.debugging.assert_less_equal(batch, self.batch_size,
                                               message="a stateful ElmoBackbone got a batch larger than its batch_size")
                initial_state = tuple(v[:batch] for v in self._states[direction][i])
            output, final_state = lstm(layer_input, mask=mask, initial_state=initial_state)
            if self.stateful:
                for variable, value in zip(self._states[direction][i], final_state):
                    variable.assign(tf.concat([value, variable[batch:]], axis=0))
            if self.use_skip_connections and i > 0:
                output = output + layer_input  # zero at padding on both sides
            outputs.append(output)
            x = output
        return outputs

    def get_config(self):
        config = super().get_config()
        if self.stateful:  # only then, so a stateless backbone's config is exactly its ElmoConfig's fields
            config.update(stateful=True, batch_size=self.batch_size)
        return config
