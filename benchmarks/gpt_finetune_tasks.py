r"""GPT-1 fine-tuning, the paper's ablations at demo size: pretrained vs random init, lm_coef 0.5 vs 0 (the auxiliary
LM loss), on Rotten Tomatoes sentence sentiment (mean ± std over seeds).

  python -m trainers.pretrain --flagfile=tpu_configs/gpt_tiny_cpu.cfg          # runs/gpt_tiny, once
  python -m benchmarks.gpt_finetune_tasks --init=runs/gpt_tiny --seeds=0,1,2 --eval_splits=dev,test
  # smoke size (pretrains a throw-away model for 20 steps; a few minutes; numbers meaningless):
  python -m benchmarks.gpt_finetune_tasks --tiny --seeds=0,1,2 --runs_dir=/tmp/gpt_ft --json_out=/tmp/gpt_ft.json

Each cell is ``python -m trainers.finetune`` with the settings of ``tpu_configs/gpt_tiny_finetune_cpu.cfg`` (the
classification transform `_start_ text _classify_`, the paper's optimizer recipe) and ``--task_option=lm_coef=X``,
once per seed; "random init" is ``--random_init`` (same architecture and vocabulary). Radford et al. 2018 report
that pretraining is worth 14.8 points on average and that the auxiliary loss helps the larger data sets, not the
smaller ones (Rotten Tomatoes' 5,972 training sentences are a small one). Writes a JSON (date, git commit, CPU,
package versions, every setting and number) and prints the table; trainer logs go to ``<runs_dir>/*/seed<N>.log``.
"""

import argparse
import os

from benchmarks import finetune_seeds as fs

FLAGFILE = "tpu_configs/gpt_tiny_finetune_cpu.cfg"
# Flags a cell sets itself (or that would export every run), not taken from the flagfile.
OWN_FLAGS = {"init", "model_dir", "export_dir", "eval_split", "task_option", "random_init", "seed"}
TINY_PRETRAIN = {"max_documents": 300, "vocab_size": 600, "global_batch_size": 8, "sequence_length": 32, "train_steps": 20,
                 "warmup_steps": 2, "precision": "float32", "checkpoint_every": 1000, "log_every": 10, "steps_per_loop": 10}
TINY_FINETUNE = {"max_train_examples": 64, "epochs": 1, "sequence_length": 32}
CELLS = [("pretrained", 0.5), ("pretrained", 0.0), ("random init", 0.5), ("random init", 0.0)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", default="runs/gpt_tiny", help="Pretrained GPT model dir (tpu_configs/gpt_tiny_cpu.cfg's).")
    parser.add_argument("--seeds", default="0,1,2", help="Fine-tuning seeds per cell (at least 3 for a std worth reading).")
    parser.add_argument("--eval_splits", default="dev", help="trainers.finetune --eval_split: dev, test or dev,test.")
    parser.add_argument("--finetune_flagfile", default=FLAGFILE, help="Base trainers.finetune flags.")
    parser.add_argument("--runs_dir", default="runs/gpt_finetune_tasks")
    parser.add_argument("--json_out", default="benchmarks/results/gpt_finetune_tasks.json")
    parser.add_argument("--tiny", action="store_true", help="Smoke-test size: a 20-step pretrained model, 64 labels, 1 epoch.")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.eval_splits = [s for s in args.eval_splits.split(",") if s]
    return args


def flagfile_flags(path):
    """{name: value} of an absl flagfile's `--name=value` lines, without the flags a cell sets itself."""
    flags = {}
    with open(os.path.join(fs.REPO, path) if not os.path.isabs(path) else path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--") and "=" in line:
                name, value = line[2:].split("=", 1)
                if name not in OWN_FLAGS:
                    flags[name] = value
    return flags


def tiny_pretrained(runs_dir):
    """A GPT model dir pretrained for 20 steps (tpu_configs/gpt_tiny_cpu.cfg at smoke size)."""
    model_dir = os.path.join(runs_dir, "pretrained_tiny")
    if not os.path.exists(os.path.join(model_dir, "zoo_config.json")):
        fs.run_trainer("trainers.pretrain", {"flagfile": "tpu_configs/gpt_tiny_cpu.cfg", **TINY_PRETRAIN, "model_dir": model_dir},
                       model_dir + ".log")
    return model_dir


def table(cells, splits):
    """The printed table: one row per (init, lm_coef), mean ± std per split, then the two ablation differences."""
    lines = [f"{'init':<12} {'lm_coef':>7}  " + "  ".join(f"{s:<24}" for s in splits)]
    for cell in cells:
        lines.append(f"{cell['init']:<12} {cell['lm_coef']:>7}  " + "  ".join(f"{fs.fmt(cell[s]):<24}" for s in splits))
    by = {(c["init"], c["lm_coef"]): c for c in cells}
    for name, (a, b) in {"pretrained - random init (lm_coef 0.5)": (("pretrained", 0.5), ("random init", 0.5)),
                         "lm_coef 0.5 - 0 (pretrained)": (("pretrained", 0.5), ("pretrained", 0.0))}.items():
        for s in splits:
            diff = by[a][s]["mean"] - by[b][s]["mean"]
            noise = max(by[a][s]["std"], by[b][s]["std"])
            verdict = "more" if abs(diff) > noise else "not more"
            lines.append(f"  {s}: {name} = {diff:+.4f}: {verdict} than the larger seed std ({noise:.4f})")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    init = tiny_pretrained(args.runs_dir) if args.tiny else args.init
    if not os.path.exists(os.path.join(init, "zoo_config.json")):
        raise SystemExit(f"--init={init} is not a model dir: pretrain it first "
                         "(python -m trainers.pretrain --flagfile=tpu_configs/gpt_tiny_cpu.cfg) or pass --tiny.")
    base = {**flagfile_flags(args.finetune_flagfile), **(TINY_FINETUNE if args.tiny else {}), "pooling": None}
    payload = {"benchmark": "gpt_finetune_tasks", **fs.provenance("benchmarks.gpt_finetune_tasks"), "tiny": args.tiny,
               "init": init, "finetune_flagfile": args.finetune_flagfile, "finetune_flags": base, "seeds": args.seeds,
               "eval_splits": args.eval_splits, "cells": []}
    for name, lm_coef in CELLS:
        out_dir = os.path.join(args.runs_dir, f"{name.replace(' ', '_')}_lm{lm_coef:g}")
        rows = fs.finetune_seeds(init, out_dir, args.seeds, args.eval_splits, random_init=name == "random init",
                                 flags={**base, "task_option": f"lm_coef={lm_coef}"})
        cell = {"init": name, "lm_coef": lm_coef, "runs": rows, **fs.summarize_rows(rows, args.eval_splits)}
        payload["cells"].append(cell)
        fs.write_json(args.json_out, payload)  # after every cell: a cut-off run keeps what it finished
        print(f"{name}, lm_coef {lm_coef}: " + "  ".join(f"{s} {fs.fmt(cell[s])}" for s in args.eval_splits), flush=True)
    print(table(payload["cells"], args.eval_splits))
    return payload


if __name__ == "__main__":
    main()
