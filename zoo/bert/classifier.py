"""BertClassifier: a fine-tunable text (or text-pair) classifier that takes raw strings.

Shape legend: B batch, T sequence length, H hidden, K classes.
"""

import keras

from zoo import optim
from zoo.bert.preprocessor import BertPreprocessor
from zoo.layers import ClassificationHead
from zoo.task import TextTask


@keras.saving.register_keras_serializable(package="zoo.bert")
class BertClassifier(TextTask):
    """BERT's sentence(-pair) classifier: pooled [CLS] output (or the mean of the last layer) -> dropout -> K logits.

    Args:
      backbone: a `BertBackbone` (pretrained weights already in it).
      num_classes: K.
      preprocessor: a `BertPreprocessor`; when given, the model also accepts raw strings.
      dropout: classifier dropout (0.1 in BERT).
      pooling: "cls" (BERT's: the pooler's tanh(dense([CLS]))) or "mean" (the mean of the last layer over real
        tokens, as sentence-transformers pools; better when the pooler was never trained, e.g. an NSP head that
        has not learned yet or a checkpoint converted without one).

    Call args:
      inputs: strings [B] (a list, numpy array or tf.Tensor), a pair (texts_a [B], texts_b [B]), or the feature
        dict of `BertBackbone`.

    Returns:
      logits float32 [B, K].

    Example:
      >>> from zoo.bert import BertBackbone, BertClassifier, BertPreprocessor
      >>> from zoo.text.wordpiece import WordPieceTokenizer
      >>> backbone = BertBackbone(vocabulary_size=8, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
      >>> tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "film"])
      >>> model = BertClassifier(backbone, num_classes=2, preprocessor=BertPreprocessor(tokenizer, 16))
      >>> model.compile()
      >>> history = model.fit(["a good film", "a film"], [1, 0], epochs=1, verbose=0)
      >>> model.predict_proba(["a good film"]).shape
      (1, 2)
    """

    def __init__(self, backbone, num_classes, preprocessor=None, dropout=0.1, pooling="cls", **kwargs):
        if isinstance(preprocessor, dict):
            preprocessor = BertPreprocessor(**preprocessor)
        super().__init__(backbone, preprocessor, **kwargs)
        self.num_classes = int(num_classes)
        self.dropout = dropout
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}.")
        self.pooling = pooling
        if pooling == "mean":
            # The pooler is unused, so it gets no gradient: frozen, it stays out of the optimizer (no Keras warning
            # about missing gradients, no weight decay moving it) and keeps its pretrained values for a later "cls" use.
            self.backbone.pooler.trainable = False
        init = keras.initializers.TruncatedNormal(stddev=self.backbone.initializer_range)
        self.head = ClassificationHead(num_classes, dropout, init, name="classification_head")

    @classmethod
    def from_model_dir(cls, model_dir, num_classes, dropout=0.1, sequence_length=None, pooling="cls"):
        """Builds a classifier on a pretrained backbone from a zoo model dir or a zoo SavedModel export."""
        import zoo

        backbone, preprocessor = zoo.load_pretrained(model_dir, sequence_length=sequence_length)
        model = cls(backbone, num_classes, preprocessor=preprocessor, dropout=dropout, pooling=pooling)
        model.build()
        return model

    def build_from_config(self, config):
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        self.head.build((None, self.backbone.hidden_dim))
        self.built = True

    def parts(self):
        return {"backbone": self.backbone, "head": self.head}

    def task_config(self):
        return {"num_classes": self.num_classes, "dropout": self.dropout, "pooling": self.pooling}

    def default_optimizer(self):
        # BERT's recipe (decay 0.01 off LayerNorm and biases, eps 1e-6, clip 1.0) at 2e-5, fused kernels.
        return optim.adamw(2e-5, variables=self.trainable_variables)

    def call(self, inputs, training=False):
        features = self.features(inputs)
        return self.logits(features, self.backbone(features, training=training), training=training)

    def logits(self, features, outputs, training=False):
        """[B, K] logits from the backbone's `outputs` on `features` (pooling, dropout, dense)."""
        if self.pooling == "cls":
            return self.head(outputs["pooled_output"], training=training)
        mask = keras.ops.cast(features["padding_mask"], outputs["sequence_output"].dtype)[:, :, None]  # [B, T, 1]
        mean = keras.ops.sum(outputs["sequence_output"] * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        return self.head(mean, training=training)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "preprocessor": None if self.preprocessor is None else self.preprocessor.get_config(),
            **self.task_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
