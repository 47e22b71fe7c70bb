"""`TextTask`: the Keras base of every family's fine-tunable task model (raw strings in, task outputs out).

Written once here: raw-string inputs in every form a user passes them (a str, a list of str, a numpy array, a
tf.Tensor, a (texts_a, texts_b) pair or (contexts [B], candidates [B, K]), also as fit's validation_data),
`predict_proba`, compile defaults that survive a `.keras` round trip, and the task model's half of the family
contract: `parts()` (what checkpoints, exports and bf16 twins carry), `task_config()` (what the model dir records)
and `finetune_optimizer(learning_rate, total_steps)` (what trainers.finetune trains with; BERT's recipe unless a
family overrides it). A family's task model subclasses it and implements `call(features_or_strings, training)` and
the logits its serving endpoints read.

Shape legend: B batch, K classes.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo import optim
from zoo.layers.islands import WholeStepXlaTrainStep


def as_text_input(x):
    """Raw-string input in the form Keras and tf.data accept: string tensors [B], or a pair (texts_a, texts_b).

    Accepts a str, a list/tuple of str, a numpy array of str, a string tf.Tensor, or a 2-tuple of any of those
    (sentence pairs); dicts of features and datasets pass through unchanged.
    """
    if isinstance(x, (dict, tf.data.Dataset)) or x is None:
        return x
    if isinstance(x, tuple) and len(x) == 2 and not all(isinstance(t, (str, bytes)) for t in x):
        return as_text_input(x[0]), as_text_input(x[1])
    if isinstance(x, (str, bytes)):
        x = [x]
    if isinstance(x, (list, tuple, np.ndarray)):
        return tf.constant(list(x) if isinstance(x, tuple) else x, dtype=tf.string)
    return x


class TextTask(WholeStepXlaTrainStep, keras.Model):
    """Base of the families' task models; see the module docstring.

    Args:
      backbone: the family's backbone (pretrained weights already in it).
      preprocessor: the family's preprocessor; with it the model takes raw strings.
    """

    def __init__(self, backbone, preprocessor=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self.backbone = backbone
        self.preprocessor = preprocessor

    # ---- the family contract -----------------------------------------------------------------------------
    def parts(self):
        """{name: layer} of everything with weights: checkpoints, exports and bf16 twins carry these."""
        raise NotImplementedError

    def task_config(self):
        """The task options (JSON) that rebuild this model on a backbone: `Family.task(backbone, pre, **these)`."""
        raise NotImplementedError

    # ---- raw strings ----------------------------------------------------------------------------------------
    def features(self, inputs):
        """Raw strings (or a pair of them) -> feature dict; feature dicts pass through."""
        if isinstance(inputs, dict):
            return inputs
        if self.preprocessor is None:
            raise ValueError(f"This {type(self).__name__} has no preprocessor, so it takes feature dicts, not strings.")
        inputs = as_text_input(inputs)
        if isinstance(inputs, tuple):
            return self.preprocessor(*inputs)
        return self.preprocessor(inputs)

    def fit(self, x=None, y=None, **kwargs):
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself (Keras would ignore it, with a warning)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):  # (x, y[, weights]) in any text form
            kwargs["validation_data"] = (as_text_input(validation[0]), np.asarray(validation[1]), *validation[2:])
        return super().fit(as_text_input(x), None if y is None else np.asarray(y), **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        return super().evaluate(as_text_input(x), None if y is None else np.asarray(y), **kwargs)

    def predict(self, x, **kwargs):
        return super().predict(as_text_input(x), **kwargs)

    def predict_proba(self, inputs, batch_size=32):
        """Class probabilities float32 [B, K] for raw strings (any form `as_text_input` takes)."""
        return tf.nn.softmax(self.predict(inputs, batch_size=batch_size, verbose=0), axis=-1).numpy()

    # ---- compile defaults that survive saving ------------------------------------------------------------------
    def default_optimizer(self):
        """The optimizer `compile()` uses by default (the family's fine-tuning recipe)."""
        raise NotImplementedError

    def finetune_optimizer(self, learning_rate, total_steps):
        """The optimizer of a fine-tuning run of `total_steps` steps peaking at `learning_rate` (trainers.finetune).

        This default is BERT's recipe: AdamW, decoupled decay 0.01 off biases and gains, warmup over the first 10 %
        of the steps then linear decay to 0, global-norm clip 1. A family whose paper says otherwise overrides it.
        """
        return optim.make_optimizer("adamw_linear", learning_rate=learning_rate, warmup_steps=int(0.1 * total_steps),
                                    total_steps=total_steps, weight_decay=0.01, variables=self.trainable_variables)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """keras.Model.compile with fine-tuning defaults: the family's optimizer, cross-entropy on logits, accuracy.

        XLA stays off by default because string preprocessing runs inside the model.
        """
        if optimizer == "auto":
            optimizer = self.default_optimizer()
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Keras skips compile() on reload when a model overrides it; this one replays the saved settings.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)


# ---- per-word tagging (sequence labelling) ------------------------------------------------------------------
# Shape legend here: B sentences, W words (the model's: its preprocessor's cut), W' the labels' width, K tags.

IGNORED_TAG = -1  # a label position without a tag: padding, or a word the model's length cut off


def pad_tags(tags, width=None):
    """Per-word tags in any form (a list of lists of ints, a ragged or dense array, a tf.RaggedTensor) -> int32
    numpy [B, W'] padded with `IGNORED_TAG`; W' = `width` or the longest row."""
    if isinstance(tags, tf.RaggedTensor):
        tags = tags.to_list()
    if isinstance(tags, (np.ndarray, tf.Tensor)) and np.ndim(tags) == 2 and np.asarray(tags).dtype != object:
        rows = np.asarray(tags, np.int32)
        return rows if width is None else align_tags(rows, width).numpy()
    rows = [list(np.asarray(r, np.int64).reshape(-1)) for r in tags]
    width = max([len(r) for r in rows], default=0) if width is None else int(width)
    out = np.full((len(rows), width), IGNORED_TAG, np.int32)
    for i, r in enumerate(rows):
        out[i, :min(len(r), width)] = r[:width]
    return out


def align_tags(labels, width):
    """labels int [B, W'] -> int32 [B, width]: cut, or padded with `IGNORED_TAG` (the model's words are the first
    `width` of each sentence: labels past them are not scored)."""
    labels = tf.cast(labels, tf.int32)
    labels = labels[:, :width]
    return tf.pad(labels, [[0, 0], [0, tf.maximum(width - tf.shape(labels)[1], 0)]], constant_values=IGNORED_TAG)


def _tag_terms(labels, logits):
    """(labels aligned to the logits' words and clipped to >= 0, valid float32 [B, W])."""
    labels = align_tags(labels, tf.shape(logits)[1])
    valid = labels != IGNORED_TAG
    return tf.where(valid, labels, 0), tf.cast(valid, tf.float32)


@keras.saving.register_keras_serializable(package="zoo")
class TagCrossEntropy(keras.losses.Loss):
    """The mean cross-entropy over the tagged words of a batch: labels int [B, W'] (`IGNORED_TAG` where no word is),
    logits float [B, W, K]. Labels are aligned to the logits' W first (`align_tags`); padding never counts, in the
    sum or in the count, whatever the batch's padding."""

    def __init__(self, name="tag_cross_entropy", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)  # `call` already divides by the tagged words

    def call(self, y_true, y_pred):
        labels, valid = _tag_terms(y_true, y_pred)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(y_pred, tf.float32))  # [B, W]
        return ce * valid / tf.maximum(tf.reduce_sum(valid), 1.0)

    def get_config(self):
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="zoo")
class TagAccuracy(keras.metrics.Metric):
    """Share of tagged words whose argmax tag is right (labels as `TagCrossEntropy`'s; padding never counts)."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, valid = _tag_terms(y_true, y_pred)
        hits = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32), labels), tf.float32) * valid
        self.correct.assign_add(tf.reduce_sum(hits))
        self.total.assign_add(tf.reduce_sum(valid))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)


def check_tags(tags, num_classes=None, word_counts=None):
    """Raises ValueError naming the first bad row of per-word tags (any form `pad_tags` takes).

    A tag is an id in [0, num_classes) or `IGNORED_TAG` (a word without one). With `word_counts` (int [B]: the words
    of each sentence before any cut), a ragged row (a list) must hold exactly one tag per word, and a dense row
    (an array [B, W'] padded with `IGNORED_TAG`) no tag past its sentence's words.
    """
    if isinstance(tags, tf.RaggedTensor):
        tags = tags.to_list()
    if isinstance(tags, tf.Tensor):
        tags = tags.numpy()
    dense = isinstance(tags, np.ndarray) and tags.dtype != object and tags.ndim == 2
    if isinstance(tags, np.ndarray) and tags.dtype != object and tags.ndim != 2:
        raise ValueError(f"Per-word tags are one row of tag ids per sentence ([B, W'] or a list of lists); got an array "
                         f"of shape {tags.shape}.")
    rows = list(tags)
    if word_counts is not None and len(rows) != len(word_counts):
        raise ValueError(f"{len(word_counts)} sentences but {len(rows)} rows of tags: give one row per sentence.")
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or np.ndim(row) != 1:
            raise ValueError(f"Tags of sentence {i}: expected a list of tag ids (one per word), got {row!r:.80}.")
        values = np.asarray(row)
        if values.size and not (np.issubdtype(values.dtype, np.integer) or
                                (np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values)))):
            raise ValueError(f"Tags of sentence {i} are not integer tag ids: {list(row)[:10]!r} (map tag names to "
                             f"0..K-1 first).")
        values = values.astype(np.int64)
        bad = (values != IGNORED_TAG) & ((values < 0) | (values >= (num_classes if num_classes else np.iinfo(np.int64).max)))
        if bad.any():
            j = int(np.argmax(bad))
            what = f"0..{num_classes - 1}" if num_classes else ">= 0"
            raise ValueError(f"Tag {int(values[j])} of word {j} of sentence {i} is not a tag id ({what}, or "
                             f"{IGNORED_TAG} for a word without a tag; num_classes={num_classes}).")
        if word_counts is None:
            continue
        n = int(word_counts[i])
        if dense:
            tagged = np.nonzero(values != IGNORED_TAG)[0]
            if tagged.size and tagged[-1] >= n:
                raise ValueError(f"Sentence {i} has {n} words but a tag at word {int(tagged[-1])}: tags past the words "
                                 f"must be {IGNORED_TAG} (padding).")
        elif values.size != n:
            raise ValueError(f"Sentence {i} has {n} words but {values.size} tags: give one tag per word ({IGNORED_TAG} "
                             "for a word without one); words are split on whitespace.")


class TextTagger(TextTask):
    """Base of per-word task models: raw sentences (or the family's word inputs) in, logits [B, W, K] out.

    Labels are per-word tags in any ragged form (`pad_tags`: lists of lists work), `IGNORED_TAG` where there is no
    word; `compile()` defaults to `TagCrossEntropy` and `TagAccuracy` (named accuracy), so padding is ignored in
    the loss and the metrics. `fit` and `evaluate` check tags given in Python (`check_tags`: ids in [0, K), one
    per word) before anything runs. A subclass says how many words the model keeps of each sentence
    (`max_words`), how many words each sentence has (`sentence_word_counts`) and tags (`word_counts`).
    """

    max_words = None  # W of training batches (labels are padded to it); None: the longest labelled sentence
    num_classes = None  # K: a subclass sets it

    def _labels(self, y):
        if y is None or isinstance(y, tf.data.Dataset):
            return y
        return pad_tags(y, self.max_words)

    def check_labels(self, x, y):
        """`check_tags` on labels given in Python, against the words of `x` when it is raw strings."""
        if y is None or isinstance(y, tf.data.Dataset):
            return
        texts = as_text_input(x)
        counts = None
        if isinstance(texts, tf.Tensor) and texts.dtype == tf.string and texts.shape.rank == 1:
            counts = self.sentence_word_counts(texts)
        check_tags(y, self.num_classes, counts)

    def fit(self, x=None, y=None, **kwargs):
        self.check_labels(x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) in (2, 3):
            self.check_labels(validation[0], validation[1])
            kwargs["validation_data"] = (as_text_input(validation[0]), self._labels(validation[1]), *validation[2:])
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)
        return keras.Model.fit(self, as_text_input(x), self._labels(y), **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        self.check_labels(x, y)
        return keras.Model.evaluate(self, as_text_input(x), self._labels(y), **kwargs)

    def predict(self, x, **kwargs):
        """logits [B, W, K] as numpy: Keras' predict, batches of different widths (a trimming preprocessor's)
        zero-padded to the widest."""
        out = super().predict(x, **kwargs)
        if isinstance(out, tf.RaggedTensor):
            out = out.to_tensor().numpy()
        return out

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """`TextTask.compile` with per-word defaults: `TagCrossEntropy` and `TagAccuracy`."""
        if loss == "auto":
            loss = TagCrossEntropy()
        if metrics == "auto":
            metrics = [TagAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def predict_tags(self, inputs, batch_size=32):
        """[[tag id per word] per sentence] (the model's words: each sentence's first W)."""
        inputs = as_text_input(inputs)
        out = []
        for start in range(0, int(inputs.shape[0]), batch_size):
            batch = inputs[start:start + batch_size]
            logits = self(batch)
            lengths = self.word_counts(batch).numpy()
            tags = tf.argmax(logits, axis=-1).numpy()
            out.extend(row[:n].tolist() for row, n in zip(tags, lengths))
        return out

    def word_counts(self, inputs):
        """int [B]: the words the model tags in each input (its W cut applied)."""
        raise NotImplementedError

    def sentence_word_counts(self, texts):
        """int numpy [B]: the words of each raw sentence before the model's cut (what tags are checked against);
        None when the model cannot tell."""
        return None
