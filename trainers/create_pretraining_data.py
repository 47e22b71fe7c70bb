r"""Write BERT pretraining instances (sentence pairs, NSP, static masks) as sharded TFRecords.

  python -m trainers.create_pretraining_data --flagfile=tpu_configs/bert_data_cpu.cfg
  python -m trainers.create_pretraining_data --corpus=books/ --output_dir=data/bert128 --vocab_size=30000

google-research/bert create_pretraining_data.py semantics (dupe_factor, short_seq_prob, 80/10/10 masking,
whole-word masking), deterministic for a --seed. The output folder holds the shards, vocab.txt and
data_config.json (what trainers.pretrain --input_files needs); it appears only when everything succeeded.
"""

import json
import os
import shutil

from absl import flags, logging

from trainers import common
from trainers import flags as zflags

FLAGS = flags.FLAGS
zflags.define_model_flags()
zflags.define_corpus_flags()
zflags.define_instance_flags()
flags.DEFINE_string("output_dir", None, "Folder to create with train-*.tfrecord shards, vocab.txt, data_config.json.")
flags.DEFINE_integer("num_shards", 4, "Number of TFRecord shards (>= number of workers that read them).")
flags.DEFINE_bool("overwrite", False, "Replace --output_dir if it exists.")


def main(_):
    from zoo.data import instances, records
    from zoo.text.wordpiece import save_vocabulary

    zflags.require(output_dir=FLAGS.output_dir)
    out = os.path.abspath(FLAGS.output_dir)
    if os.path.exists(out) and not FLAGS.overwrite:
        raise ValueError(f"--output_dir={out} exists; pass --overwrite or choose another folder.")
    documents = common.read_corpus(FLAGS)
    vocabulary = common.vocabulary_for(documents, FLAGS.vocab_file, FLAGS.vocab_size, FLAGS.lowercase)
    _, ids = common.tokenize(documents, vocabulary, FLAGS.lowercase)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        examples = instances.create_pretraining_instances(
            ids,
            vocabulary=vocabulary,
            sequence_length=FLAGS.sequence_length,
            short_seq_prob=FLAGS.short_seq_prob,
            dupe_factor=FLAGS.dupe_factor,
            masked_lm_prob=FLAGS.masked_lm_prob,
            max_predictions=FLAGS.max_predictions,
            whole_word_mask=FLAGS.whole_word_mask,
            seed=FLAGS.seed,
            progress=common.progress_printer("Creating instances"),
        )
        counter = {"n": 0}

        def counted():
            for example in examples:
                counter["n"] += 1
                yield example

        paths = records.write_examples(counted(), os.path.join(tmp, "train-*.tfrecord"), FLAGS.num_shards)
        if counter["n"] == 0:
            raise ValueError("The corpus produced no instances: it needs documents of at least two sentences.")
        save_vocabulary(vocabulary, os.path.join(tmp, "vocab.txt"))
        data_config = {
            "family": "bert",
            "num_instances": counter["n"],
            "sequence_length": FLAGS.sequence_length,
            "max_predictions": FLAGS.max_predictions,
            "masked_lm_prob": FLAGS.masked_lm_prob,
            "dupe_factor": FLAGS.dupe_factor,
            "short_seq_prob": FLAGS.short_seq_prob,
            "whole_word_mask": FLAGS.whole_word_mask,
            "lowercase": FLAGS.lowercase,
            "seed": FLAGS.seed,
            "vocab_file": "vocab.txt",
            "shards": [os.path.basename(p) for p in paths],
        }
        with open(os.path.join(tmp, "data_config.json"), "w") as f:
            json.dump(data_config, f, indent=2)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("Wrote %d instances in %d shards to %s", counter["n"], len(paths), out)


if __name__ == "__main__":
    zflags.run(main)
