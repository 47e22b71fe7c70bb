r"""How much does pretraining buy? Fine-tuning accuracy (mean ± std over seeds) against minutes of pretraining.

  python -m benchmarks.pretraining_crossover --minutes=0,2,5,10,20 --seeds=0,1,2 --eval_splits=test \
      --finetune_flags='{"max_train_examples": 1000, "epochs": 10}'
  # smoke size (a minute or two; numbers meaningless):
  python -m benchmarks.pretraining_crossover --tiny --minutes=0,0.2 --seeds=0,1 --runs_dir=/tmp/crossover

One pretraining run (``python -m trainers.pretrain --flagfile=<--pretrain_flagfile>``) is trained in phases in
the same --model_dir, which resumes exactly: a short probe measures steps/s, the budgets in minutes become
step counts (``round(minutes * 60 * steps/s)``), ``--schedule_steps`` is fixed to the longest budget's steps so
that every phase is a prefix of one and the same run, and the model dir is copied after each phase. So a budget
is *training-step time* at the probe's rate (no corpus/vocabulary set-up, no process start); an earlier
budget's checkpoint is taken mid-schedule (its learning rate has not decayed to 0, as a run of exactly that
length would). Every copy is fine-tuned (``python -m trainers.finetune``) once per seed; 0 minutes is random
initialisation (``--random_init``, same architecture and vocabulary), drawn across the plot as a band.

Writes a JSON (date, git commit, CPU, package versions, every setting and number; rewritten after every
budget, so a cut-off run keeps what it finished) and a plot. Trainer output goes to ``<runs_dir>/*.log``.
``--reuse`` continues a --runs_dir with the same budgets: e.g. first ``--eval_splits=dev`` (choose a setting),
then ``--reuse --eval_splits=test`` fine-tunes the same checkpoints on the test split.
"""

import argparse
import json
import os
import shutil
import statistics
import sys

from benchmarks import finetune_seeds as fs

TINY_PRETRAIN = {"max_documents": 300, "vocab_size": 600, "global_batch_size": 8, "sequence_length": 32, "max_predictions": 5,
                 "precision": "float32", "warmup_steps": 20, "checkpoint_every": 100000}
TINY_FINETUNE = {"max_train_examples": 64, "epochs": 1, "sequence_length": 32}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="0,2,5,10,20", help="Pretraining budgets in minutes of training steps (0 = random init).")
    parser.add_argument("--seeds", default="0,1,2", help="Fine-tuning seeds per budget.")
    parser.add_argument("--eval_splits", default="test", help="trainers.finetune --eval_split: test, dev or dev,test.")
    parser.add_argument("--pretrain_flagfile", default="tpu_configs/bert_tiny_cpu.cfg", help="Base trainers.pretrain flags.")
    parser.add_argument("--pretrain_flags", default="{}", help="JSON of trainers.pretrain flags replacing the flagfile's.")
    parser.add_argument("--finetune_flags", default="{}", help="JSON of trainers.finetune flags replacing the demo's (benchmarks.finetune_seeds.DEMO_FINETUNE_FLAGS).")
    parser.add_argument("--probe_steps", type=int, default=200, help="Steps of the rate probe (at most the warmup, so its learning rates do not depend on --schedule_steps).")
    parser.add_argument("--steps_per_second", type=float, default=0.0, help="Skip the measurement: convert minutes to steps at this rate.")
    parser.add_argument("--runs_dir", default="runs/crossover")
    parser.add_argument("--json_out", default="benchmarks/results/pretraining_crossover.json")
    parser.add_argument("--plot_out", default="benchmarks/results/pretraining_crossover.png")
    parser.add_argument("--tiny", action="store_true", help="Smoke-test size (a few hundred documents, tiny batches, 1 epoch on 64 labels).")
    parser.add_argument("--reuse", action="store_true",
                        help="Continue --runs_dir: keep its plan (budget steps), its pretrained copies and finished fine-tunes (e.g. a cut-off run, "
                             "or the test-split fine-tunes of checkpoints whose dev-split fine-tunes chose a setting).")
    args = parser.parse_args(argv)
    args.minutes = sorted({float(m) for m in args.minutes.split(",")})
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.eval_splits = [s for s in args.eval_splits.split(",") if s]
    args.pretrain_flags = {**(TINY_PRETRAIN if args.tiny else {}), **json.loads(args.pretrain_flags)}
    args.finetune_flags = {**(TINY_FINETUNE if args.tiny else {}), **json.loads(args.finetune_flags)}
    return args


def history_rates(model_dir, phase_starts, first_step=0):
    """steps/s of the logged intervals after `first_step`, leaving out each phase's first (its process traces the step).

    Args:
      phase_starts: the step each phase (process) started from; train_history.json is appended by every phase.
    """
    rates, seen = [], set()
    with open(os.path.join(model_dir, "train_history.json")) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        if not row.get("steps_per_second"):
            continue
        phase = max((s for s in phase_starts if s < row["step"]), default=0)
        if phase not in seen:
            seen.add(phase)
            continue
        if row["step"] > first_step:
            rates.append(row["steps_per_second"])
    return rates


class Crossover:
    """The phased pretraining run, its copies and their fine-tunes; `payload` is what goes to the JSON."""

    def __init__(self, args):
        self.args = args
        self.model_dir = os.path.join(args.runs_dir, "pretrain")
        self.payload = {
            "benchmark": "pretraining_crossover", **fs.provenance("benchmarks.pretraining_crossover"), "tiny": args.tiny,
            "budget_measure": ("minutes of pretraining training steps, converted to steps at the probe's measured steps/s "
                               "(excludes corpus/vocabulary set-up and process start); one run with --schedule_steps fixed to the "
                               "longest budget, so earlier budgets are mid-schedule checkpoints of it"),
            "pretrain_flagfile": args.pretrain_flagfile, "pretrain_flags": args.pretrain_flags,
            "finetune_flags": {**fs.DEMO_FINETUNE_FLAGS, **args.finetune_flags}, "seeds": args.seeds, "eval_splits": args.eval_splits,
            "points": [],
        }

    def pretrain_to(self, steps, schedule_steps, log_every, log_name):
        flags = {"flagfile": self.args.pretrain_flagfile, **self.args.pretrain_flags, "model_dir": self.model_dir,
                 "train_steps": steps, "schedule_steps": schedule_steps, "log_every": log_every}
        return fs.run_trainer("trainers.pretrain", flags, os.path.join(self.args.runs_dir, log_name))

    def finetune(self, init, name, random_init=False):
        out_dir = os.path.join(self.args.runs_dir, name)
        seeds = self.args.seeds
        if self.args.reuse:
            done = [s for s in seeds if os.path.exists(os.path.join(out_dir, f"seed{s}", "eval_results.json"))]
            seeds = [s for s in seeds if s not in done]
        rows = fs.finetune_seeds(init, out_dir, seeds, self.args.eval_splits, random_init=random_init, flags=self.args.finetune_flags)
        if self.args.reuse:  # put the earlier runs back in, from their eval_results.json
            for s in self.args.seeds:
                if s not in seeds:
                    with open(os.path.join(out_dir, f"seed{s}", "eval_results.json")) as f:
                        result = json.load(f)
                    rows.append({"seed": s, "seconds": None, **{sp: result["splits"][sp]["accuracy"] for sp in self.args.eval_splits}})
            rows.sort(key=lambda r: r["seed"])
        return {"runs": rows, **{s: fs.summarize([r[s] for r in rows]) for s in self.args.eval_splits}}

    def record(self, point):
        self.payload["points"] = [p for p in self.payload["points"] if p["minutes"] != point["minutes"]] + [point]
        self.payload["points"].sort(key=lambda p: p["minutes"])
        fs.write_json(self.args.json_out, self.payload)
        plot(self.payload, self.args.plot_out)
        line = "  ".join(f"{s}: {fs.fmt(point[s])}" for s in self.args.eval_splits)
        print(f"{point['minutes']:6.2f} min ({point['steps']} steps, {point['init']}): {line}", flush=True)

    def run(self):
        args = self.args
        budgets = [m for m in args.minutes if m > 0]
        warmup = int(args.pretrain_flags.get("warmup_steps", flagfile_value(args.pretrain_flagfile, "warmup_steps", 100)))
        probe = max(1, min(args.probe_steps, warmup))
        log_every = max(1, probe // 4)
        plan_path = os.path.join(args.runs_dir, "plan.json")
        if args.reuse and os.path.exists(plan_path):  # the steps of the run being continued, not a new measurement
            with open(plan_path) as f:
                plan = json.load(f)
            rate, seconds, known = plan["steps_per_second_probe"], plan["probe_process_seconds"], {float(m): s for m, s in plan["budget_steps"].items()}
            missing = [m for m in budgets if m not in known]
            if missing:
                raise SystemExit(f"--reuse: {args.runs_dir} was planned for {sorted(known)} minutes, not {missing}.")
            targets, final = {m: known[m] for m in budgets}, plan["schedule_steps"]
        else:
            # The probe: a prefix of the run (during warmup the learning rate does not depend on --schedule_steps).
            seconds = self.pretrain_to(probe, probe, log_every, "pretrain_probe.log")
            rate = args.steps_per_second
            if not rate:
                rates = history_rates(self.model_dir, [0])
                if not rates:
                    raise SystemExit(f"The {probe}-step probe logged no steady interval; raise --probe_steps or pass --steps_per_second.")
                rate = statistics.median(rates)
            targets = {m: max(probe, int(round(m * 60 * rate))) for m in budgets}
            final = max(targets.values(), default=probe)
            fs.write_json(plan_path, {"steps_per_second_probe": rate, "probe_process_seconds": round(seconds, 1), "schedule_steps": final,
                                      "budget_steps": {str(m): s for m, s in targets.items()}})
        self.payload.update(probe_steps=probe, probe_process_seconds=round(seconds, 1), steps_per_second_probe=rate,
                            schedule_steps=final, budget_steps={str(m): s for m, s in targets.items()})
        print(f"Probe: {rate:.2f} steps/s; budgets {targets} steps, schedule over {final}", flush=True)
        if 0.0 in args.minutes:
            self.record({"minutes": 0.0, "steps": 0, "init": "random", **self.finetune(self.model_dir, f"finetune_random_{'_'.join(args.eval_splits)}", random_init=True)})
        starts = [0, probe]
        for minutes in budgets:
            steps = targets[minutes]
            copy = os.path.join(args.runs_dir, f"pretrained_{steps}_steps")
            if args.reuse and os.path.exists(os.path.join(copy, "zoo_config.json")):
                seconds = None  # pretrained by the run being continued
            else:
                seconds = self.pretrain_to(steps, final, log_every, f"pretrain_to_{steps}.log")
                if os.path.exists(copy):
                    shutil.rmtree(copy)
                shutil.copytree(self.model_dir, copy, ignore=shutil.ignore_patterns("train"))
            rates = history_rates(self.model_dir, starts, first_step=starts[-1])
            measured = statistics.median(rates) if rates else rate
            point = {"minutes": minutes, "steps": steps, "init": copy, "phase_process_seconds": seconds and round(seconds, 1),
                     "steps_per_second_phase": measured, "minutes_at_phase_rate": steps / measured / 60,
                     **self.finetune(copy, f"finetune_{steps}_steps_{'_'.join(args.eval_splits)}")}
            starts.append(steps)
            self.record(point)
        self.payload["steps_per_second_all"] = statistics.median(history_rates(self.model_dir, starts) or [rate])
        fs.write_json(args.json_out, self.payload)
        return self.payload


def flagfile_value(path, name, default):
    """The value of --name in an absl flagfile (last one wins), else `default`."""
    value = default
    with open(os.path.join(fs.REPO, path) if not os.path.isabs(path) else path) as f:
        for line in f:
            line = line.strip()
            if line.startswith(f"--{name}="):
                value = line.split("=", 1)[1]
    return value


def plot(payload, path):
    """Accuracy against pretraining minutes: pretrained (error bars = std over seeds) and the random-init band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {"test": "#1f77b4", "dev": "#ff7f0e"}
    points = payload["points"]
    random = next((p for p in points if p["init"] == "random"), None)
    for split in payload["eval_splits"]:
        color = colors.get(split, "#2ca02c")
        xs = [p["minutes"] for p in points]
        means = [p[split]["mean"] for p in points]
        stds = [p[split]["std"] for p in points]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=4, color=color, label=f"pretrained, {split} (mean ± std, n={len(payload['seeds'])} seeds)")
        if random:
            r = random[split]
            right = max(xs + [1.0])
            ax.axhspan(r["mean"] - r["std"], r["mean"] + r["std"], color=color, alpha=0.12)
            ax.axhline(r["mean"], color=color, linestyle="--", linewidth=1, label=f"random init, {split}: {r['mean']:.3f} ± {r['std']:.3f}")
            ax.set_xlim(-0.03 * right, right * 1.05)
    flags = payload["finetune_flags"]
    labels = flags.get("max_train_examples") or "all"
    ax.set_xlabel("pretraining minutes (steps at the measured steps/s; mid-schedule checkpoints of one run)")
    ax.set_ylabel(f"accuracy ({flags.get('task', 'task')})")
    meta = payload["meta"]
    ax.set_title(f"What pretraining buys: {labels} training labels, {flags.get('epochs')} epochs, lr {flags.get('learning_rate')}\n"
                 f"{meta['machine']}, {meta['date'][:10]}, commit {meta['commit']}" + (" [--tiny: meaningless]" if payload["tiny"] else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.runs_dir, exist_ok=True)
    if not args.reuse and os.path.exists(os.path.join(args.runs_dir, "pretrain")):
        raise SystemExit(f"{args.runs_dir}/pretrain exists: use a new --runs_dir, or --reuse to continue it.")
    Crossover(args).run()
    print(f"Wrote {args.json_out} and {args.plot_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
