"""The train step compiles under XLA at static shapes (what TPUStrategy needs), for every TPU flagfile's shapes."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from zoo import optim
from zoo.bert import BertConfig, get_preset, pretrainer
from zoo.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flagfile_shapes():
    shapes = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tpu_configs", "bert_*_tpu_*.cfg"))):
        flags = dict(line.strip()[2:].split("=", 1) for line in open(path) if line.startswith("--") and "=" in line)
        assert "--jit_compile" in open(path).read(), f"{path} must compile with XLA"
        shapes[os.path.basename(path)] = (flags["preset"], int(flags["sequence_length"]), int(flags["max_predictions"]))
    assert len(shapes) == 12  # 6 presets x 2 phases
    return shapes


def _batch(batch, length, predictions, vocab):
    rng = np.random.RandomState(0)
    return {
        "token_ids": tf.constant(rng.randint(5, vocab, (batch, length)), tf.int32),
        "segment_ids": tf.zeros((batch, length), tf.int32),
        "padding_mask": tf.ones((batch, length), tf.int32),
        "mask_positions": tf.constant(np.sort(rng.randint(1, length, (batch, predictions)), 1), tf.int32),
        "mask_ids": tf.constant(rng.randint(5, vocab, (batch, predictions)), tf.int32),
        "mask_weights": tf.ones((batch, predictions), tf.float32),
        "next_sentence_labels": tf.zeros((batch,), tf.int32),
    }


@pytest.mark.parametrize("shape", sorted(set(_flagfile_shapes().values())), ids=lambda s: f"{s[0]}-seq{s[1]}-p{s[2]}")
def test_flagfile_train_step_compiles_with_xla(shape):
    preset, length, predictions = shape
    # The preset's depth/heads pattern at a tiny width (shown at tiny sizes, as the CPU allows).
    p = get_preset(preset)
    config = BertConfig(vocabulary_size=64, num_layers=min(p.num_layers, 2), num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=512)
    model = pretrainer(config)
    features = _batch(2, length, predictions, 64)
    counts = {k: tf.constant(v, tf.float32) for k, v in {"mlm_loss": 2.0 * predictions, "nsp_loss": 2.0, "mlm_accuracy": 2.0 * predictions, "nsp_accuracy": 2.0}.items()}
    variables = model.trainable_variables

    @tf.function(jit_compile=True)
    def grads(features, counts):
        with tf.GradientTape() as tape:
            terms = model.loss_terms(features, training=True)
            loss = tf.add_n([terms[k][0] / counts[k] for k in model.loss_names])
        return loss, tape.gradient(loss, variables)

    hlo = grads.experimental_get_compiler_ir(features, counts)(stage="hlo")
    assert "HloModule" in hlo
    loss, g = grads(features, counts)
    assert np.isfinite(float(loss)) and len(g) == len(variables) and all(x is not None for x in g)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_loop_trains_and_marks_the_whole_step_xla_compile(tmp_path, monkeypatch, jit_compile):
    from zoo.layers import reductions

    seen = []  # what column_sum (bias and LayerNorm gradients) was told while the step was traced
    real = reductions.in_whole_step_xla
    monkeypatch.setattr(reductions, "in_whole_step_xla", lambda: seen.append(real()) or seen[-1])
    config = BertConfig(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    model = pretrainer(config)
    opt = optim.adamw(1e-3, variables=model.trainable_variables)
    data = _batch(8, 32, 4, 64)
    history = loop.train(
        model, opt, lambda ctx: tf.data.Dataset.from_tensors(data).repeat(), tf.distribute.get_strategy(),
        loop.LoopConfig(model_dir=str(tmp_path), train_steps=20, log_every=10, checkpoint_every=20, jit_compile=jit_compile, steps_per_loop=10), 8,
    )
    assert history[-1]["loss"] < history[0]["loss"]
    assert seen and set(seen) == {jit_compile}, seen
    assert not real()  # the flag is off again outside the traced step
