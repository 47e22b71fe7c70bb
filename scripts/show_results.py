"""Prints what the demo produced: pretraining curve, held-out MLM, fine-tuning accuracy, and the export serving.

  python scripts/show_results.py PRETRAIN_DIR FINETUNE_DIR RANDOM_INIT_DIR EXPORT_DIR

A fine-tuning dir holds one run (eval_results.json) or one run per seed (seed<N>/eval_results.json): then the
accuracy is shown as mean ± sample std over the seeds, and the gap is set against that spread.

The export is queried in a subprocess that imports only tensorflow and tensorflow_text, as a server would.
"""

import glob
import json
import os
import statistics
import subprocess
import sys

SERVE = r"""
import sys, tensorflow as tf, tensorflow_text
model = tf.saved_model.load(sys.argv[1])
texts = ["A gripping, beautifully acted story.", "Dull, predictable and far too long.", "", "Not bad at all."]
probs = model.signatures["classify"](text=tf.constant(texts))["probabilities"].numpy()
for t, p in zip(texts, probs):
    print(f"  {t!r:45} P(positive) = {p[1]:.3f}")
"""


def finetune_results(run_dir):
    """The eval_results.json of a fine-tuning run dir, or of each seed<N>/ run under it."""
    paths = sorted(glob.glob(os.path.join(run_dir, "seed*", "eval_results.json"))) or [os.path.join(run_dir, "eval_results.json")]
    return [json.load(open(path)) for path in paths]


def spread(values):
    """``0.754`` for one run, ``0.754 ± 0.006 (0.748, 0.755, 0.760)`` for several (sample std)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def compare(pretrained, random_init):
    """Lines setting pretrained against random init on each split the runs evaluated (mean ± std over seeds)."""
    lines = []
    first = pretrained[0]
    for split in first.get("splits", {first.get("eval_split", "eval"): first}):
        a = [r.get("splits", {split: r})[split]["accuracy"] for r in pretrained]
        b = [r.get("splits", {split: r})[split]["accuracy"] for r in random_init]
        lines.append(f"  {split:5} pretrained {spread(a)}   random init {spread(b)}")
        if len(a) > 1 and len(b) > 1:
            gap, worst = statistics.fmean(a) - statistics.fmean(b), max(statistics.stdev(a), statistics.stdev(b))
            verdict = "more" if abs(gap) > worst else "not more"
            lines.append(f"        pretrained - random init = {gap:+.3f}: {verdict} than the larger seed std ({worst:.3f})")
    return lines


def main(pretrain_dir, finetune_dir, random_dir, export_dir):
    rows = [json.loads(line) for line in open(os.path.join(pretrain_dir, "train_history.json"))]
    print(f"Pretraining ({pretrain_dir}): loss {rows[0]['loss']:.3f} at step {rows[0]['step']} -> {rows[-1]['loss']:.3f} at step {rows[-1]['step']}")
    fast = [r for r in rows if r.get("tokens_per_second")]
    if fast:
        print(f"  throughput {fast[-1]['tokens_per_second']:,.0f} tokens/s, {fast[-1]['steps_per_second']:.2f} steps/s")
    ev = json.load(open(os.path.join(pretrain_dir, "eval_results.json")))
    if "mlm_accuracy" in ev:
        print(f"Held-out IMDB: MLM accuracy {ev['mlm_accuracy']:.3f} (perplexity {ev['mlm_perplexity']:.1f}), NSP accuracy {ev['nsp_accuracy']:.3f}")
    for prompt, outputs in ev["samples"].items():
        print(f"  {prompt:50} -> {', '.join(o.split(' (')[0] for o in outputs)}")
    ft, rnd = finetune_results(finetune_dir), finetune_results(random_dir)
    first = ft[0]
    print(f"Rotten Tomatoes sentiment, fine-tuned on {first['train_examples']:,} sentences, {len(ft)} seed(s) each "
          f"(majority class {first['majority_class_accuracy']:.3f}):")
    print("\n".join(compare(ft, rnd)))
    print(f"Serving {export_dir} in a fresh TensorFlow process:")
    serve = subprocess.run([sys.executable, "-c", SERVE, export_dir], stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    noise = _startup_noise()
    sys.stderr.write("".join(line for line in serve.stderr.splitlines(True) if line.strip() and not noise.search(line)))
    if serve.returncode:
        sys.exit(f"Serving {export_dir} failed (exit {serve.returncode}).")


def _startup_noise():
    # The same filter the apps use on TensorFlow's start-up chatter (trainers/__init__.py).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from trainers import _STARTUP_NOISE

    return _STARTUP_NOISE


if __name__ == "__main__":
    main(*sys.argv[1:5])
