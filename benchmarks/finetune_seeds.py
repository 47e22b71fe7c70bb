"""Helpers for the pretraining-value benchmarks: run the zoo trainers in subprocesses, fine-tune over seeds,
summarise accuracies (mean ± std) and record where the numbers came from.

Used by ``benchmarks.hf_mlm_pretrain`` (the HF-vs-zoo bug check) and ``benchmarks.pretraining_crossover``.
Every trainer runs as ``python -m trainers.<name> --flag=value ...`` in a fresh process, exactly as a user would
run it; its output goes to a log file next to its model dir. Only the standard library is imported here.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import REPO, command_line, run_metadata, worker_env

# Fine-tuning flags of tpu_configs/bert_tiny_finetune_cpu.cfg other than init / model_dir / export_dir.
DEMO_FINETUNE_FLAGS = {"task": "rotten_tomatoes", "sequence_length": 64, "batch_size": 32, "epochs": 3, "learning_rate": 5e-4, "pooling": "mean"}


class TrainerError(RuntimeError):
    """A trainer subprocess failed; the message holds the tail of its log."""


def flag_args(flags):
    """``{"a": 1, "b": True, "c": None}`` -> ``["--a=1", "--b"]`` (None drops a flag, False gives --nob)."""
    args = []
    for name, value in flags.items():
        if value is None:
            continue
        if value is True:
            args.append(f"--{name}")
        elif value is False:
            args.append(f"--no{name}")
        else:
            args.append(f"--{name}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}")
    return args


def run_trainer(module, flags, log_path, threads=0):
    """Runs ``python -m <module> <flags>`` from the repo root, its output into `log_path`; returns wall seconds.

    Raises:
      TrainerError: non-zero exit (with the log's tail).
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    command = [sys.executable, "-m", module, *flag_args(flags)]
    start = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        code = subprocess.call(command, cwd=REPO, env=worker_env(threads), stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if code:
        with open(log_path, errors="replace") as f:
            tail = f.read()[-3000:]
        raise TrainerError(f"{' '.join(command)} exited with {code} after {seconds:.0f}s; log {log_path}:\n{tail}")
    return seconds


def finetune_seeds(init, out_dir, seeds, eval_splits=("dev",), random_init=False, flags=None, threads=0):
    """Fine-tunes `init` once per seed (``trainers.finetune``); returns one row per seed.

    Args:
      init: pretrained zoo model dir (with random_init, only its architecture and vocabulary are used).
      out_dir: the runs go to ``out_dir/seed<N>`` (logs beside them).
      seeds: fine-tuning seeds (initialisation of the head / random backbone, shuffling, dropout).
      eval_splits: splits to evaluate (``dev``, ``test``).
      flags: trainers.finetune flags replacing ``DEMO_FINETUNE_FLAGS``'s.

    Returns:
      ``[{"seed", "seconds", "<split>": accuracy, ...}]``.
    """
    rows = []
    for seed in seeds:
        model_dir = os.path.join(out_dir, f"seed{seed}")
        run_flags = {**DEMO_FINETUNE_FLAGS, **(flags or {}), "init": init, "model_dir": model_dir, "export_dir": None,
                     "random_init": bool(random_init), "seed": seed, "eval_split": list(eval_splits)}
        seconds = run_trainer("trainers.finetune", run_flags, model_dir + ".log", threads)
        with open(os.path.join(model_dir, "eval_results.json")) as f:
            result = json.load(f)
        rows.append({"seed": seed, "seconds": round(seconds, 1), **{s: result["splits"][s]["accuracy"] for s in eval_splits}})
    return rows


def summarize(values):
    """``{"mean", "std" (sample, n-1), "n", "values"}`` of a list of accuracies."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values), "values": values}


def summarize_rows(rows, splits):
    """``{split: summarize(...)}`` over finetune_seeds rows, plus the mean seconds per fine-tune."""
    return {**{s: summarize([r[s] for r in rows]) for s in splits}, "seconds_per_finetune": statistics.fmean(r["seconds"] for r in rows)}


def fmt(summary):
    """``0.7543 ± 0.0061 (n=3)``."""
    return f"{summary['mean']:.4f} ± {summary['std']:.4f} (n={summary['n']})"


def provenance(module):
    """The run's "meta" (benchmarks.common.run_metadata: date, commit, machine, versions, and the command line as
    `python -m module ...`, whatever path the script was started by)."""
    return {"meta": run_metadata(command_line(module))}


def write_json(path, payload):
    """Writes `payload` as indented JSON (creating the folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
