"""Glue shared by the trainers: flags -> corpus documents, tokenizer, export. No flags are defined here.

Everything here drives a family through its contract (zoo.contract.Family) and names none.
"""

import contextlib
import functools
import os
import tempfile
import time

from absl import logging

from zoo.data import corpus as corpus_lib


def read_corpus(FLAGS):
    """Documents (lists of sentences) from --corpus, --tfds or --default_corpus."""
    sources = [bool(FLAGS.corpus), bool(FLAGS.tfds), bool(FLAGS.default_corpus)]
    if sum(sources) != 1:
        raise ValueError("Give exactly one text source: --corpus=<files, folders or globs>, --tfds=<dataset> or --default_corpus.")
    if FLAGS.tfds:
        documents = corpus_lib.read_tfds_documents(FLAGS.tfds, split=FLAGS.tfds_split, data_dir=FLAGS.tfds_data_dir, max_documents=FLAGS.max_documents)
        source = f"tfds:{FLAGS.tfds}/{FLAGS.tfds_split}"
    else:
        paths = FLAGS.corpus or [corpus_lib.default_corpus_path()]
        documents = corpus_lib.read_documents(paths, paragraph_mode=FLAGS.paragraph_mode)
        source = ",".join(paths)
    documents = documents[FLAGS.skip_documents :]
    if FLAGS.max_documents:
        documents = documents[: FLAGS.max_documents]
    if not documents:
        raise ValueError(f"No documents left after --skip_documents={FLAGS.skip_documents}.")
    words = sum(len(s.split()) for d in documents for s in d)
    logging.info("Corpus %s: %d documents, %d sentences, %d words", source, len(documents), sum(map(len, documents)), words)
    return documents


def tokenizer_for(family, documents, vocab_file, vocab_size, lowercase, existing=None):
    """The family's tokenizer: `existing` (a resumed model dir's), --vocab_file, or learned from `documents`."""
    from zoo import model_dir as md

    if existing and os.path.exists(os.path.join(existing, md.CONFIG_FILE)):
        return family.load_tokenizer(existing)
    if vocab_file:
        return family.Tokenizer.from_files(vocab_file, lowercase=lowercase)
    start = time.time()
    sentences = (s for d in documents for s in d)
    tokenizer = family.Tokenizer.learn(sentences, vocab_size, lowercase=lowercase)
    logging.info("Learned a %s in %.1fs", tokenizer.describe(), time.time() - start)
    return tokenizer


def tokenize(documents, tokenizer, objective=None):
    """What `objective.prepare` / `write_records` take from raw documents (`objective.tokenize`; documents of id
    lists without an objective), logging throughput and the unknown-token rate."""
    from zoo.data.objectives import Objective

    objective = objective or Objective()
    start = time.time()
    tokenized = objective.tokenize(documents, tokenizer)
    n, unk = objective.count_tokens(tokenized, tokenizer)
    logging.info(
        "Tokenized %d tokens in %.1fs (%.0f tokens/s), unknown %.2f%%", n, time.time() - start, n / max(time.time() - start, 1e-9), 100.0 * unk / max(n, 1)
    )
    if n == 0:
        raise ValueError("The corpus tokenized to no tokens; check its encoding and content.")
    return tokenized


def progress_printer(label):
    """A `progress(done, total)` callback that logs a bar at most every 5 seconds, and at the end."""
    state = {"last": 0.0, "start": time.time()}

    def progress(done, total):
        pct = int(100 * done / max(total, 1))
        if time.time() - state["last"] >= 5 or done == total:
            state["last"] = time.time()
            bar = "#" * (pct // 5) + "." * (20 - pct // 5)
            logging.info("%s [%s] %3d%% (%d/%d, %.0fs)", label, bar, pct, done, total, time.time() - state["start"])

    return progress


def set_precision(precision):
    import keras

    keras.mixed_precision.set_global_policy(precision)
    if precision != "float32":
        logging.info("Compute in %s, variables in float32", precision)


EXPORT_PRECISIONS = ("float32", "bfloat16")
XLA_LENGTH_MULTIPLE = 8  # with jit_compile, packed lengths are rounded up to this: at most T/8 XLA programs per batch size


@contextlib.contextmanager
def precision_policy(precision):
    """Keras layers built inside compute (and, for "bfloat16", store weights) in `precision`; restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def export_model_dir(model_dir, export_dir, sequence_length=None, overwrite=False, precision="float32", jit_compile=False,
                     freeze_weights=False):
    """Writes the raw-string SavedModel for the model in `model_dir`; returns export_dir.

    precision: "float32" (exact: matches the Keras model to 1e-5) or "bfloat16": weights stored in bf16 (half the
      export's size and memory traffic), matmuls in bf16, softmax and LayerNorm in float32 (GELU in float32 where
      oneDNN fuses it into the matmul, in bf16 otherwise), float32 outputs; within 5 % of each output's scale of
      float32 (tests/test_export.py); faster batches on CPUs with bf16 units, see benchmarks/RESULTS.md.
    The exported zoo_config.json records both settings under "export"; `zoo.model_dir.restore` reads a bf16
    export back into float32 models.
    jit_compile: the network runs as XLA computations (one per batch size and 8-token length bucket, compiled on
      first use): lower small-batch latency on CPUs; TF Serving needs --xla_cpu_compilation_enabled=true for it.
    freeze_weights: the network reads its weights as graph constants (`zoo.export.network_function`): the bf16
      export's matmuls then run on AMX (batch 64 1.3-1.5x on the AMX Xeon) at the cost of more serving memory;
      ignored with jit_compile.
    """
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {EXPORT_PRECISIONS}; got {precision!r}.")
    import zoo
    from zoo import export as export_lib
    from zoo import model_dir as md

    config = md.read_config(model_dir)
    family = zoo.family(config["family"])
    multiple = XLA_LENGTH_MULTIPLE if jit_compile else 1
    with precision_policy("float32"):  # the trained weights, whatever the caller's global policy is
        backbone, preprocessor, task = _load_for_export(family, config, model_dir, sequence_length, multiple)
    with precision_policy(precision):
        if precision != "float32":
            trained = task.parts() if task is not None else {"backbone": backbone}
            backbone, preprocessor, task = _load_for_export(family, config, model_dir, sequence_length, multiple, restore=False)
            twin = task.parts() if task is not None else {"backbone": backbone}
            for name, part in trained.items():
                _cast_weights_into(part, twin[name])
        freeze_weights = bool(freeze_weights and not jit_compile)
        network_function = functools.partial(export_lib.network_function, freeze_weights=freeze_weights)
        endpoints, default, trackables = family.serving_endpoints(backbone, preprocessor, network_function, task,
                                                                  jit_compile=jit_compile)
        with tempfile.TemporaryDirectory() as tmp:
            md.write_config(tmp, {**config, "export": {"precision": precision, "jit_compile": bool(jit_compile),
                                                       "freeze_weights": freeze_weights}})
            assets = {md.CONFIG_FILE: os.path.join(tmp, md.CONFIG_FILE)}
            assets.update({os.path.basename(p): p for p in md.asset_files(model_dir, config).values()})
            return export_lib.export_saved_model(export_dir, endpoints, trackables, assets=assets, default_endpoint=default,
                                                 overwrite=overwrite, allow_xla=jit_compile)


def _load_for_export(family, config, model_dir, sequence_length, pad_to_multiple_of, restore=True):
    """(backbone, preprocessor, task model or None) of a model dir, built under the current Keras policy."""
    task = None
    if "task" in config:
        task = family.load_task(model_dir, trim=True, restore=restore)
        backbone, tokenizer = task.backbone, task.preprocessor.tokenizer
        length = sequence_length or task.preprocessor.sequence_length
    else:
        backbone, preprocessor = family.load_pretrained(model_dir, sequence_length=sequence_length, trim=True, restore=restore)
        tokenizer, length = preprocessor.tokenizer, preprocessor.sequence_length
    preprocessor = family.preprocessor(tokenizer, length, trim=True, pad_to_multiple_of=pad_to_multiple_of)
    return backbone, preprocessor, task


def _cast_weights_into(source, target):
    """Copies a built layer's weights into its twin built under another dtype policy (same architecture).

    Weights are matched by their path below the root layer (the twin's root gets another auto-generated name);
    dropout seed states are not weights and keep their own values.
    """
    import keras

    def by_path(layer):
        return {v.path.split("/", 1)[-1]: v for v in layer.weights if "seed_generator" not in v.path}

    src, dst = by_path(source), by_path(target)
    if set(src) != set(dst):
        raise ValueError(f"not the same architecture: {sorted(set(src) ^ set(dst))[:5]} differ")
    for path, variable in dst.items():
        if tuple(src[path].shape) != tuple(variable.shape):
            raise ValueError(f"cannot cast {path} {tuple(src[path].shape)} into {tuple(variable.shape)}: not the same architecture")
        variable.assign(keras.ops.cast(src[path].value, variable.dtype))
