"""Optimisers and learning-rate schedules shared by every family."""

import keras
from keras import ops

# BERT and GPT exclude LayerNorm gains/offsets and all biases from weight decay (google-research/bert
# optimization.py matches the names "LayerNorm", "layer_norm", "bias"; GPT: "non-bias, non-gain weights").
# In these models those are exactly the 1-D variables, which is robust to any layer naming.


@keras.saving.register_keras_serializable(package="zoo")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then linear decay to `end` at `total_steps`.

    google-research/bert: lr 1e-4, 10k warmup, 1M steps, polynomial (power 1) decay to 0.
    """

    def __init__(self, peak, warmup_steps, total_steps, end=0.0):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end = float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        decay_span = ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32")
        warm = self.peak * step / warmup
        frac = ops.clip((step - self.warmup_steps) / decay_span, 0.0, 1.0)
        decayed = self.peak + (self.end - self.peak) * frac
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "end": self.end}


def adamw(learning_rate, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6, clipnorm=1.0, variables=None):
    """AdamW as BERT trains (decoupled decay 0.01, eps 1e-6, global-norm clip 1.0), decay off for LN and biases.

    Args:
      learning_rate: float or schedule.
      variables: the model's trainable variables; the 1-D ones (biases, LayerNorm) are excluded from decay.
    """
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=clipnorm,
    )
    if variables is not None:
        optimizer.exclude_from_weight_decay(var_list=[v for v in variables if excluded_from_decay(v)])
    return optimizer


def excluded_from_decay(variable):
    """True for LayerNorm gains/offsets and biases: exactly the 1-D variables of BERT, GPT and ELMo."""
    return len(variable.shape) == 1
