"""GPTCausalLM: the backbone with its LM head tied to the token embeddings; next-token loss, scoring, generation.

Shape legend: B batch, T sequence length, H hidden, V vocabulary, S total length of a generation buffer.
"""

import keras
import tensorflow as tf
from keras import ops

from zoo.gpt import generation
from zoo.gpt.backbone import GPTBackbone  # noqa: F401  (registers the class for deserialisation)
from zoo.layers.losses import DEFAULT_MAX_LOGITS_BYTES, tied_softmax_cross_entropy


@keras.saving.register_keras_serializable(package="zoo.gpt")
class GPTCausalLM(keras.Model):
    """Next-token prediction: logits = h @ E^T (the token embeddings, no bias, as GPT-1 and HF's
    OpenAIGPTLMHeadModel).

    Call args:
      features: dict with `token_ids` int [B, T] and optionally `padding_mask` [B, T] (default: all real).

    Returns:
      float32 logits [B, T, V]: position t's distribution over token t + 1.

    The training loop uses `loss_terms` ((sum, count) pairs, normalised by the global count across replicas).
    """

    loss_names = ("lm_loss",)
    # Logit bytes above which the loss runs in row chunks (zoo.layers.losses.tied_softmax_cross_entropy).
    max_logits_bytes = DEFAULT_MAX_LOGITS_BYTES

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self.backbone = backbone

    def build_from_config(self, config):
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        self.built = True

    @staticmethod
    def _padding_mask(features):
        ids = features["token_ids"]
        return features["padding_mask"] if "padding_mask" in features else ops.ones_like(ids)

    def lm_logits(self, hidden):
        """float [..., H] -> float32 logits [..., V] through the tied embeddings."""
        return ops.cast(self.backbone.token_embedding.reverse(hidden), "float32")

    def call(self, features, training=False):
        inputs = {"token_ids": features["token_ids"], "padding_mask": self._padding_mask(features)}
        return self.lm_logits(self.backbone(inputs, training=training)["sequence_output"])

    def token_losses(self, features, training=False, hidden=None):
        """(cross-entropy, hits, weights), float32 [B, T - 1] each: predicting token t + 1 at position t, weighted
        where both tokens are real.

        hidden: the backbone's `sequence_output` [B, T, H] on these features, when the caller already ran it (a
          fine-tuning task model's auxiliary LM loss reuses its forward pass); None runs the backbone here.
        """
        ids = features["token_ids"]
        mask = ops.cast(self._padding_mask(features), "float32")
        if hidden is None:
            hidden = self.backbone({"token_ids": ids, "padding_mask": mask}, training=training)["sequence_output"]
        # The tied head's loss without [B x T, V] logits and softmax buffers at large sizes (zoo.layers.losses).
        hidden = hidden[:, :-1]
        rows = tf.shape(hidden)[:2]
        ce, hits = tied_softmax_cross_entropy(tf.reshape(hidden, [-1, hidden.shape[-1]]),
                                              self.backbone.token_embedding.embeddings, tf.reshape(ids[:, 1:], [-1]),
                                              max_logits_bytes=self.max_logits_bytes)
        return tf.reshape(ce, rows), tf.reshape(hits, rows), mask[:, 1:] * mask[:, :-1]

    def loss_counts(self, features):
        """{name: count}: the predicted positions (float32 scalars)."""
        mask = ops.cast(self._padding_mask(features), "float32")
        count = ops.sum(mask[:, 1:] * mask[:, :-1])
        return {"lm_loss": count, "lm_accuracy": count}

    def loss_terms(self, features, training=False):
        """{name: (sum, count)} float32 scalars: the LM loss and next-token accuracy."""
        ce, hits, weights = self.token_losses(features, training=training)
        count = ops.sum(weights)
        return {"lm_loss": (ops.sum(ce * weights), count), "lm_accuracy": (ops.sum(hits * weights), count)}

    # ---- scoring and generation --------------------------------------------------------------------------------
    def token_log_probs(self, token_ids, padding_mask):
        """log p(token t + 1 | tokens <= t): float32 [B, T - 1], 0 where either token is padding."""
        ce, _, weights = self.token_losses({"token_ids": token_ids, "padding_mask": padding_mask})
        return -ce * weights

    def generate_ids(self, token_ids, prompt_lengths, max_new_tokens, *, temperature=0.0, top_k=0, top_p=1.0,
                     seed=(0, 0), stop_id=None, banned_ids=()):
        """Continues each prompt by up to `max_new_tokens` tokens with cached keys and values (one position each).

        Args:
          token_ids: int [B, P], each row's prompt left-aligned (anything after it is ignored).
          prompt_lengths: int [B], >= 1.
          max_new_tokens, temperature, top_k, top_p, seed: see `zoo.gpt.generation` (scalars or tensors).
          stop_id: a row stops after generating this id (kept in the output); None: never.
          banned_ids: ids never sampled (special tokens that are not text).

        Returns:
          (new_ids int32 [B, max_new_tokens] (0 after a row stopped), new_lengths int32 [B]).
        """
        return generation.generate(self, token_ids, prompt_lengths, max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, stop_id=stop_id, banned_ids=banned_ids)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
