r"""Write a family's pretraining examples (static masks where its objective masks) as sharded TFRecords.

  python -m trainers.create_pretraining_data --flagfile=tpu_configs/<family>_data_cpu.cfg
  python -m trainers.create_pretraining_data --model=<family> --corpus=books/ --output_dir=data/seq128 --vocab_size=30000

The family's objective (zoo.data.objectives) makes the examples, deterministic for a --seed (for the masked-LM
objective: the semantics of the original create_pretraining_data.py, dupe_factor, short_seq_prob, 80/10/10,
whole-word masking). The output folder holds the shards, the tokenizer's files and data_config.json (what
trainers.pretrain --input_files needs); it appears only when everything succeeded.
"""

import json
import os

from absl import flags, logging

from trainers import common
from trainers import flags as zflags

FLAGS = flags.FLAGS
zflags.define_model_flags()
zflags.define_corpus_flags()
zflags.define_objective_flags()
flags.DEFINE_string("output_dir", None, "Folder to create with train-*.tfrecord shards, the tokenizer's files, data_config.json.")
flags.DEFINE_integer("num_shards", 4, "Number of TFRecord shards (>= number of workers that read them).")
flags.DEFINE_bool("overwrite", False, "Replace --output_dir if it exists.")


def main(_):
    import zoo
    from zoo.data import objectives
    from zoo.formats import atomic_dir

    zflags.require(output_dir=FLAGS.output_dir)
    out = os.path.abspath(FLAGS.output_dir)
    if os.path.exists(out) and not FLAGS.overwrite:
        raise ValueError(f"--output_dir={out} exists; pass --overwrite or choose another folder.")
    family = zoo.family(FLAGS.model)
    objective = objectives.get(family.objective)
    settings = zflags.objective_settings(objective)
    documents = common.read_corpus(FLAGS)
    tokenizer = common.tokenizer_for(family, documents, FLAGS.vocab_file, FLAGS.vocab_size, FLAGS.lowercase)
    ids = common.tokenize(documents, tokenizer, objective)
    with atomic_dir(out, overwrite=FLAGS.overwrite) as tmp:
        paths, count = objective.write_records(ids, tokenizer, settings, output_pattern=os.path.join(tmp, "train-*.tfrecord"),
                                               num_shards=FLAGS.num_shards, seed=FLAGS.seed,
                                               progress=common.progress_printer("Creating examples"))
        if count == 0:
            raise ValueError("The corpus produced no examples: for sentence pairs it needs documents of at least two sentences.")
        data_config = {
            "family": family.name,
            "objective": objective.name,
            "num_examples": count,
            **vars(settings),
            "lowercase": FLAGS.lowercase,
            "seed": FLAGS.seed,
            "tokenizer": {"class": type(tokenizer).__name__, "assets": tokenizer.save(tmp), **tokenizer.config()},
            "shards": [os.path.basename(p) for p in paths],
        }
        with open(os.path.join(tmp, "data_config.json"), "w") as f:
            json.dump(data_config, f, indent=2)
    logging.info("Wrote %d examples in %d shards to %s", count, len(paths), out)


if __name__ == "__main__":
    zflags.run(main)
