r"""Evaluate a pretrained zoo BERT on held-out text: masked-LM and next-sentence accuracy, and fill-mask examples.

  python -m trainers.evaluate --model_dir=runs/bert_tiny --default_corpus --skip_documents=6000 --max_documents=500

Masks are drawn with a fixed --seed, so two models evaluated with the same flags see the same positions.
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
flags.DEFINE_integer("seed", 4321, "Seed of the evaluation masks.")
flags.DEFINE_list("fill_mask", ["this movie was [MASK] .", "the acting was [MASK] and the plot was boring .", "i [MASK] this film ."], "Sentences with [MASK] to complete.")


def main(_):
    import tensorflow as tf

    import zoo
    from zoo import model_dir as md
    from zoo.data import instances, pipeline

    zflags.require(model_dir=FLAGS.model_dir)
    config = md.read_config(FLAGS.model_dir)
    family = zoo.family(config["family"])
    _, preprocessor = family.load_pretrained(FLAGS.model_dir, restore=False)
    model = family.pretrainer(family.Config.from_dict(config["backbone"]))
    ckpt = tf.train.latest_checkpoint(FLAGS.model_dir)
    if ckpt is None:
        raise md.ModelDirError(f"No checkpoint in {FLAGS.model_dir}.")
    tf.train.Checkpoint(model=model).read(ckpt).expect_partial().assert_existing_objects_matched()
    tokenizer = preprocessor.tokenizer
    results = {"checkpoint": ckpt}
    if FLAGS.corpus or FLAGS.tfds or FLAGS.default_corpus:
        documents = common.read_corpus(FLAGS)
        _, ids = common.tokenize(documents, tokenizer.vocabulary, tokenizer.lowercase)
        pairs = instances.stack_instances(instances.create_pair_instances(ids, vocabulary=tokenizer.vocabulary, sequence_length=preprocessor.sequence_length, seed=FLAGS.seed))
        specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.unknown_id]
        ds = pipeline.dynamic_masking_dataset(
            pairs, batch_size=FLAGS.batch_size, vocabulary_size=tokenizer.vocabulary_size, mask_id=tokenizer.mask_id,
            special_ids=specials, max_predictions=max(1, round(0.15 * preprocessor.sequence_length)), seed=FLAGS.seed, repeat=False, shuffle=False,
        )
        totals = {}
        step = tf.function(lambda f: model.loss_terms(f, training=False))
        for batch in ds.take(FLAGS.max_batches):
            for k, (s, n) in step(batch).items():
                a, b = totals.get(k, (0.0, 0.0))
                totals[k] = (a + float(s), b + float(n))
        results.update({k: s / max(n, 1.0) for k, (s, n) in totals.items()})
        results["mlm_perplexity"] = math.exp(results["mlm_loss"])
        results["eval_examples"] = int(totals["nsp_loss"][1])
        logging.info("Held-out: MLM loss %.4f (perplexity %.1f), MLM accuracy %.4f, NSP accuracy %.4f over %d examples",
                     results["mlm_loss"], results["mlm_perplexity"], results["mlm_accuracy"], results["nsp_accuracy"], results["eval_examples"])
    results["fill_mask"] = fill_mask(model, preprocessor, FLAGS.fill_mask)
    for sentence, guesses in results["fill_mask"].items():
        logging.info("%s -> %s", sentence, ", ".join(f"{w} ({p:.2f})" for w, p in guesses))
    with open(os.path.join(FLAGS.model_dir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2)


def fill_mask(model, preprocessor, sentences, top_k=5):
    """{sentence: [(token, probability)] * top_k} for the first [MASK] of each sentence."""
    import tensorflow as tf

    tok = preprocessor.tokenizer
    out = {}
    for sentence in sentences:
        parts = sentence.split("[MASK]")
        if len(parts) < 2:
            raise ValueError(f"--fill_mask sentence {sentence!r} has no [MASK].")
        left = tok.tokenize(tf.constant([parts[0]]))[0].numpy().tolist()
        right = tok.tokenize(tf.constant(["[MASK]".join(parts[1:])]))[0].numpy().tolist()
        ids = [tok.cls_id] + left + [tok.mask_id] + right + [tok.sep_id]
        position = len(left) + 1
        features = {
            "token_ids": tf.constant([ids]), "segment_ids": tf.zeros([1, len(ids)], tf.int32),
            "padding_mask": tf.ones([1, len(ids)], tf.int32), "mask_positions": tf.constant([[position]]),
        }
        probs = tf.nn.softmax(model(features)["mlm_logits"][0, 0]).numpy()
        best = probs.argsort()[::-1][:top_k]
        out[sentence] = [(tok.id_to_token(int(i)), float(probs[i])) for i in best]
    return out


if __name__ == "__main__":
    zflags.run(main)
