r"""ELMo as features (Peters et al. 2018, sections 3.3 and 5.2), the paper's ablation at laptop scale: the frozen
biLM's layers mixed with learned scalar weights ("all layers") vs its top layer only vs the same architecture with
random weights ("random biLM") vs no biLM at all ("no ELMo"), on a sentence classification task (Rotten Tomatoes
sentiment) and a sequence labelling one (WNUT-2016 Twitter NER, entity-level F1), mean ± std over seeds.

  python -m trainers.pretrain --flagfile=tpu_configs/elmo_tiny_cpu.cfg                # runs/elmo_tiny, once
  python -m benchmarks.elmo_feature_tasks --model_dir=runs/elmo_tiny --seeds=0,1,2 \
      --json_out=benchmarks/results/elmo_feature_tasks_<date>_xeon_amx.json
  # smoke size (a throw-away biLM pretrained for a few steps; numbers meaningless):
  python -m benchmarks.elmo_feature_tasks --tiny --model_dir=/tmp/elmo_ft/bilm --json_out=/tmp/elmo_ft.json

Without a model dir at --model_dir the biLM is pretrained into it first (tpu_configs/elmo_tiny_cpu.cfg; --tiny: 20
steps). Every cell is `FAMILY.task(...)` on the frozen biLM, trained with `fit` in this process (the task models'
Adam, batch 32, a 64-cell BiLSTM encoder over the words, max pooling for the classifier; learning rate, dropout,
epochs and training size per task in TASK_DEFAULTS, Rotten Tomatoes Adam 3e-3 / dropout 0.5 / 4 epochs over its
first 2,000 training sentences, WNUT 1e-2 / 0.2 / 10 epochs over all 1,676 training tweets):

  all layers   layers="all", features="elmo": a learned softmax-normalised mix of the char-CNN token layer and both
               LSTM layers, times gamma (L2 0.001 on the mix weights), the paper's ELMo.
  top layer    layers="top", features="elmo": the top LSTM layer only (times a learned gamma).
  random biLM  layers="all", features="elmo" on `load_pretrained(..., restore=False)`: the same architecture and
               vocabulary with fresh random weights (seeded per run), frozen too.
  no ELMo      features="words": no biLM features at all; the task model's own word embeddings (E = the biLM's
               projection width, 64), learned from scratch over the biLM's word vocabulary (its <UNK> for other
               words), under the same BiLSTM encoder and output layer.

Settings are chosen on dev: each run trains --epochs epochs, scores dev after every epoch (accuracy; NER: entity F1)
and keeps the weights of its best dev epoch, which are then scored on test. Reported: that dev score and test score
(and for NER token accuracy, precision and recall) per seed, mean ± sample std over seeds. Writes a JSON (meta:
date, commit, machine, versions, command) after every run and prints the table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

import zoo
from benchmarks.common import command_line, run_metadata, write_json
from zoo.data.corpus import rotten_tomatoes_task, wnut2016_task
from zoo.data.tagging import entity_f1

MODULE = "benchmarks.elmo_feature_tasks"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_FLAGFILE = "tpu_configs/elmo_tiny_cpu.cfg"
TINY_PRETRAIN = ["--train_steps=20", "--max_documents=300", "--vocab_size=800", "--checkpoint_every=1000",
                 "--log_every=10", "--steps_per_loop=10"]
TASKS = ("rotten_tomatoes", "wnut2016")
SETTINGS = {  # name: (task options, restore the pretrained weights)
    "all layers": ({"layers": "all", "features": "elmo"}, True),
    "top layer": ({"layers": "top", "features": "elmo"}, True),
    "random biLM": ({"layers": "all", "features": "elmo"}, False),
    "no ELMo": ({"features": "words"}, True),
}
SEQUENCE_LENGTH = {"rotten_tomatoes": 64, "wnut2016": 41}  # T = 2 + words: every NER tweet whole (39 at most)
# Per-task training settings (a flag given overrides them), picked from dev pilots of the "all layers" cell (seed 0):
# on NER, Adam 3e-3 with dropout 0.5 still tagged every word O after 4 epochs (dev F1 0); 1e-2 with dropout 0.2
# reached dev F1 0.08 at epoch 8, still rising. Rotten Tomatoes: the first 2,000 training sentences (CPU time).
TASK_DEFAULTS = {"rotten_tomatoes": {"max_train_examples": 2000, "epochs": 4, "learning_rate": 3e-3, "dropout": 0.5},
                 "wnut2016": {"max_train_examples": 0, "epochs": 10, "learning_rate": 1e-2, "dropout": 0.2}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", default="runs/elmo_tiny", help="Pretrained ELMo model dir (pretrained here "
                        f"with {PRETRAIN_FLAGFILE} when it holds none).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--settings", default=",".join(SETTINGS), help="Comma-separated subset of: " + ", ".join(SETTINGS))
    parser.add_argument("--max_train_examples", type=int, default=None, help="First N training examples (0: all; "
                        "default: per task, TASK_DEFAULTS).")
    parser.add_argument("--max_eval_examples", type=int, default=0, help="First N dev and test examples (0: all).")
    parser.add_argument("--epochs", type=int, default=None, help="Epochs per run; the best dev epoch is kept "
                        "(default: per task).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=None, help="Adam's rate (default: per task).")
    parser.add_argument("--encoder_dim", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=None, help="Default: per task.")
    parser.add_argument("--tiny", action="store_true", help="Smoke size: a 20-step biLM, 48 training and 32 eval "
                        "examples, 1 epoch, 1 seed, an 8-cell encoder.")
    parser.add_argument("--json_out", default="")
    args = parser.parse_args(argv)
    if args.tiny:
        given = {a.split("=")[0].lstrip("-") for a in (sys.argv[1:] if argv is None else argv)}
        for name, value in {"max_train_examples": 48, "max_eval_examples": 32, "epochs": 1, "encoder_dim": 8,
                            "seeds": "0"}.items():
            if name not in given:
                setattr(args, name, value)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for t in args.tasks:
        if t not in TASKS:
            parser.error(f"--tasks: unknown task {t!r}; choose from {TASKS}.")
    for s in args.settings:
        if s not in SETTINGS:
            parser.error(f"--settings: unknown setting {s!r}; choose from {list(SETTINGS)}.")
    return args


def ensure_pretrained(model_dir, tiny):
    """Pretrains tpu_configs/elmo_tiny_cpu.cfg into `model_dir` (a `trainers.pretrain` subprocess, its log beside
    it) unless it already holds a model."""
    if os.path.exists(os.path.join(model_dir, "zoo_config.json")):
        return
    command = [sys.executable, "-m", "trainers.pretrain", f"--flagfile={PRETRAIN_FLAGFILE}", f"--model_dir={model_dir}",
               *(TINY_PRETRAIN if tiny else [])]
    os.makedirs(os.path.dirname(os.path.abspath(model_dir)), exist_ok=True)
    print(f"Pretraining {model_dir}: {' '.join(command[2:])}", flush=True)
    with open(os.path.abspath(model_dir).rstrip("/") + ".pretrain.log", "w") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)


def task_settings(name, args):
    """{"max_train_examples", "epochs", "learning_rate", "dropout"}: TASK_DEFAULTS[name], flags given override."""
    return {k: v if getattr(args, k) is None else getattr(args, k) for k, v in TASK_DEFAULTS[name].items()}


def load_task(name, args):
    """{"train", "dev", "test": [(text, label or tag ids)]} (cut to the --max_* sizes), and the tag names (NER)."""
    data = rotten_tomatoes_task() if name == "rotten_tomatoes" else wnut2016_task()
    cut = {"train": task_settings(name, args)["max_train_examples"], "dev": args.max_eval_examples,
           "test": args.max_eval_examples}
    return {s: data[s][:n] if n else data[s] for s, n in cut.items()}, data.get("tags")


def score(model, kind, rows, tag_names, batch_size):
    """{"score": accuracy (classification) or entity F1 (tagging), ...}."""
    texts = [t for t, _ in rows]
    if kind == "classification":
        labels = np.asarray([y for _, y in rows])
        out = model.evaluate(texts, labels, batch_size=batch_size, verbose=0, return_dict=True)
        return {"score": float(out["accuracy"]), "accuracy": float(out["accuracy"])}
    logits = model.predict(texts, batch_size=batch_size, verbose=0)  # [B, W, K], compiled (predict_tags is eager)
    tags = np.argmax(logits, axis=-1)
    predicted = [row[:min(len(t.split()), model.max_words)].tolist() for row, t in zip(tags, texts)]
    gold = [[tag_names[i] for i in y] for _, y in rows]
    pred = [[tag_names[i] for i in p] + ["O"] * (len(g) - len(p)) for p, g in zip(predicted, gold)]  # cut words: O
    out = entity_f1(gold, pred)
    return {"score": out["f1"], **out}


def run_one(task_name, data, tag_names, setting, seed, args):
    """Trains one cell on one seed; returns its best-dev-epoch scores on dev and test."""
    options, restore = SETTINGS[setting]
    train = task_settings(task_name, args)
    kind = "classification" if task_name == "rotten_tomatoes" else "tagging"
    num_classes = 2 if kind == "classification" else len(tag_names)
    keras.utils.set_random_seed(seed)
    family = zoo.family_of(args.model_dir)
    backbone, preprocessor = family.load_pretrained(args.model_dir, sequence_length=SEQUENCE_LENGTH[task_name],
                                                    trim=True, restore=restore)
    model = family.task(backbone, preprocessor, num_classes, kind=kind, encoder_dim=args.encoder_dim,
                        dropout=train["dropout"], **options)
    model.compile(optimizer=model.finetune_optimizer(train["learning_rate"]))
    texts = [t for t, _ in data["train"]]
    labels = [y for _, y in data["train"]]
    labels = np.asarray(labels) if kind == "classification" else labels
    start = time.time()
    best, best_weights, curve = None, None, []
    for epoch in range(train["epochs"]):
        history = model.fit(texts, labels, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0)
        dev = score(model, kind, data["dev"], tag_names, args.batch_size)
        curve.append({"epoch": epoch + 1, "train_loss": float(history.history["loss"][-1]), "dev": dev["score"]})
        if best is None or dev["score"] > best["score"]:
            best, best_weights = {**dev, "epoch": epoch + 1}, model.head.get_weights()
    model.head.set_weights(best_weights)
    test = score(model, kind, data["test"], tag_names, args.batch_size)
    row = {"seed": seed, "best_epoch": best["epoch"], "dev": best["score"], "test": test["score"],
           "dev_detail": best, "test_detail": test, "curve": curve, "seconds": round(time.time() - start, 1)}
    if model.head.mix is not None and model.head.layers_used == "all":
        weights = keras.ops.softmax(model.head.mix.scalar_weights).numpy()
        row["mix_weights"] = [round(float(w), 4) for w in weights]
    if kind == "tagging":
        row["test_token_accuracy"] = test["token_accuracy"]
        row["dev_token_accuracy"] = best["token_accuracy"]
    return row


def summarize(values):
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def fmt(s, scale=100.0):
    seeds = ", ".join(f"{v * scale:.1f}" for v in s["values"])
    return f"{s['mean'] * scale:5.1f} ± {s['std'] * scale:4.1f} [{seeds}]"


def table(cells):
    """setting x task: dev and test (accuracy %, NER entity F1 % and token accuracy %), mean ± std [each seed]."""
    lines = []
    for cell in cells:
        metric = "acc" if cell["task"] == "rotten_tomatoes" else "entity F1"
        line = (f"{cell['task']:<16} {cell['setting']:<12} dev {metric} {fmt(cell['dev'])}   test {metric} "
                f"{fmt(cell['test'])}")
        if "test_token_accuracy" in cell:
            line += f"   test token acc {fmt(cell['test_token_accuracy'])}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    ensure_pretrained(args.model_dir, args.tiny)
    payload = {"benchmark": "elmo_feature_tasks", "meta": run_metadata(command_line(MODULE, argv)), "tiny": args.tiny,
               "model_dir": args.model_dir, "settings": {k: {"options": v[0], "restore": v[1]} for k, v in SETTINGS.items()},
               "train": {"batch_size": args.batch_size, "encoder_dim": args.encoder_dim,
                         "optimizer": "Adam (the task models' finetune_optimizer), global-norm clip 5",
                         "max_eval_examples": args.max_eval_examples, "sequence_length": SEQUENCE_LENGTH,
                         "per_task": {t: task_settings(t, args) for t in args.tasks},
                         "selection": "best dev epoch per run (dev: accuracy; NER: entity F1); test at that epoch"},
               "seeds": args.seeds, "cells": []}
    for task_name in args.tasks:
        data, tag_names = load_task(task_name, args)
        payload.setdefault("sizes", {})[task_name] = {s: len(v) for s, v in data.items()}
        for setting in args.settings:
            rows = []
            for seed in args.seeds:
                row = run_one(task_name, data, tag_names, setting, seed, args)
                rows.append(row)
                print(f"{task_name} / {setting} / seed {seed}: dev {row['dev']:.4f} test {row['test']:.4f} "
                      f"(epoch {row['best_epoch']}, {row['seconds']} s)", flush=True)
            cell = {"task": task_name, "setting": setting, "runs": rows, "dev": summarize([r["dev"] for r in rows]),
                    "test": summarize([r["test"] for r in rows])}
            if task_name == "wnut2016":
                for key in ("test_token_accuracy", "dev_token_accuracy"):
                    cell[key] = summarize([r[key] for r in rows])
            payload["cells"].append(cell)
            write_json(args.json_out, payload)  # after every cell: a cut-off run keeps what it finished
    print(table(payload["cells"]))
    return payload


if __name__ == "__main__":
    main()
