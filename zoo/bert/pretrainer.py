"""BertPretrainer: the backbone with masked-LM and next-sentence heads; computes its own losses.

Shape legend: B batch, T sequence length, P masked positions, H hidden, V vocabulary.
"""

import keras
from keras import ops

from zoo.bert.backbone import BertBackbone  # noqa: F401  (registers the class for deserialisation)
from zoo.layers import MaskedLMHead, softmax_cross_entropy_with_hits


@keras.saving.register_keras_serializable(package="zoo.bert")
class BertPretrainer(keras.Model):
    """Masked LM (tied to the input embeddings, own bias, logits only at masked positions) + NSP from [CLS].

    Call args:
      features: dict with the backbone inputs and `mask_positions` int [B, P].

    Returns:
      dict: `mlm_logits` float32 [B, P, V], `nsp_logits` float32 [B, 2].

    The training loop uses `loss_terms`, which returns (sum, count) pairs so that losses can be normalised by
    the GLOBAL count across replicas: the mirrored step then equals the single-device step exactly.
    """

    # The terms whose normalised sum is the training loss (BERT: MLM + NSP, equally weighted).
    loss_names = ("mlm_loss", "nsp_loss")

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self.backbone = backbone
        init = keras.initializers.TruncatedNormal(stddev=backbone.initializer_range)
        self.masked_lm_head = MaskedLMHead(
            backbone.token_embedding, backbone.hidden_dim, backbone.layer_norm_epsilon, init, name="masked_lm_head"
        )
        self.next_sentence_head = keras.layers.Dense(2, kernel_initializer=init, name="next_sentence_head")

    def build_from_config(self, config):
        # Every weight shape follows from the constructor arguments, so no input shape is needed.
        self.build()

    def build(self, input_shape=None):
        if self.built:  # Deserialisation may have built us already as a nested model.
            return
        self.backbone.build()
        self.masked_lm_head.build((None, None, self.backbone.hidden_dim))
        self.next_sentence_head.build((None, self.backbone.hidden_dim))
        self.built = True

    def call(self, features, training=False):
        outputs = self.backbone(features, training=training)
        return {
            "mlm_logits": self.masked_lm_head(outputs["sequence_output"], features["mask_positions"]),
            "nsp_logits": ops.cast(self.next_sentence_head(outputs["pooled_output"]), "float32"),
        }

    def loss_counts(self, features):
        """Data-only normalisers {name: count}: masked tokens for MLM, examples for NSP (float32 scalars)."""
        mlm = ops.sum(ops.cast(features["mask_weights"], "float32"))
        examples = ops.cast(ops.shape(features["next_sentence_labels"])[0], "float32")
        return {"mlm_loss": mlm, "nsp_loss": examples, "mlm_accuracy": mlm, "nsp_accuracy": examples}

    def loss_terms(self, features, training=False):
        """Returns {name: (sum, count)} float32 scalars: losses (`loss_names`) and accuracies."""
        out = self(features, training=training)
        weights = ops.cast(features["mask_weights"], "float32")  # [B, P]
        mlm_ce, mlm_hit = softmax_cross_entropy_with_hits(features["mask_ids"], out["mlm_logits"])  # [B, P] each
        labels = features["next_sentence_labels"]
        nsp_ce, nsp_hit = softmax_cross_entropy_with_hits(labels, out["nsp_logits"])  # [B] each
        count = ops.cast(ops.shape(labels)[0], "float32")
        mlm_count = ops.sum(weights)
        return {
            "mlm_loss": (ops.sum(mlm_ce * weights), mlm_count),
            "nsp_loss": (ops.sum(nsp_ce), count),
            "mlm_accuracy": (ops.sum(mlm_hit * weights), mlm_count),
            "nsp_accuracy": (ops.sum(nsp_hit), count),
        }

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
