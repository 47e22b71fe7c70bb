"""Optimisers and learning-rate schedules shared by every family."""

import keras
import tensorflow as tf
from keras import ops

from zoo import kernels

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


@keras.saving.register_keras_serializable(package="zoo")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then cosine annealing to `end` at `total_steps`.

    GPT-1 (Radford et al. 2018): peak 2.5e-4, 2,000 warmup updates, cosine to 0.
    """

    def __init__(self, peak, warmup_steps, total_steps, end=0.0):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.end = float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / ops.cast(max(self.warmup_steps, 1), "float32")
        frac = ops.clip((step - self.warmup_steps) / ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32"), 0.0, 1.0)
        decayed = self.end + 0.5 * (self.peak - self.end) * (1.0 + ops.cos(frac * 3.141592653589793))
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, "end": self.end}


def adamw(learning_rate, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6, clipnorm=1.0, variables=None):
    """AdamW as BERT trains (decoupled decay 0.01, eps 1e-6, global-norm clip 1.0), decay off for LN and biases.

    Args:
      learning_rate: float or schedule.
      variables: the model's trainable variables; the 1-D ones (biases, LayerNorm) are excluded from decay.

    Returns:
      a `FusedAdamW` (Keras' AdamW maths, fused kernels).
    """
    optimizer = FusedAdamW(
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


@keras.saving.register_keras_serializable(package="zoo")
class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with the same maths and variables, in fewer passes over memory.

    On CPUs the optimizer is memory-bound: Keras' update is ~10 elementwise ops per variable (each a full pass
    over 110M floats at BERT-base), as many as the backward pass's non-matmul work. Here:
      * the Adam update of each variable is TensorFlow's fused `ResourceApplyAdam` kernel (one pass over
        var, m, v and the gradient; the same formula as Keras: lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps));
      * decoupled weight decay is one multiply and a buffer-swapping assign, var <- var * (1 - lr * wd);
      * the global gradient norm uses `tf.nn.l2_loss` (one pass per gradient, no squared temporaries) and is
        taken AFTER the cross-replica gradient sum. Keras clips each replica's gradient by that replica's own
        norm before summing; with each loss normalised by its global count (zoo.training.loop), clipping the sum
        is what makes a step on R replicas the step of one device on the whole global batch.
    Checkpoints are interchangeable with Keras' AdamW (same slot variables). Sparse gradients and amsgrad take
    Keras' own path.

    With `use_native_kernels` (set by zoo.training.loop, whose update runs outside any XLA compile) on a CPU-only
    machine where zoo/kernels/fused_adamw.cc builds, clip, decay and Adam are one pass per variable
    (`ZooApplyAdamW`) instead of three: the update is memory-bound (~28 bytes per parameter for Adam alone), so
    the passes it saves are the gain. Same formula, float32 throughout.

    Tried and dropped: decay + clip + Adam as one XLA loop per variable (XLA:CPU emits three loops for the three
    outputs, no faster than this: BERT-base step 2,172 vs 2,167 ms in an in-process A/B on the AMX Xeon).
    """

    use_native_kernels = False  # the zoo's training loop turns it on; Keras' fit (maybe XLA-compiled) leaves it off

    def _use_weight_decay(self, variable):
        # Biases and gains (the 1-D variables) are never decayed, also after a `.keras` reload, where Keras'
        # per-variable exclusion list is not serialized.
        return not excluded_from_decay(variable) and super()._use_weight_decay(variable)

    def _native_kernel(self):
        """The ZooApplyAdamW op function when this update may use it (see the class docstring), else None."""
        if not (self.use_native_kernels and self._clips_the_sum() and not self.amsgrad):
            return None
        if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
            return None
        library = kernels.load("fused_adamw")
        return None if library is None else library.zoo_apply_adam_w

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        local_step = ops.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=ops.power(ops.cast(self.beta_1, dtype), local_step),
            beta2_power=ops.power(ops.cast(self.beta_2, dtype), local_step),
            lr=ops.cast(learning_rate, dtype),
            beta1=ops.cast(self.beta_1, dtype),
            beta2=ops.cast(self.beta_2, dtype),
            epsilon=ops.cast(self.epsilon, dtype),
            grad=ops.cast(gradient, dtype),
        )

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or self._native_kernel() is not None:  # decayed inside the fused update
            return

        def decay(distribution, variables):
            def decay_one(variable):
                if self._use_weight_decay(variable):
                    variable.assign(variable * self._decay_keep(self.learning_rate, variable.dtype))

            for variable in variables:
                variable = variable.value if isinstance(variable, keras.Variable) else variable
                distribution.extended.update(variable, decay_one, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(decay, self._distribution_strategy, variables)

    def _decay_keep(self, learning_rate, dtype):
        """1 - lr * weight_decay: decoupled decay as one multiply of the variable."""
        return 1.0 - ops.cast(learning_rate, dtype) * ops.cast(self.weight_decay, dtype)

    def _clips_the_sum(self):
        """True when the only clip is the global-norm one, which this class takes after the all-reduce."""
        return bool(self.global_clipnorm and self.global_clipnorm > 0 and self.clipnorm is None and self.clipvalue is None)

    def _clip_gradients(self, grads):
        if self._clips_the_sum():
            return grads  # Clipped in _backend_update_step, after the cross-replica sum.
        return super()._clip_gradients(grads)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._clips_the_sum():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # Keras' own update (all-reduce, then update_step per variable under the strategy), clipped in between.
        trainable_variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        grads_and_vars = self._all_reduce_sum_gradients(list(zip(grads, trainable_variables)))
        native = self._native_kernel()
        if native is None:
            clipped = global_norm_clip([g for g, _ in grads_and_vars], self.global_clipnorm)
            tf.__internal__.distribute.interim.maybe_merge_call(
                self._distributed_tf_update_step,
                self._distribution_strategy,
                [(g, v) for g, (_, v) in zip(clipped, grads_and_vars)],
                learning_rate,
            )
            return
        scale = global_norm_scale([g for g, _ in grads_and_vars], self.global_clipnorm)

        def update(distribution, grads_and_vars, scale, learning_rate):
            for gradient, variable in grads_and_vars:  # per replica values are unwrapped to the variable's copy
                distribution.extended.update(variable, self._native_update_step, args=(gradient, scale, learning_rate, native),
                                             group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(update, self._distribution_strategy, grads_and_vars, scale,
                                                            learning_rate)

    def _native_update_step(self, variable, gradient, scale, learning_rate, native):
        """Decay, clip scale and Adam of one variable: one ZooApplyAdamW pass, or TF ops where it does not apply."""
        if gradient is None:
            return
        decayed = self.weight_decay is not None and self._use_weight_decay(variable)
        on_cpu = tf.DeviceSpec.from_string(variable.device or "").device_type in (None, "CPU")  # the op's only kernel
        if isinstance(gradient, tf.IndexedSlices) or variable.dtype != tf.float32 or not on_cpu:
            if decayed:
                variable.assign(variable * self._decay_keep(learning_rate, variable.dtype))
            return self.update_step(_scaled(gradient, scale), variable, learning_rate)
        index = self._get_variable_index(variable)
        local_step = ops.cast(self.iterations + 1, tf.float32)
        lr = ops.cast(learning_rate, tf.float32)
        # alpha as TF's ApplyAdam computes it: lr * sqrt(1 - beta2^t) / (1 - beta1^t).
        alpha = lr * tf.sqrt(1.0 - ops.power(ops.cast(self.beta_2, tf.float32), local_step)) / (
            1.0 - ops.power(ops.cast(self.beta_1, tf.float32), local_step))
        keep = self._decay_keep(learning_rate, tf.float32) if decayed else tf.constant(1.0)
        native(var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
               grad=ops.cast(gradient, tf.float32), alpha=alpha, beta1=ops.cast(self.beta_1, tf.float32),
               beta2=ops.cast(self.beta_2, tf.float32), epsilon=ops.cast(self.epsilon, tf.float32), keep=keep,
               grad_scale=tf.cast(scale, tf.float32))


def global_norm_clip(grads, clipnorm):
    """grads scaled by min(1, clipnorm / global norm), the scaling of `tf.clip_by_global_norm`; None stays None.

    The norm is float32 via `tf.nn.l2_loss` (one pass per gradient). IndexedSlices count as the dense gradient
    they sum to (duplicate rows added first, as Keras' clip measures them; `tf.clip_by_global_norm` would square
    the duplicates one by one). A non-finite norm makes every gradient NaN, as in Keras, so the loop stops loudly.
    """
    scale = global_norm_scale(grads, clipnorm)
    return [None if g is None else _scaled(g, scale) for g in grads]


def global_norm_scale(grads, clipnorm):
    """min(1, clipnorm / global norm of grads) as float32 (see `global_norm_clip`); NaN for a non-finite norm."""
    present = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
    norm = tf.sqrt(2.0 * tf.add_n([tf.cast(tf.nn.l2_loss(g), "float32") for g in present]))
    return clipnorm * tf.minimum(1.0 / norm, 1.0 / clipnorm) + (norm - norm)


def _scaled(g, scale):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * tf.cast(scale, g.values.dtype), g.indices, g.dense_shape)
    return g * tf.cast(scale, g.dtype)


def _handle(variable):
    """The resource handle of a Keras or tf variable (the per-replica one inside a distributed update)."""
    variable = variable.value if isinstance(variable, keras.Variable) else variable
    return variable.handle


def excluded_from_decay(variable):
    """True for LayerNorm gains/offsets and biases: exactly the 1-D variables of BERT, GPT and ELMo."""
    return len(variable.shape) == 1


def adagrad(learning_rate, initial_accumulator_value=1.0, clipnorm=10.0):
    """Adagrad as bilm-tf trains ELMo (lr 0.2, accumulators start at 1.0, global-norm clip 10)."""
    return keras.optimizers.Adagrad(learning_rate=learning_rate, initial_accumulator_value=initial_accumulator_value,
                                    epsilon=1e-7, global_clipnorm=clipnorm)


# The optimizer recipes a family names (`Family.optimizer`) and `--optimizer` overrides: one function each from
# the trainer's settings to a Keras optimizer. weight_decay is decoupled and skips biases and gains (1-D).
def _adamw_linear(learning_rate, warmup_steps, total_steps, weight_decay, variables):
    return adamw(WarmupLinearDecay(learning_rate, warmup_steps, total_steps), weight_decay=weight_decay, variables=variables)


def _adam_cosine(learning_rate, warmup_steps, total_steps, weight_decay, variables):
    # GPT-1: Adam (eps 1e-8), cosine schedule, the "modified L2" w = 0.01 on non-bias, non-gain weights (decoupled,
    # as finetune-transformer-lm applies it), global-norm clip 1.
    return adamw(WarmupCosineDecay(learning_rate, warmup_steps, total_steps), weight_decay=weight_decay, epsilon=1e-8,
                 variables=variables)


def _adagrad(learning_rate, warmup_steps, total_steps, weight_decay, variables):
    del warmup_steps, total_steps, variables  # bilm-tf: a constant rate
    if weight_decay:
        raise ValueError("The adagrad recipe (bilm-tf's) has no weight decay; pass --weight_decay=0.")
    return adagrad(learning_rate)


RECIPES = {
    "adamw_linear": _adamw_linear,
    "adam_cosine": _adam_cosine,
    "adagrad": _adagrad,
}


def make_optimizer(recipe, *, learning_rate, warmup_steps, total_steps, weight_decay=0.0, variables=None):
    """A Keras optimizer from a named recipe (`RECIPES`): adamw_linear (BERT), adam_cosine (GPT), adagrad (ELMo)."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown optimizer recipe {recipe!r}; choose one of {', '.join(RECIPES)}.")
    return RECIPES[recipe](learning_rate, warmup_steps, total_steps, weight_decay, variables)
