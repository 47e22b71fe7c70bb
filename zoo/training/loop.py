"""A custom training loop for any model that exposes `loss_terms`, `loss_counts` and `loss_names`.

The model contract (every family's pretrainer implements it):
  * `loss_counts(features) -> {name: count}`: float32 scalars that depend on the data only (masked tokens, examples);
  * `loss_terms(features, training) -> {name: (sum, count)}`: summed losses and metric hits;
  * `loss_names`: the terms whose normalised sum is the loss.

Each loss is normalised by its GLOBAL count (all-reduced across replicas before the forward pass), so a step
on R replicas computes the same gradient as one device on the whole global batch.

Fault tolerance: checkpoints every `checkpoint_every` steps (model, optimizer, dropout RNG state); a restart
restores the latest one and fast-forwards the deterministic input pipeline to the same batch, so the run
continues with the same next losses. In multi-worker runs only the chief writes checkpoints and summaries.
"""

import dataclasses
import math
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging

from zoo.layers import islands
from zoo.training.strategy import is_chief


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, bad settings); the message says what to do."""


@dataclasses.dataclass
class LoopConfig:
    """Settings of `train`.

    Attributes:
      model_dir: checkpoints in `model_dir`, TensorBoard summaries in `model_dir/train`.
      train_steps: total optimizer steps (the run stops there, resuming if it was interrupted).
      checkpoint_every: steps between checkpoints.
      log_every: steps between progress lines and summaries.
      steps_per_loop: steps run inside one tf.function call (fewer host round trips; TPUs want 100s).
      jit_compile: compile the forward+backward pass with XLA.
      max_checkpoints: checkpoints kept.
      tokens_per_step: tokens in one global batch, for the tokens/s figure.
    """

    model_dir: str
    train_steps: int
    checkpoint_every: int = 1000
    log_every: int = 100
    steps_per_loop: int = 1
    jit_compile: bool = False
    max_checkpoints: int = 3
    tokens_per_step: int = 0


def rng_states(model):
    """The dropout seed-generator states, which tf.train.Checkpoint would otherwise miss."""
    return [v for v in model.non_trainable_variables if "seed_generator" in v.path]


def train(model, optimizer, dataset_fn, strategy, config, global_batch_size):
    """Trains `model` until `config.train_steps`; returns the list of per-step metric dicts logged in this run.

    Args:
      model: built under `strategy.scope()`, implementing the contract in the module docstring.
      optimizer: a Keras optimizer built under the scope (its `iterations` is the global step).
      dataset_fn: `fn(input_context) -> tf.data.Dataset` of per-replica batches of feature dicts, deterministic.
      strategy: a tf.distribute.Strategy.
      config: LoopConfig.
      global_batch_size: examples per step over all replicas.
    """
    chief = is_chief(strategy)
    ckpt_dir = config.model_dir if chief else os.path.join(config.model_dir, f".worker_tmp_{_task_id(strategy)}")
    if not optimizer.built:
        # A resumed run must restore the slots (Adagrad's accumulators, Adam's moments) into existing variables:
        # Keras builds them lazily on the first step, after the restore, and would start them afresh.
        with strategy.scope():
            optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=rng_states(model))
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.max_checkpoints)
    if manager.latest_checkpoint or tf.train.latest_checkpoint(config.model_dir):
        path = tf.train.latest_checkpoint(config.model_dir)
        checkpoint.restore(path).assert_existing_objects_matched()
        logging.info("Resumed from %s at step %d", path, int(optimizer.iterations.numpy()))
    start = int(optimizer.iterations.numpy())
    if start >= config.train_steps:
        logging.info("Already trained %d >= %d steps; nothing to do.", start, config.train_steps)
        return []

    def skipped_dataset_fn(ctx):
        # The pipeline is deterministic, so skipping the batches already consumed resumes it exactly.
        return dataset_fn(ctx).skip(start)

    dataset = strategy.distribute_datasets_from_function(skipped_dataset_fn)
    iterator = iter(dataset)
    run_steps = _make_train_function(model, optimizer, strategy, config.jit_compile)

    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train")) if chief else tf.summary.create_noop_writer()
    history, step, interval = [], start, []
    last_time, last_step = time.time(), start
    while step < config.train_steps:
        n = _steps_until_boundary(step, config)
        metrics = {k: float(v) for k, v in run_steps(iterator, tf.constant(n)).items()}
        step += n
        if not math.isfinite(metrics["loss"]):
            raise TrainingError(
                f"Loss became {metrics['loss']} at step {step}. Lower --learning_rate, raise --warmup_steps, or use "
                "--precision=float32; the last good checkpoint is in " + config.model_dir
            )
        metrics["learning_rate"] = float(_current_lr(optimizer))
        metrics["step"] = step
        history.append(metrics)
        interval.append((n, metrics))
        if step % config.log_every == 0 or step == config.train_steps:
            # Log and summarise the average over the interval (single steps are noisy).
            total = sum(k for k, _ in interval)
            summary = {key: sum(k * m[key] for k, m in interval) / total for key in metrics if key.endswith(("loss", "accuracy"))}
            interval = []
            now = time.time()
            steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
            # Throughput goes into the history row too (train_history.json).
            metrics["steps_per_second"] = steps_per_sec
            metrics["examples_per_second"] = steps_per_sec * global_batch_size
            metrics["tokens_per_second"] = steps_per_sec * config.tokens_per_step
            metrics = {**metrics, **summary}
            _log_progress(metrics, config.train_steps)
            with writer.as_default(step=step):
                for k, v in metrics.items():
                    if k != "step":
                        tf.summary.scalar(k, v)
            writer.flush()
            last_time, last_step = time.time(), step
        if step % config.checkpoint_every == 0 or step == config.train_steps:
            manager.save(checkpoint_number=step)
            logging.info("Saved checkpoint for step %d in %s", step, ckpt_dir)
    if not chief:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # Non-chief copies exist only so the collectives line up.
    return history


def _make_train_function(model, optimizer, strategy, jit_compile):
    variables = model.trainable_variables
    # The update below runs outside the XLA-compiled gradient function, so a fused optimizer may use native
    # CPU kernels (zoo.optim.FusedAdamW checks the devices itself; TPU steps compile everything with XLA).
    if hasattr(optimizer, "use_native_kernels"):
        optimizer.use_native_kernels = not isinstance(strategy, tf.distribute.TPUStrategy)

    @tf.function(jit_compile=jit_compile)
    def compute_gradients(features, global_counts):
        # Kernels traced here may pick their XLA formulation (zoo/layers/islands.py).
        with islands.whole_step_xla(jit_compile):
            with tf.GradientTape() as tape:
                terms = model.loss_terms(features, training=True)
                loss = tf.add_n([terms[k][0] / tf.maximum(global_counts[k], 1.0) for k in model.loss_names])
            return tape.gradient(loss, variables), {k: v[0] for k, v in terms.items()}

    def replica_step(features):
        ctx = tf.distribute.get_replica_context()
        counts = ctx.all_reduce("sum", model.loss_counts(features))
        grads, sums = compute_gradients(features, counts)
        optimizer.apply(grads, variables)
        sums = ctx.all_reduce("sum", sums)
        metrics = {k: sums[k] / tf.maximum(counts[k], 1.0) for k in sums}
        metrics["loss"] = tf.add_n([metrics[k] for k in model.loss_names])
        return metrics

    def step(iterator):
        metrics = strategy.run(replica_step, args=(next(iterator),))
        # Every replica holds the same all-reduced values: take the first.
        return {k: strategy.experimental_local_results(v)[0] for k, v in metrics.items()}

    @tf.function
    def run_steps(iterator, n):
        """Runs n steps in one call; returns the metrics averaged over them."""
        total = step(iterator)
        for _ in tf.range(n - 1):
            metrics = step(iterator)
            total = {k: total[k] + metrics[k] for k in total}
        return {k: v / tf.cast(n, v.dtype) for k, v in total.items()}

    return run_steps


def _steps_until_boundary(step, config):
    n = config.steps_per_loop
    for every in (config.log_every, config.checkpoint_every):
        n = min(n, every - step % every)
    return max(1, min(n, config.train_steps - step))


def _current_lr(optimizer):
    lr = optimizer.learning_rate
    return lr.numpy() if hasattr(lr, "numpy") else keras.ops.convert_to_numpy(lr)


def _log_progress(metrics, total):
    parts = [f"step {metrics['step']}/{total}"]
    parts += [f"{k} {v:.4f}" for k, v in metrics.items() if k.endswith(("loss", "accuracy"))]
    parts.append(f"lr {metrics['learning_rate']:.2e}")
    parts.append(f"{metrics['steps_per_second']:.2f} steps/s")
    if metrics.get("tokens_per_second"):
        parts.append(f"{metrics['tokens_per_second']:,.0f} tokens/s")
    remaining = (total - metrics["step"]) / max(metrics["steps_per_second"], 1e-9)
    parts.append(f"eta {int(remaining // 60)}m{int(remaining % 60):02d}s")
    logging.info(" | ".join(parts))


def _task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return getattr(resolver, "task_id", 0) or 0
