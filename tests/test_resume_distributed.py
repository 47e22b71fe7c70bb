"""End-to-end trainers.pretrain runs: kill-and-resume, MirroredStrategy on 2 logical CPUs, XLA (tiny model, ~1 min).

Each test runs the real command line in subprocesses (tests/cli_utils.py), on one small TFRecord data set written
once per session by trainers.create_pretraining_data from the packaged IMDB corpus.
"""

import json
import math
import os
import re

import numpy as np
import pytest

from tests import cli_utils as cli


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder, _ = cli.pretraining_records(tmp_path_factory)
    return cli.records_glob(folder)


@pytest.fixture(scope="module")
def model_json(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    return {
        "default": cli.write_model_json(folder / "tiny.json"),  # dropout stays at the preset's 0.1
        "no_dropout": cli.write_model_json(folder / "tiny_no_dropout.json", dropout=0.0),
    }


def _backbone_config(model_dir):
    with open(os.path.join(model_dir, "zoo_config.json")) as f:
        return json.load(f)["backbone"]


def _losses(model_dir, steps):
    history = cli.read_history(model_dir)
    missing = [s for s in steps if s not in history]
    assert not missing, f"train_history.json of {model_dir} lacks steps {missing}; it has {sorted(history)}"
    return np.array([history[s]["loss"] for s in steps])


def test_killed_run_resumes_with_the_same_losses(tmp_path, records, model_json):
    def flags(model_dir):
        # Batch 32: ~0.5 s from ckpt-8 to ckpt-16 here, ten times the 0.05 s polling period below.
        return cli.pretrain_flags(str(model_dir), model_json["default"], records, train_steps=16, checkpoint_every=8,
                                  log_every=1, global_batch_size=32, warmup_steps=4)

    # A: straight through.
    returncode, output = cli.run_trainer("pretrain", *flags(tmp_path / "a"))
    assert returncode == 0, cli.tail(output)
    assert _backbone_config(tmp_path / "a")["dropout"] == 0.1  # dropout on: its RNG state must resume too
    assert sorted(cli.read_history(tmp_path / "a")) == list(range(1, 17))
    expected = _losses(tmp_path / "a", range(9, 17))

    # B: killed as soon as step 8's checkpoint is complete. Its index file is written just before the "checkpoint"
    # state file names it; a kill between the two would (correctly) resume from scratch, so wait for both.
    b_dir = tmp_path / "b"

    def checkpoint_8_saved():
        state = b_dir / "checkpoint"
        return (b_dir / "ckpt-8.index").exists() and state.exists() and "ckpt-8" in state.read_text()

    proc = cli.start_trainer("pretrain", *flags(b_dir), log_path=tmp_path / "b.log")
    try:
        saved = cli.wait_for(checkpoint_8_saved, timeout=180, interval=0.05, proc=proc)
    finally:
        cli.kill(proc)
    b_log = (tmp_path / "b.log").read_text()
    assert saved, f"run B never saved ckpt-8:\n{cli.tail(b_log)}"
    assert not (b_dir / "ckpt-16.index").exists(), "run B finished before it could be killed; the test proves nothing"
    assert not (b_dir / "train_history.json").exists()

    # C: the same command again resumes at step 8 and retraces run A's steps 9..16.
    returncode, output = cli.run_trainer("pretrain", *flags(b_dir))
    assert returncode == 0, cli.tail(output)
    assert re.search(r"Resumed from \S*ckpt-8 at step 8\b", output), cli.tail(output)
    history = cli.read_history(b_dir)
    assert sorted(history) == list(range(9, 17)), "run C should train exactly steps 9..16"
    np.testing.assert_allclose(_losses(b_dir, range(9, 17)), expected, rtol=1e-5)


def test_mirrored_on_two_cpus_matches_one_device(tmp_path, records, model_json):
    losses = {}
    for strategy, extra in (("cpu", {}), ("mirrored", {"num_cpu_devices": 2})):
        model_dir = tmp_path / strategy
        returncode, output = cli.run_trainer(
            "pretrain", *cli.pretrain_flags(str(model_dir), model_json["no_dropout"], records, train_steps=5,
                                            global_batch_size=16, strategy=strategy, **extra))
        assert returncode == 0, cli.tail(output)
        replicas = 2 if strategy == "mirrored" else 1
        assert re.search(rf"parameters, {replicas} replicas", output), cli.tail(output)
        assert _backbone_config(model_dir)["dropout"] == 0.0
        losses[strategy] = _losses(model_dir, range(1, 6))
    assert np.all(np.isfinite(losses["cpu"]))
    np.testing.assert_allclose(losses["mirrored"], losses["cpu"], rtol=1e-4)


def test_jit_compile_trains_on_the_real_corpus(tmp_path, model_json):
    model_dir = tmp_path / "xla"
    flags = cli.pretrain_flags(str(model_dir), model_json["default"], train_steps=30, warmup_steps=3,
                               learning_rate=1e-3, global_batch_size=16, sequence_length=64, max_predictions=10,
                               jit_compile=True)
    flags += ["--default_corpus", "--max_documents=150", "--vocab_size=500"]
    # TensorFlow's C++ INFO lines on (conftest.py quiets them) to see XLA's "Compiled cluster using XLA!".
    returncode, output = cli.run_trainer("pretrain", *flags, extra_env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert returncode == 0, cli.tail(output)
    assert "Compiled cluster using XLA" in output, "no XLA compilation was logged"
    losses = _losses(model_dir, range(1, 31))
    assert all(math.isfinite(x) for x in losses), losses
    first, last = losses[:5].mean(), losses[-5:].mean()
    # The H=32 model learns slowly: ~6.90 -> ~6.69 here, the same curve as without XLA.
    assert last < first - 0.1, f"loss did not fall under XLA: first 5 steps {first:.3f}, last 5 {last:.3f}"
