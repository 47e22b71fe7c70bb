"""Helpers for the end-to-end trainer tests: run `python -m trainers.X` in a subprocess, write small corpora.

Every subprocess pays TensorFlow's start-up (~5-8 s here), so tests share what they can: `pretraining_records`
builds one small TFRecord data set per pytest session (under the session's base temp dir) for every test file.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A much smaller BERT than the tiny preset (L=2, H=128): fast enough for several trainer runs per test file.
TINY_MODEL = {"num_layers": 2, "hidden_dim": 32, "num_heads": 2, "intermediate_dim": 64}

# The shared records: sequence length and predictions every pretrain run on them must repeat.
SEQUENCE_LENGTH = 128
MAX_PREDICTIONS = 20

# A Python log line as absl formats it ("E1125 06:35:21.652433 140271960501120 flags.py:71] ..."), as opposed to the
# C++ lines TensorFlow prints while starting ("E0000 00:00:... cuda_platform.cc:52] ...").
_PY_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ (\S+\.py):\d+\] (.*)$")


def env(**extra):
    """The subprocess environment: this repo importable, TF_CONFIG unset (a stray one changes multi_worker)."""
    result = dict(os.environ)
    result.pop("TF_CONFIG", None)
    result["PYTHONPATH"] = REPO + (os.pathsep + result["PYTHONPATH"] if result.get("PYTHONPATH") else "")
    result.update({k: str(v) for k, v in extra.items()})
    return result


def command(app, *flags):
    return [sys.executable, "-m", f"trainers.{app}", *flags]


def run_trainer(app, *flags, timeout=120, extra_env=None):
    """Runs `python -m trainers.<app> <flags>`; returns (returncode, stdout+stderr).

    Fails the calling test (AssertionError with the output so far) if it runs past `timeout` seconds; the
    process group is killed then, so a hung trainer never outlives the test.
    """
    proc = subprocess.Popen(
        command(app, *flags), cwd=REPO, env=env(**(extra_env or {})), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"trainers.{app} {' '.join(flags)} ran past {timeout}s:\n{tail(output)}")
    return proc.returncode, output


def start_trainer(app, *flags, log_path, extra_env=None):
    """Starts `python -m trainers.<app>` without waiting (output to `log_path`, so a full pipe never blocks it)."""
    with open(log_path, "w") as log:
        return subprocess.Popen(command(app, *flags), cwd=REPO, env=extra_env or env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill(proc):
    """SIGKILLs a process started by `start_trainer` (its whole group) and reaps it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(predicate, timeout, interval=0.05, proc=None):
    """Polls `predicate()` every `interval` s until true; False on timeout or when `proc` has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(interval)
    return False


def tail(output, lines=40):
    return "\n".join(output.splitlines()[-lines:])


def python_log_lines(output, levels="IWEF"):
    """(level, file, message) of the absl-formatted Python log lines in `output`."""
    found = []
    for line in output.splitlines():
        match = _PY_LOG_LINE.match(line)
        if match and match.group(1) in levels:
            found.append(match.groups())
    return found


def assert_clean_failure(returncode, output, *expected, exit_code=1):
    """A user error: the expected exit code, exactly one ERROR line holding every `expected` string, no traceback."""
    assert returncode == exit_code, f"exit code {returncode}, expected {exit_code}:\n{tail(output)}"
    assert "Traceback (most recent call last)" not in output, f"a traceback instead of a message:\n{tail(output, 80)}"
    errors = python_log_lines(output, levels="EF")
    assert len(errors) == 1, f"expected one error line, got {errors}:\n{tail(output)}"
    for text in expected:
        assert text in errors[0][2], f"{text!r} not in the error line {errors[0][2]!r}"
    return errors[0][2]


def write_corpus(path, documents):
    """google-research/bert format: one sentence per line, a blank line after each document. Returns path."""
    with open(path, "w", encoding="utf-8") as f:
        for document in documents:
            f.write("\n".join(document) + "\n\n")
    return str(path)


def demo_documents(n):
    """The first `n` documents of the packaged IMDB demo corpus (real text)."""
    from zoo.data import corpus

    return corpus.read_documents(corpus.default_corpus_path())[:n]


def write_model_json(path, **overrides):
    """A --config_json file with TINY_MODEL (and `overrides`, e.g. dropout=0.0). Returns path."""
    with open(path, "w") as f:
        json.dump({**TINY_MODEL, **overrides}, f)
    return str(path)


def data_flags(output_dir, seed=1, max_documents=150):
    """create_pretraining_data flags for a small real-text data set."""
    return (
        "--default_corpus", f"--max_documents={max_documents}", "--vocab_size=500", f"--output_dir={output_dir}",
        f"--sequence_length={SEQUENCE_LENGTH}", f"--max_predictions={MAX_PREDICTIONS}", "--dupe_factor=1",
        "--num_shards=2", f"--seed={seed}",
    )


def pretraining_records(tmp_path_factory):
    """The folder of one small pretraining data set (shards, vocab.txt, data_config.json), built once a session.

    Returns (folder, the create_pretraining_data output that built it, or None when it was already there).
    """
    folder = os.path.join(str(tmp_path_factory.getbasetemp()), "shared_records")
    if os.path.exists(os.path.join(folder, "data_config.json")):
        return folder, None
    returncode, output = run_trainer("create_pretraining_data", *data_flags(folder))
    assert returncode == 0, tail(output)
    return folder, output


def records_glob(folder):
    """The --input_files pattern of a create_pretraining_data output folder."""
    return os.path.join(folder, "train-*.tfrecord")


def pretrain_flags(model_dir, config_json, input_files=None, **overrides):
    """trainers.pretrain flags for a few fast steps of the tiny model; `overrides` replace or add flags."""
    values = {
        "preset": "tiny", "config_json": config_json, "model_dir": model_dir, "global_batch_size": 16,
        "sequence_length": SEQUENCE_LENGTH, "max_predictions": MAX_PREDICTIONS, "train_steps": 4,
        "warmup_steps": 2, "learning_rate": 1e-3, "log_every": 1, "checkpoint_every": 100, "seed": 7,
    }
    if input_files:
        values["input_files"] = input_files
    values.update(overrides)
    flags = []
    for name, value in values.items():
        if value is True:
            flags.append(f"--{name}")
        elif value is not False and value is not None:
            flags.append(f"--{name}={value}")
    return flags


def read_history(model_dir):
    """{step: row} of a pretrain run's train_history.json (one JSON row per step)."""
    with open(os.path.join(model_dir, "train_history.json")) as f:
        return {row["step"]: row for row in map(json.loads, f) if row}
