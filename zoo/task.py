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
