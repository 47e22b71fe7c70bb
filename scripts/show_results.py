"""Prints what the demo produced: pretraining curve, held-out MLM, fine-tuning accuracy, and the export serving.

  python scripts/show_results.py PRETRAIN_DIR FINETUNE_DIR RANDOM_INIT_DIR EXPORT_DIR

The export is queried in a subprocess that imports only tensorflow and tensorflow_text, as a server would.
"""

import json
import os
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


def main(pretrain_dir, finetune_dir, random_dir, export_dir):
    rows = [json.loads(line) for line in open(os.path.join(pretrain_dir, "train_history.json"))]
    print(f"Pretraining ({pretrain_dir}): loss {rows[0]['loss']:.3f} at step {rows[0]['step']} -> {rows[-1]['loss']:.3f} at step {rows[-1]['step']}")
    fast = [r for r in rows if r.get("tokens_per_second")]
    if fast:
        print(f"  throughput {fast[-1]['tokens_per_second']:,.0f} tokens/s, {fast[-1]['steps_per_second']:.2f} steps/s")
    ev = json.load(open(os.path.join(pretrain_dir, "eval_results.json")))
    if "mlm_accuracy" in ev:
        print(f"Held-out IMDB: MLM accuracy {ev['mlm_accuracy']:.3f} (perplexity {ev['mlm_perplexity']:.1f}), NSP accuracy {ev['nsp_accuracy']:.3f}")
    for sentence, guesses in ev["fill_mask"].items():
        print(f"  {sentence:50} -> {', '.join(w for w, _ in guesses)}")
    ft = json.load(open(os.path.join(finetune_dir, "eval_results.json")))
    rnd = json.load(open(os.path.join(random_dir, "eval_results.json")))
    print(f"Rotten Tomatoes sentiment (test): pretrained {ft['accuracy']:.3f}, random init {rnd['accuracy']:.3f}, majority class {ft['majority_class_accuracy']:.3f}")
    print(f"Serving {export_dir} in a fresh TensorFlow process:")
    subprocess.run([sys.executable, "-c", SERVE, export_dir], check=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
