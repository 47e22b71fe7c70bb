"""ElmoLanguageModel: the biLM's shared softmax and its losses on top of `ElmoBackbone` (bilm-tf
`LanguageModel._build_loss`).

Shape legend: B batch, T positions (<S> and </S> included), C characters per word, P projection width,
V vocabulary, S sampled classes, N = B * (T - 1) predictions per direction.

One softmax, W [V, P] (initialised N(0, 1 / sqrt(P))) and b [V] (zeros), serves both directions: the forward LM
predicts the word at t + 1 from its top layer at t, the backward LM the word at t - 1 from its top layer at t.
In training the top layers get dropout (bilm-tf drops out the LSTM outputs before the softmax) and each direction
a sampled softmax over S log-uniform negatives (`zoo.layers.sampled_softmax`: stateless, so a resumed run draws
what the uninterrupted run drew, and XLA-compilable); the loss is 0.5 * (forward + backward), per prediction.
In evaluation the softmax is full (exact log-likelihoods; the [N, V] logits in chunks at large V).

The gradient's scale: bilm-tf differentiates `loss * unroll_steps` (its predictions per row), and its recipe
(Adagrad lr 0.2 with accumulators from 1.0, global-norm clip 10) is tuned to that scale. Here the training loss's
gradient is scaled by T - 1 (the prediction slots of a row) while its value stays the per-prediction mean, so
the logs and perplexities read as usual (`scale_gradient=False` turns it off).
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.elmo.backbone import ElmoBackbone  # noqa: F401  (registers the class for deserialisation)
from zoo.layers import Dropout
from zoo.layers.dropout import replica_seed
from zoo.layers.losses import tied_softmax_cross_entropy
from zoo.layers.sampled_softmax import log_uniform_candidates, sampled_softmax_cross_entropy

DIRECTIONS = ("forward", "backward")


@keras.saving.register_keras_serializable(package="zoo.elmo")
class ElmoLanguageModel(keras.Model):
    """The forward and backward LMs of ELMo with one shared softmax (see the module docstring).

    Args:
      backbone: an `ElmoBackbone` (or its serialised config).
      vocabulary_size: V, words of the softmax (default: the backbone's); sorted by descending count.
      num_samples: S, negatives per direction and step in training (default: the backbone's), at most V - 1.
      dropout: on the top layers before the softmax in training (default: the backbone's).
      scale_gradient: scale the training loss's gradient by T - 1, as bilm-tf (see the module docstring).

    Call args:
      features: dict with `char_ids` int [B, T, C], `padding_mask` int [B, T] (and `token_ids`, unused here).

    Returns:
      {"forward_logits", "backward_logits"}: float32 [B, T, V], the full softmax's logits; forward at t scores
      the word at t + 1, backward at t the word at t - 1.

    The training loop uses `loss_terms` / `loss_counts` / `loss_names` (zoo.training.loop): `average_lm_loss`
    (the training loss), `forward_lm_loss` and `backward_lm_loss`, each a sum of -log p over the predicted
    words and their count; in evaluation also `forward_lm_accuracy` and `backward_lm_accuracy` (top-1).

    Example:
      >>> from zoo.elmo import ElmoBackbone, ElmoLanguageModel
      >>> model = ElmoLanguageModel(ElmoBackbone(vocabulary_size=50, filters=((1, 4), (2, 8)), num_highway=1,
      ...                                        projection_dim=8, lstm_dim=16, num_samples=10))
      >>> model.build()
    """

    loss_names = ("average_lm_loss",)

    def __init__(self, backbone, vocabulary_size=None, num_samples=None, dropout=None, scale_gradient=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self.backbone = backbone
        self.vocabulary_size = int(backbone.vocabulary_size if vocabulary_size is None else vocabulary_size)
        if self.vocabulary_size < 2:
            raise ValueError(f"An ELMo language model needs a vocabulary of at least 2 words; got {self.vocabulary_size}.")
        requested = backbone.num_samples if num_samples is None else num_samples
        self.num_samples = int(min(requested, self.vocabulary_size - 1))
        self.dropout = float(backbone.dropout if dropout is None else dropout)
        self.scale_gradient = bool(scale_gradient)
        self.output_dropout = {d: Dropout(self.dropout, name=f"{d}_output_dropout") for d in DIRECTIONS}
        self.forward_output_dropout = self.output_dropout["forward"]  # named attributes for checkpoints
        self.backward_output_dropout = self.output_dropout["backward"]
        self.sample_seed_generator = keras.random.SeedGenerator(name="sampled_softmax_seed_generator")

    def build_from_config(self, config):
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        width = self.backbone.projection_dim
        self.softmax_weights = self.add_weight(
            name="softmax_weights", shape=(self.vocabulary_size, width),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / width**0.5))
        self.softmax_bias = self.add_weight(name="softmax_bias", shape=(self.vocabulary_size,), initializer="zeros")
        self.built = True

    # ---- the top layers ---------------------------------------------------------------------------------------
    def _top_layers(self, features, training):
        """({direction: [B, T - 1, P] hidden states}, {direction: int [B, T - 1] targets}, weights float32 [B, T - 1])."""
        char_ids = features["char_ids"]
        expected = self.backbone.max_characters_per_token
        if char_ids.shape[-1] is not None and char_ids.shape[-1] != expected:
            raise ValueError(f"char_ids have {char_ids.shape[-1]} characters per word; the backbone takes {expected}.")
        outputs = self.backbone({"char_ids": char_ids, "padding_mask": features["padding_mask"]}, training=training)
        ids = features["token_ids"]
        mask = ops.cast(features["padding_mask"], "float32")
        top = {d: self.output_dropout[d](outputs[f"{d}_layers"][-1], training=training) for d in DIRECTIONS}
        hidden = {"forward": top["forward"][:, :-1], "backward": top["backward"][:, 1:]}
        targets = {"forward": ids[:, 1:], "backward": ids[:, :-1]}
        return hidden, targets, mask[:, 1:] * mask[:, :-1]

    def _logits(self, hidden):
        logits = tf.matmul(hidden, tf.cast(self.softmax_weights, hidden.dtype), transpose_b=True)
        return tf.cast(logits, tf.float32) + self.softmax_bias

    def call(self, features, training=False):
        outputs = self.backbone({"char_ids": features["char_ids"], "padding_mask": features["padding_mask"]},
                                training=training)
        return {f"{d}_logits": self._logits(outputs[f"{d}_layers"][-1]) for d in DIRECTIONS}

    # ---- losses -------------------------------------------------------------------------------------------
    def _sampled_losses(self, hidden, labels):
        """hidden [N, P], labels int [N] -> float32 [N], with this step's negatives."""
        sampled = log_uniform_candidates(labels, self.num_samples, self.vocabulary_size,
                                         replica_seed(self.sample_seed_generator))
        return sampled_softmax_cross_entropy(hidden, self.softmax_weights, self.softmax_bias, labels, sampled)

    def _full_losses(self, hidden, labels):
        """hidden [N, P], labels int [N] -> (cross-entropy, hits) float32 [N] under the full softmax."""
        # The bias rides as one more input column (h . w + 1 * b), so the chunked tied-head loss serves here.
        ones = tf.ones_like(hidden[:, :1])
        table = tf.concat([self.softmax_weights, self.softmax_bias[:, None]], axis=1)  # [V, P + 1]
        return tied_softmax_cross_entropy(tf.concat([hidden, ones], axis=1), table, labels)

    def loss_counts(self, features):
        """{name: count}: the predicted words per direction (the same for both), float32 scalars."""
        mask = ops.cast(features["padding_mask"], "float32")
        count = ops.sum(mask[:, 1:] * mask[:, :-1])
        names = ("average_lm_loss",) + tuple(f"{d}_lm_{m}" for d in DIRECTIONS for m in ("loss", "accuracy"))
        return {name: count for name in names}

    def loss_terms(self, features, training=False):
        """{name: (sum, count)} float32 scalars (see the class docstring)."""
        hidden, targets, weights = self._top_layers(features, training)
        count = ops.sum(weights)
        rows = tf.shape(weights)
        terms = {}
        for d in DIRECTIONS:
            h = tf.reshape(hidden[d], [-1, hidden[d].shape[-1]])  # [N, P]
            labels = tf.reshape(targets[d], [-1])  # [N]
            if training:
                ce = self._sampled_losses(h, labels)
            else:
                ce, hits = self._full_losses(h, labels)
                terms[f"{d}_lm_accuracy"] = (ops.sum(tf.reshape(hits, rows) * weights), count)
            terms[f"{d}_lm_loss"] = (ops.sum(tf.reshape(ce, rows) * weights), count)
        total = 0.5 * (terms["forward_lm_loss"][0] + terms["backward_lm_loss"][0])
        if training and self.scale_gradient:
            # The value stays `total`; the gradient is (T - 1) times its gradient, as bilm-tf's loss * unroll_steps.
            scale = tf.cast(tf.shape(weights)[1], tf.float32)
            total = total * scale - tf.stop_gradient(total * (scale - 1.0))
        terms["average_lm_loss"] = (total, count)
        return terms

    # ---- scoring ----------------------------------------------------------------------------------------------
    def log_probabilities(self, features):
        """{"forward", "backward"}: float32 [B, T, V] log-softmax of `call`'s logits."""
        logits = self(features)
        return {d: tf.nn.log_softmax(logits[f"{d}_logits"]) for d in DIRECTIONS}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "backbone": keras.saving.serialize_keras_object(self.backbone),
                "vocabulary_size": self.vocabulary_size, "num_samples": self.num_samples, "dropout": self.dropout,
                "scale_gradient": self.scale_gradient}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
