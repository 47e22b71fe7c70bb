"""BertClassifier: a fine-tunable text (or text-pair) classifier that takes raw strings.

Shape legend: B batch, H hidden, K classes.
"""

import keras
import tensorflow as tf

from zoo import optim
from zoo.bert.preprocessor import BertPreprocessor
from zoo.layers import ClassificationHead
from zoo.layers.islands import WholeStepXlaTrainStep


@keras.saving.register_keras_serializable(package="zoo.bert")
class BertClassifier(WholeStepXlaTrainStep, keras.Model):
    """BERT's sentence(-pair) classifier: pooled [CLS] output -> dropout -> dense to K logits.

    Args:
      backbone: a `BertBackbone` (pretrained weights already in it).
      num_classes: K.
      preprocessor: a `BertPreprocessor`; when given, the model also accepts raw strings.
      dropout: classifier dropout (0.1 in BERT).
      pooling: "cls" (BERT's: the pooler's tanh(dense([CLS]))) or "mean" (the mean of the last layer over real
        tokens, as sentence-transformers pools; better when the pooler was never trained, e.g. an NSP head that
        has not learned yet or a checkpoint converted without one).

    Call args:
      inputs: a string tensor [B] (single texts), a tuple (texts_a [B], texts_b [B]) of strings (pairs), or the
        feature dict of `BertBackbone`.

    Returns:
      logits float32 [B, K].

    Example:
      >>> model = BertClassifier.from_model_dir("runs/bert_tiny", num_classes=2)
      >>> model.compile(optimizer=keras.optimizers.AdamW(3e-5), loss=..., metrics=["accuracy"])
      >>> model.fit(tf.data.Dataset.from_tensor_slices((texts, labels)).batch(32), epochs=3)
    """

    def __init__(self, backbone, num_classes, preprocessor=None, dropout=0.1, pooling="cls", **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if isinstance(preprocessor, dict):
            preprocessor = BertPreprocessor(**preprocessor)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.preprocessor = preprocessor
        self.dropout = dropout
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}.")
        self.pooling = pooling
        init = keras.initializers.TruncatedNormal(stddev=backbone.initializer_range)
        self.head = ClassificationHead(num_classes, dropout, init, name="classification_head")

    @classmethod
    def from_model_dir(cls, model_dir, num_classes, dropout=0.1, sequence_length=None, pooling="cls"):
        """Builds a classifier on a pretrained backbone from a zoo model dir or a zoo SavedModel export."""
        from zoo.bert.pretrained import load_pretrained  # local: pretrained.py imports this module's siblings

        backbone, preprocessor = load_pretrained(model_dir, sequence_length=sequence_length)
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

    def features(self, inputs):
        """Raw strings (or a pair of them) -> feature dict; feature dicts pass through."""
        if isinstance(inputs, dict):
            return inputs
        if self.preprocessor is None:
            raise ValueError("This BertClassifier has no preprocessor, so it takes feature dicts, not strings.")
        if isinstance(inputs, (tuple, list)):
            return self.preprocessor(*inputs)
        return self.preprocessor(inputs)

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

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Like keras.Model.compile, with BERT fine-tuning defaults (the zoo's AdamW at 2e-5, cross-entropy, accuracy).

        XLA stays off by default because string preprocessing runs inside the model.
        """
        if optimizer == "auto":
            # BERT's recipe (decay 0.01 off LayerNorm and biases, eps 1e-6, clip 1.0), fused kernels.
            optimizer = optim.adamw(2e-5, variables=self.trainable_variables)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def predict_proba(self, inputs, batch_size=32):
        """Class probabilities float32 [B, K] for raw strings."""
        return tf.nn.softmax(self.predict(inputs, batch_size=batch_size, verbose=0), axis=-1).numpy()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "preprocessor": None if self.preprocessor is None else self.preprocessor.get_config(),
            "dropout": self.dropout,
            "pooling": self.pooling,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
