r"""Evaluate a pretrained zoo model on held-out text: its objective's losses and metrics, and samples.

  python -m trainers.evaluate --model_dir=runs/<model> --default_corpus --skip_documents=24000 --max_documents=900

The metrics are the pretrainer's own loss terms (zoo.training.loop's contract) averaged over held-out examples of
the objective it was trained with, plus the perplexity of each LM loss; the samples are the family's (fill-mask,
generated text, ...) for --samples, or the family's default prompts. Random choices (masks) use a fixed --seed,
so two models evaluated with the same flags see the same examples. Results go to <model_dir>/eval_results.json.
"""

import json
import math
import os

from absl import flags, logging

from trainers import common
from trainers import flags as zflags

FLAGS = flags.FLAGS
zflags.define_corpus_flags()
flags.DEFINE_string("model_dir", None, "A zoo model dir written by trainers.pretrain.")
flags.DEFINE_integer("batch_size", 32, "Evaluation batch size.")
flags.DEFINE_integer("max_batches", 50, "Evaluate at most this many batches.")
flags.DEFINE_integer("seed", 4321, "Seed of the evaluation examples (e.g. masks).")
flags.DEFINE_list("samples", None, "Prompts for the family's samples (default: the family's own prompts).")


def held_out_metrics(model, objective, settings, tokenizer, documents):
    """{metric: value} over held-out documents: every loss term's mean, and exp(loss) for each *lm_loss."""
    import tensorflow as tf

    examples = objective.prepare(common.tokenize(documents, tokenizer, objective), tokenizer, settings, seed=FLAGS.seed, training=False)
    dataset = objective.dataset(examples, tokenizer, settings, batch_size=FLAGS.batch_size, seed=FLAGS.seed, training=False)
    step = tf.function(lambda f: model.loss_terms(f, training=False))
    totals, batches = {}, 0
    for batch in dataset.take(FLAGS.max_batches):
        batches += 1
        for k, (s, n) in step(batch).items():
            a, b = totals.get(k, (0.0, 0.0))
            totals[k] = (a + float(s), b + float(n))
    results = {k: s / max(n, 1.0) for k, (s, n) in totals.items()}
    for k in list(results):
        if k.endswith("lm_loss"):
            results[k.replace("_loss", "_perplexity")] = math.exp(min(results[k], 50.0))
    results["eval_batches"] = batches
    return results


def main(_):
    import tensorflow as tf

    import zoo
    from zoo import model_dir as md
    from zoo.data import objectives

    zflags.require(model_dir=FLAGS.model_dir)
    config = md.read_config(FLAGS.model_dir)
    family = zoo.family(config["family"])
    if "task" in config:
        raise md.ModelDirError(f"{FLAGS.model_dir} holds a fine-tuned task model; trainers.finetune reports its accuracy.")
    _, preprocessor = family.load_pretrained(FLAGS.model_dir, restore=False)
    model = family.pretrainer(family.Config.from_dict(config["backbone"]))
    ckpt = tf.train.latest_checkpoint(FLAGS.model_dir)
    if ckpt is None:
        raise md.ModelDirError(f"No checkpoint in {FLAGS.model_dir}: pretrain first (trainers.pretrain).")
    tf.train.Checkpoint(model=model).read(ckpt).expect_partial().assert_existing_objects_matched()
    results = {"checkpoint": ckpt}
    if FLAGS.corpus or FLAGS.tfds or FLAGS.default_corpus:
        recorded = dict(config.get("objective", {"name": family.objective}))
        objective = objectives.get(recorded.pop("name"))
        settings = objectives.settings_from(objective, {**recorded, "sequence_length": preprocessor.sequence_length})
        results.update(held_out_metrics(model, objective, settings, preprocessor.tokenizer, common.read_corpus(FLAGS)))
        logging.info("Held-out (%d batches): %s", results["eval_batches"],
                     ", ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float)))
    results["samples"] = family.samples(model, preprocessor, FLAGS.samples or list(family.default_samples))
    for prompt, outputs in results["samples"].items():
        logging.info("%s -> %s", prompt, ", ".join(outputs))
    with open(os.path.join(FLAGS.model_dir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    zflags.run(main)
