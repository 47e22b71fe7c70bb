"""GPTClassifier: GPT-1 fine-tuned as the paper does it, on raw strings: its four input transforms, a linear head
on the extract token's hidden state, and the auxiliary language-modelling loss.

Radford et al. 2018, section 3.2-3.3: L3 = L2(task) + lm_coef * L1(LM), lm_coef = 0.5. As in
openai/finetune-transformer-lm (`train.py`): the LM loss of each sequence is its mean next-token cross-entropy over
its real tokens, then the mean over the sequences of the batch (every sequence the model ran: both orders of a
similarity pair, every candidate of a multiple-choice example); the LM head is the tied token embeddings
(`GPTCausalLM`'s); the classifier reads the hidden state at the `_classify_` (extract) token, through dropout 0.1 and
a linear layer initialised N(0, 0.02).

Shape legend: B batch, S sequences per example (1; 2 for similarity; K for multiple choice), N = B * S, T length,
H hidden, K classes (or candidates), V vocabulary.
"""

import contextlib
import threading

import keras
import tensorflow as tf

from zoo import optim
from zoo.gpt.causal_lm import GPTCausalLM
from zoo.gpt.preprocessor import STACKED_FORMS, GPTPreprocessor
from zoo.layers import ClassificationHead
from zoo.task import TextTask

TRANSFORMS = ("classification", "entailment", "similarity", "multiple_choice")
# The paper's fine-tuning recipe: Adam at 6.25e-5, warmup over 0.2 % of training, then linear decay.
LEARNING_RATE = 6.25e-5
WARMUP_FRACTION = 0.002

_state = threading.local()


@contextlib.contextmanager
def _evaluating():
    """Marks what is traced inside as an evaluation step: the auxiliary LM loss is computed there too."""
    previous = getattr(_state, "evaluating", False)
    _state.evaluating = True
    try:
        yield
    finally:
        _state.evaluating = previous


@keras.saving.register_keras_serializable(package="zoo.gpt")
class GPTClassifier(TextTask):
    """A GPT-1 task model in one of the paper's input transforms, with the auxiliary LM loss.

    Args:
      backbone: a `GPTBackbone` (pretrained weights already in it).
      num_classes: K classes (classification, entailment, similarity); for multiple choice the usual number of
        candidates, recorded only: the head scores each candidate, so any K works.
      preprocessor: a `GPTPreprocessor` (any form: it is switched to the transform's); with it the model takes raw
        strings.
      transform: "classification" (texts), "entailment" (premise, hypothesis), "similarity" (text_a, text_b: both
        orders through the model, the two extract representations added before the head) or "multiple_choice"
        (contexts [B], candidates [B, K]: one score per candidate, softmax across the K).
      lm_coef: weight of the auxiliary LM loss (0.5 in the paper; 0 turns it off and skips its computation).
      dropout: classifier dropout (0.1 in the paper).

    Call args:
      inputs: strings [B]; a pair (texts_a [B], texts_b [B]); (contexts [B], candidates [B, K]); or the feature
        dict of the preprocessor ([B, T], or [B, S, T] for similarity and multiple choice).
      training: dropout, and the auxiliary LM loss (added with `add_loss`, so `fit` minimises task + lm_coef * LM
        and reports the LM term as the `lm_loss` metric). `evaluate` computes and reports it too (its `loss`
        is the same sum as training's); `predict` and plain inference calls skip it.

    Returns:
      logits float32 [B, K].

    Example:
      >>> from zoo.gpt import GPTBackbone, GPTClassifier, GPTPreprocessor
      >>> from zoo.text.bpe import BytePairTokenizer
      >>> tokenizer = BytePairTokenizer.learn(["a wonderful film", "a dull film"], size=40)
      >>> backbone = GPTBackbone(tokenizer.vocabulary_size, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
      >>> model = GPTClassifier(backbone, 2, GPTPreprocessor(tokenizer, 16, form="classification"))
      >>> model.compile()                        # Adam 6.25e-5, L2 0.01 on matrices, clip 1, cross-entropy, accuracy
      >>> history = model.fit(["a wonderful film", "dull"], [1, 0], epochs=1, verbose=0)  # loss, accuracy, lm_loss
      >>> model.predict_proba(["a wonderful film"]).shape
      (1, 2)
    """

    def __init__(self, backbone, num_classes, preprocessor=None, transform="classification", lm_coef=0.5, dropout=0.1,
                 **kwargs):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}; got {transform!r}.")
        if isinstance(preprocessor, dict):
            preprocessor = GPTPreprocessor(**preprocessor)
        if preprocessor is not None and preprocessor.form != transform:
            preprocessor = preprocessor.with_form(transform)
        super().__init__(backbone, preprocessor, **kwargs)
        if preprocessor is not None and preprocessor.sequence_length > self.backbone.max_sequence_length:
            raise ValueError(f"sequence_length {preprocessor.sequence_length} exceeds the model's context of "
                             f"{self.backbone.max_sequence_length} positions.")
        if lm_coef < 0:
            raise ValueError(f"lm_coef must be >= 0; got {lm_coef}.")
        self.num_classes = int(num_classes)
        self.transform = transform
        self.lm_coef = float(lm_coef)
        self.dropout = float(dropout)
        init = keras.initializers.RandomNormal(stddev=self.backbone.initializer_range)
        outputs = 1 if transform == "multiple_choice" else self.num_classes
        self.head = ClassificationHead(outputs, self.dropout, init, name="classification_head")
        self.language_model = GPTCausalLM(self.backbone)  # the LM head tied to the token embeddings (no weights of its own)
        self.lm_loss_tracker = keras.metrics.Mean(name="lm_loss") if self.lm_coef else None

    @classmethod
    def from_model_dir(cls, model_dir, num_classes, transform="classification", lm_coef=0.5, dropout=0.1,
                       sequence_length=None):
        """Builds a task model on a pretrained GPT from a zoo model dir or a zoo SavedModel export."""
        from zoo.gpt import FAMILY

        backbone, preprocessor = FAMILY.load_pretrained(model_dir, sequence_length=sequence_length)
        return FAMILY.task(backbone, preprocessor, num_classes, transform=transform, lm_coef=lm_coef, dropout=dropout)

    def build_from_config(self, config):
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        self.language_model.build()
        self.head.build((None, self.backbone.hidden_dim))
        self.built = True

    # ---- the family contract -------------------------------------------------------------------------------
    def parts(self):
        return {"backbone": self.backbone, "head": self.head}

    def task_config(self):
        return {"num_classes": self.num_classes, "transform": self.transform, "lm_coef": self.lm_coef,
                "dropout": self.dropout}

    def default_optimizer(self):
        # The paper's rate without a schedule: compile() cannot know the run's length (finetune_optimizer can).
        return self.finetune_optimizer(LEARNING_RATE, total_steps=None)

    def finetune_optimizer(self, learning_rate=LEARNING_RATE, total_steps=None):
        """GPT-1's fine-tuning optimizer (finetune-transformer-lm `opt.py`): Adam (b2 0.999, eps 1e-8), decoupled
        L2 0.01 on matrices only (scaled by the learning rate, as there), global-norm clip 1; with total_steps,
        warmup over 0.2 % of them then linear decay to 0 (there: the decay runs from step 0, a negligible
        difference at 0.2 %)."""
        schedule = learning_rate
        if total_steps:
            schedule = optim.WarmupLinearDecay(learning_rate, int(WARMUP_FRACTION * total_steps), total_steps)
        return optim.adamw(schedule, weight_decay=0.01, epsilon=1e-8, clipnorm=1.0, variables=self.trainable_variables)

    # ---- the network ------------------------------------------------------------------------------------------
    def call(self, inputs, training=False):
        features = self.features(inputs)
        logits, flat, hidden = self._forward(features, training)
        if self.lm_coef and (training or getattr(_state, "evaluating", False)):
            lm_loss = self.lm_loss(flat, hidden)
            self.add_loss(self.lm_coef * lm_loss)
            self.lm_loss_tracker.update_state(lm_loss)
        return logits

    def test_step(self, data):
        with _evaluating():  # read while Keras traces the step
            return super().test_step(data)

    def logits(self, features, training=False):
        """float32 [B, K] from the preprocessor's features (what the export's task endpoint runs)."""
        return self._forward(features, training)[0]

    def _forward(self, features, training):
        """(logits float32 [B, K], flat features {token_ids, padding_mask} [N, T], hidden [N, T, H])."""
        ids, mask = features["token_ids"], features["padding_mask"]
        length = tf.shape(ids)[-1]
        flat = {"token_ids": tf.reshape(ids, [-1, length]), "padding_mask": tf.reshape(mask, [-1, length])}  # [N, T]
        hidden = self.backbone(flat, training=training)["sequence_output"]  # [N, T, H]
        # The extract token closes every sequence and padding is on the right: it sits at the last real position.
        extract = tf.maximum(tf.reduce_sum(tf.cast(flat["padding_mask"], tf.int32), axis=1) - 1, 0)  # [N]
        pooled = tf.gather(hidden, extract, batch_dims=1)  # [N, H]
        if self.transform in STACKED_FORMS:
            pooled = tf.reshape(pooled, tf.concat([tf.shape(ids)[:2], [self.backbone.hidden_dim]], 0))  # [B, S, H]
        if self.transform == "similarity":
            pooled = tf.reduce_sum(pooled, axis=1)  # [B, H]: the two orders' representations added (the paper)
        logits = self.head(pooled, training=training)  # [B, K], or [B, K, 1] for multiple choice
        if self.transform == "multiple_choice":
            logits = logits[..., 0]  # one score per candidate; the loss's softmax runs across the K
        return logits, flat, hidden

    def lm_loss(self, flat, hidden):
        """The auxiliary LM loss, float32 scalar: each sequence's mean next-token cross-entropy over its real
        tokens (the tied LM head on the same forward pass), then the mean over the N sequences (0 for N = 0)."""
        ce, _, weights = self.language_model.token_losses(flat, hidden=hidden)  # [N, T - 1] each
        per_sequence = tf.reduce_sum(ce * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)  # [N]
        return tf.math.divide_no_nan(tf.reduce_sum(per_sequence), tf.cast(tf.size(per_sequence), tf.float32))

    # ---- serialization ------------------------------------------------------------------------------------------
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
