"""ELMo's task models (Peters et al. 2018, section 3.3): the biLM frozen, a scalar mix of its layers learned with
the task, under a sentence classifier (`ElmoClassifier`) or a per-word tagger (`ElmoTagger`); raw sentences in.

Shape legend: B batch, T positions (<S>, words, </S>), W words, P projection width, L LSTM layers, E word
embedding width, U encoder cells per direction, K classes or tags.

    char ids -> frozen ElmoBackbone (no dropout, no gradient) -> L + 1 layers [B, T, 2P]
      -> ScalarMix (every layer, or the top one only; optional layer norm; L2 on its weights) [B, T, 2P]
      [; word embeddings learned from scratch, E]                (features="elmo+words", or "words": no ELMo)
      -> the words only (<S> and </S> dropped) [B, W, D] -> dropout
      -> BiLSTM encoder [B, W, 2U] (encoder_dim=0: none)
      classifier: masked mean / max pooling [B, 2U] -> dropout -> dense [B, K]
      tagger:     dropout -> dense per word [B, W, K]

The paper concatenates ELMo with the task model's own token representation; `features` picks ELMo alone, ELMo
and word embeddings, or the word embeddings alone (the "no ELMo" baseline). With `trainers.finetune
--random_init` the biLM keeps its architecture with random, still frozen, weights (the "random biLM" baseline).
Everything that learns sits in one `ElmoTaskHead` layer: `parts()` is {backbone, head}.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo import optim
from zoo.elmo.embedder import word_positions
from zoo.elmo.preprocessor import ElmoPreprocessor, ElmoTokenizer
from zoo.layers import Dropout
from zoo.layers.bilstm import POOLINGS, BidirectionalLSTM, masked_pool
from zoo.layers.scalar_mix import ScalarMix
from zoo.task import TextTagger, TextTask, as_text_input

KINDS = ("classification", "tagging")
LAYERS = ("all", "top")
FEATURES = ("elmo", "elmo+words", "words")
LEARNING_RATE = 1e-3  # Adam's usual rate for a task model trained from scratch on frozen features
L2_COEFFICIENT = 1e-3  # the paper's small lambda on the mix weights (lambda = 1 forces an even mix)


@keras.saving.register_keras_serializable(package="zoo.elmo")
class ElmoTaskHead(keras.layers.Layer):
    """What an ELMo task model learns on the frozen biLM (see the module docstring).

    Args:
      num_outputs: K.
      num_layers: L + 1, the biLM's layers (token layer included).
      input_dim: 2P, their width.
      per_word: True: logits per word [B, W, K] (a tagger); False: pooled [B, K] (a classifier).
      layers: "all" (mix every layer) or "top" (the top layer only, times a learned scale gamma).
      features: "elmo", "elmo+words" or "words" (no biLM).
      do_layer_norm, l2_coefficient: the `ScalarMix`'s.
      dropout: on the word representations and before the output layer.
      vocabulary_size, word_embedding_dim: the word embeddings' table (with "words" features).
      encoder_dim: U, cells per direction of the BiLSTM over the words; 0: no encoder.
      pooling: "mean", "max" or "mean_max" over the words (classifier).

    Call args:
      inputs: dict with `layers` (list of L + 1 float [B, T, 2P]; not with "words" features), `token_ids` int
        [B, T] and `padding_mask` int [B, T].

    Returns:
      logits float32 [B, K] or [B, W, K].
    """

    def __init__(self, num_outputs, num_layers, input_dim, per_word=False, layers="all", features="elmo",
                 do_layer_norm=False, l2_coefficient=L2_COEFFICIENT, dropout=0.5, vocabulary_size=0,
                 word_embedding_dim=0, encoder_dim=64, pooling="max", **kwargs):
        super().__init__(**kwargs)
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}; got {layers!r}.")
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}; got {features!r}.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
        uses_words = features != "elmo"
        if uses_words and (int(word_embedding_dim) < 1 or int(vocabulary_size) < 1):
            raise ValueError(f"features={features!r} needs word_embedding_dim >= 1 and the word vocabulary's size; got "
                             f"word_embedding_dim={word_embedding_dim}, vocabulary_size={vocabulary_size}.")
        self.num_outputs = int(num_outputs)
        self.num_layers = int(num_layers)
        self.input_dim = int(input_dim)
        self.per_word = bool(per_word)
        self.layers_used = layers
        self.features = features
        self.do_layer_norm = bool(do_layer_norm)
        self.l2_coefficient = float(l2_coefficient)
        self.dropout = float(dropout)
        self.vocabulary_size = int(vocabulary_size)
        self.word_embedding_dim = int(word_embedding_dim) if uses_words else 0
        self.encoder_dim = int(encoder_dim)
        self.pooling = pooling
        self.mix = None
        if features != "words":
            self.mix = ScalarMix(self.num_layers if layers == "all" else 1, do_layer_norm=self.do_layer_norm,
                                 l2_coefficient=self.l2_coefficient, name="scalar_mix")
        self.word_embedding = None
        if self.word_embedding_dim:
            self.word_embedding = keras.layers.Embedding(self.vocabulary_size, self.word_embedding_dim,
                                                         name="word_embedding")
        self.encoder = BidirectionalLSTM(self.encoder_dim, name="encoder") if self.encoder_dim else None
        self.input_dropout = Dropout(self.dropout, name="input_dropout")
        self.output_dropout = Dropout(self.dropout, name="output_dropout")
        self.output_dense = keras.layers.Dense(self.num_outputs, name="logits")

    @property
    def representation_dim(self):
        """D: the width of the word representations before the encoder."""
        return (self.input_dim if self.mix is not None else 0) + self.word_embedding_dim

    def build(self, input_shape=None):
        if self.built:
            return
        if self.mix is not None:
            self.mix.build()
        if self.word_embedding is not None:
            self.word_embedding.build((None, None))
        width = self.representation_dim
        if self.encoder is not None:
            self.encoder.build((None, None, width))
            width = 2 * self.encoder_dim
        if not self.per_word and self.pooling == "mean_max":
            width *= 2
        self.output_dense.build((None, width))
        self.built = True

    def call(self, inputs, training=False):
        mask = inputs["padding_mask"]
        parts = []
        if self.mix is not None:
            layers = list(inputs["layers"])
            parts.append(tf.cast(self.mix(layers if self.layers_used == "all" else layers[-1:], mask=mask), tf.float32))
        if self.word_embedding is not None:
            parts.append(tf.cast(self.word_embedding(inputs["token_ids"]), tf.float32))
        x = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)  # [B, T, D]
        x, word_mask = word_positions(x, mask)  # [B, W, D]
        x = self.input_dropout(x, training=training)
        if self.encoder is not None:
            x = self.encoder(x, mask=word_mask)  # [B, W, 2U]
        if not self.per_word:
            x = masked_pool(x, word_mask, self.pooling)  # [B, 2U]
        logits = tf.cast(self.output_dense(self.output_dropout(x, training=training)), tf.float32)
        if self.per_word:
            logits = tf.where(word_mask[:, :, None], logits, 0.0)  # [B, W, K], 0 past the words
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(num_outputs=self.num_outputs, num_layers=self.num_layers, input_dim=self.input_dim,
                      per_word=self.per_word, layers=self.layers_used, features=self.features,
                      do_layer_norm=self.do_layer_norm, l2_coefficient=self.l2_coefficient, dropout=self.dropout,
                      vocabulary_size=self.vocabulary_size, word_embedding_dim=self.word_embedding_dim,
                      encoder_dim=self.encoder_dim, pooling=self.pooling)
        return config


def freeze(layer):
    """Sets `trainable = False` on a layer, every layer inside it and their weights.

    Not just `layer.trainable = False`: Keras' attribute tracking skips the assignment when the value is already
    False (a backbone deserialised from a .keras file comes back with trainable=False but its sublayers and weights
    trainable), so each layer's setter is called here directly.
    """
    for sub in [layer, *layer._flatten_layers(include_self=False)]:
        keras.layers.Layer.trainable.fset(sub, False)


def preprocessor_from_config(config):
    """An `ElmoPreprocessor` from its `get_config()` dict (the vocabulary and the tokenizer's options inside)."""
    config = dict(config)
    tokenizer = ElmoTokenizer(config.pop("vocabulary"), lowercase=config.pop("lowercase", False))
    return ElmoPreprocessor(tokenizer, **config)


class _ElmoTask:
    """What the classifier and the tagger share (a mixin listed before their `TextTask` base)."""

    per_word = False

    def _setup(self, num_outputs, layers, features, do_layer_norm, l2_coefficient, dropout, word_embedding_dim,
               encoder_dim, pooling, word_vocabulary_size):
        backbone = self.backbone
        freeze(backbone)  # frozen: out of trainable_variables, so no optimizer ever moves it
        if word_vocabulary_size is None:
            word_vocabulary_size = self.preprocessor.tokenizer.vocabulary_size if self.preprocessor is not None else 0
        if features != "elmo" and word_embedding_dim is None:
            word_embedding_dim = backbone.projection_dim
        self.word_vocabulary_size = int(word_vocabulary_size)
        self.head = ElmoTaskHead(num_outputs, backbone.num_layers + 1, 2 * backbone.projection_dim,
                                 per_word=self.per_word, layers=layers, features=features, do_layer_norm=do_layer_norm,
                                 l2_coefficient=l2_coefficient, dropout=dropout, vocabulary_size=word_vocabulary_size,
                                 word_embedding_dim=word_embedding_dim or 0, encoder_dim=encoder_dim, pooling=pooling,
                                 name="task_head")

    def build_from_config(self, config):
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        self.head.build()
        self.built = True

    # ---- the family contract ------------------------------------------------------------------------------
    def parts(self):
        return {"backbone": self.backbone, "head": self.head}

    def _options(self):
        h = self.head
        return {"layers": h.layers_used, "features": h.features, "do_layer_norm": h.do_layer_norm,
                "l2_coefficient": h.l2_coefficient, "dropout": h.dropout, "word_embedding_dim": h.word_embedding_dim,
                "encoder_dim": h.encoder_dim}

    def feature_mix(self):
        """The learned `ScalarMix` over every layer (for the export's `elmo` output), or None when this task mixes
        the top layer only or uses no biLM."""
        return self.head.mix if self.head.mix is not None and self.head.layers_used == "all" else None

    def default_optimizer(self):
        return self.finetune_optimizer(LEARNING_RATE, total_steps=None)

    def finetune_optimizer(self, learning_rate=LEARNING_RATE, total_steps=None):
        """Adam (no weight decay: the mix has its own L2; global-norm clip 5, allennlp's usual), its rate decayed
        linearly to 0 over total_steps when given. Only the head trains: the biLM is frozen."""
        schedule = learning_rate
        if total_steps:
            schedule = optim.WarmupLinearDecay(learning_rate, 0, total_steps)
        return optim.adamw(schedule, weight_decay=0.0, epsilon=1e-8, clipnorm=5.0, variables=self.trainable_variables)

    # ---- the network -------------------------------------------------------------------------------------
    def logits(self, features, training=False):
        """float32 logits from the preprocessor's features (what the export's task endpoint runs)."""
        inputs = {"token_ids": features["token_ids"], "padding_mask": features["padding_mask"]}
        if self.head.mix is not None:
            out = self.backbone({"char_ids": features["char_ids"], "padding_mask": features["padding_mask"]},
                                training=False)  # frozen: inference mode, and no gradient into it
            inputs["layers"] = [tf.stop_gradient(h) for h in out["layers"]]
        return self.head(inputs, training=training)

    def call(self, inputs, training=False):
        return self.logits(self.features(inputs), training=training)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "preprocessor": None if self.preprocessor is None else self.preprocessor.get_config(),
                "word_vocabulary_size": self.word_vocabulary_size, **self.task_config()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("kind", None)
        if isinstance(config.get("preprocessor"), dict):
            config["preprocessor"] = preprocessor_from_config(config["preprocessor"])
        return cls(**config)


def check_class_labels(labels, num_classes, num_texts=None):
    """Raises ValueError on class labels that are not one id in [0, num_classes) per text."""
    if isinstance(labels, tf.Tensor):
        labels = labels.numpy()
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"Class labels are one id per text, int [B]; got shape {values.shape} (per-word tags need "
                         "the tagging task).")
    if values.size and not (np.issubdtype(values.dtype, np.integer) or
                            (np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values)))):
        raise ValueError(f"Class labels must be integer ids 0..{num_classes - 1}; got {values[:5].tolist()!r} (map "
                         "label names to ids first).")
    if num_texts is not None and values.size != num_texts:
        raise ValueError(f"{num_texts} texts but {values.size} labels: give one label per text.")
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"Label {values[i]!r} of text {i} is outside 0..{num_classes - 1} (num_classes={num_classes}).")


@keras.saving.register_keras_serializable(package="zoo.elmo")
class ElmoClassifier(_ElmoTask, TextTask):
    """Sentence classification on frozen ELMo features (see the module docstring).

    Args:
      backbone: an `ElmoBackbone` (pretrained weights in it; frozen here).
      num_classes: K.
      preprocessor: an `ElmoPreprocessor`; with it the model takes raw strings.
      layers: "all" (a learned mix of every layer, the paper's) or "top" (the top layer only).
      features: "elmo", "elmo+words" (ELMo beside word embeddings learned from scratch) or "words" (no ELMo).
      do_layer_norm: normalise each layer before mixing (allennlp's do_layer_norm).
      l2_coefficient: L2 penalty on the mix weights (the paper's lambda; 0.001).
      dropout: on the word representations and the pooled vector (0.5, allennlp's Elmo default).
      word_embedding_dim: E with word features (default: P, the biLM's projection width).
      encoder_dim: U of the BiLSTM over the words (0: pool the features directly).
      pooling: "max" (default), "mean" or "mean_max".
      word_vocabulary_size: rows of the word embeddings (default: the preprocessor's vocabulary).

    Call args:
      inputs: strings [B] (str, list, numpy, tf.Tensor) or the preprocessor's feature dict.

    Returns:
      logits float32 [B, K].

    Example (a tiny biLM with random weights; use `FAMILY.load_pretrained(model_dir)` for a trained one):
      >>> import zoo
      >>> from zoo.elmo import ElmoBackbone, ElmoPreprocessor, ElmoTokenizer
      >>> tokenizer = ElmoTokenizer.learn(["a wonderful film", "a dull film"], 10)
      >>> backbone = ElmoBackbone(0, filters=((1, 4), (2, 8)), num_highway=1, projection_dim=8, lstm_dim=16)
      >>> model = zoo.family("elmo").task(backbone, ElmoPreprocessor(tokenizer, 8), num_classes=2, layers="all",
      ...                                 encoder_dim=8)
      >>> model.compile()                                # Adam 1e-3, cross-entropy (+ the mix's L2), accuracy
      >>> history = model.fit(["a wonderful film", "dull"], [1, 0], epochs=1, verbose=0)
      >>> model.predict_proba(["a wonderful film"]).shape
      (1, 2)
    """

    def __init__(self, backbone, num_classes, preprocessor=None, layers="all", features="elmo", do_layer_norm=False,
                 l2_coefficient=L2_COEFFICIENT, dropout=0.5, word_embedding_dim=None, encoder_dim=64, pooling="max",
                 word_vocabulary_size=None, **kwargs):
        if isinstance(preprocessor, dict):
            preprocessor = preprocessor_from_config(preprocessor)
        super().__init__(backbone, preprocessor, **kwargs)
        self.num_classes = int(num_classes)
        self._setup(self.num_classes, layers, features, do_layer_norm, l2_coefficient, dropout, word_embedding_dim,
                    encoder_dim, pooling or "max", word_vocabulary_size)

    def task_config(self):
        return {"kind": "classification", "num_classes": self.num_classes, **self._options(),
                "pooling": self.head.pooling}

    def check_labels(self, x, y):
        """`check_class_labels` on labels given in Python (one per text of `x` when it is raw strings)."""
        if y is None or isinstance(y, tf.data.Dataset) or isinstance(x, tf.data.Dataset):
            return
        texts = as_text_input(x)
        rows = int(texts.shape[0]) if isinstance(texts, tf.Tensor) and texts.shape.rank == 1 else None
        check_class_labels(y, self.num_classes, rows)

    def fit(self, x=None, y=None, **kwargs):
        self.check_labels(x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):
            self.check_labels(validation[0], validation[1])
        return super().fit(x, y, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        self.check_labels(x, y)
        return super().evaluate(x, y, **kwargs)


@keras.saving.register_keras_serializable(package="zoo.elmo")
class ElmoTagger(_ElmoTask, TextTagger):
    """Per-word tags (sequence labelling) on frozen ELMo features (see the module docstring).

    Sentences are split on whitespace (join pre-split tokens with spaces); the model tags each sentence's first
    T - 2 words (its preprocessor's length). Labels: per-word tag ids in any ragged form, -1 (`IGNORED_TAG`)
    where there is no word; the loss and the accuracy count real words only.

    Args: as `ElmoClassifier`'s (num_classes = K tags; no pooling).

    Returns:
      logits float32 [B, W, K] (0 past each sentence's words).

    Example (a tiny biLM with random weights; use `FAMILY.load_pretrained(model_dir)` for a trained one):
      >>> import zoo
      >>> from zoo.elmo import ElmoBackbone, ElmoPreprocessor, ElmoTokenizer
      >>> tokenizer = ElmoTokenizer.learn(["John lives in Paris"], 10)
      >>> backbone = ElmoBackbone(0, filters=((1, 4), (2, 8)), num_highway=1, projection_dim=8, lstm_dim=16)
      >>> model = zoo.family("elmo").task(backbone, ElmoPreprocessor(tokenizer, 8), num_classes=3, kind="tagging",
      ...                                 encoder_dim=8)
      >>> model.compile()                                     # TagCrossEntropy, TagAccuracy (padding ignored)
      >>> history = model.fit(["John lives in Paris", "hi"], [[1, 0, 0, 2], [0]], epochs=1, verbose=0)
      >>> [len(tags) for tags in model.predict_tags(["Mary visits Rome", "hi"])]   # one tag id per word
      [3, 1]
    """

    per_word = True

    def __init__(self, backbone, num_classes, preprocessor=None, layers="all", features="elmo", do_layer_norm=False,
                 l2_coefficient=L2_COEFFICIENT, dropout=0.5, word_embedding_dim=None, encoder_dim=64, pooling=None,
                 word_vocabulary_size=None, **kwargs):
        if isinstance(preprocessor, dict):
            preprocessor = preprocessor_from_config(preprocessor)
        super().__init__(backbone, preprocessor, **kwargs)
        self.num_classes = int(num_classes)
        self._setup(self.num_classes, layers, features, do_layer_norm, l2_coefficient, dropout, word_embedding_dim,
                    encoder_dim, "max", word_vocabulary_size)

    @property
    def max_words(self):
        return None if self.preprocessor is None else self.preprocessor.sequence_length - 2

    def task_config(self):
        return {"kind": "tagging", "num_classes": self.num_classes, **self._options()}

    def word_counts(self, inputs):
        mask = self.features(inputs)["padding_mask"]
        return tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 2, 0)

    def sentence_word_counts(self, texts):
        if self.preprocessor is None:
            return None
        return self.preprocessor.tokenizer.words(tf.reshape(texts, [-1])).row_lengths().numpy()


def build_task(backbone, preprocessor, num_classes, kind="classification", **options):
    """A built `ElmoClassifier` (kind "classification") or `ElmoTagger` ("tagging")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
    cls = ElmoClassifier if kind == "classification" else ElmoTagger
    model = cls(backbone, num_classes, preprocessor=preprocessor, **options)
    model.build()
    return model
