r"""Pretrain a zoo model from raw text or pretraining TFRecords, under any tf.distribute strategy.

  python -m trainers.pretrain --flagfile=tpu_configs/bert_tiny_cpu.cfg
  python -m trainers.pretrain --preset=mini --default_corpus --model_dir=runs/mini --train_steps=2000

From raw text (--corpus / --tfds / --default_corpus) sentence pairs are built once and masked dynamically in
tf.data (new masks every epoch); from --input_files (trainers.create_pretraining_data output) the static masks
are read. Re-running with the same --model_dir resumes from the latest checkpoint.
"""

import json
import os

from absl import flags, logging

from trainers import common
from trainers import flags as zflags

FLAGS = flags.FLAGS
zflags.define_model_flags()
zflags.define_corpus_flags()
zflags.define_instance_flags()
zflags.define_strategy_flags()
flags.DEFINE_string("input_files", None, "Glob of pretraining TFRecords (from trainers.create_pretraining_data).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, summaries and the model config go (resumes if present).")
flags.DEFINE_integer("global_batch_size", 32, "Examples per step over all replicas (BERT: 256).")
flags.DEFINE_integer("train_steps", 1000, "Total optimizer steps (BERT: 1,000,000).")
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate (BERT: 1e-4).")
flags.DEFINE_integer("schedule_steps", None, "Steps of the whole warmup+decay schedule (default --train_steps); set it when pretraining in phases (seq 128 then 512).")
flags.DEFINE_integer("warmup_steps", 100, "Linear warmup steps (BERT: 10,000).")
flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay (not on LayerNorm or biases).")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("log_every", 50, "Steps between progress lines and TensorBoard summaries.")
flags.DEFINE_integer("steps_per_loop", 1, "Steps per tf.function call (fewer host round trips; 100s on TPU).")
flags.DEFINE_bool("jit_compile", False, "Compile forward+backward with XLA (static shapes; required on TPU).")
flags.DEFINE_enum("input_sharding", "file", ["file", "batch"], "With several input pipelines: give each its own files, or have all read the same stream and keep every n-th batch (the exact single-process batches).")
flags.DEFINE_string("init_checkpoint", None, "Start from this model dir/export's backbone (continued pretraining).")


def bert_dataset_fn(FLAGS, vocabulary_holder):
    """(dataset_fn, tokens_per_step) for BERT's MLM + NSP features."""
    from zoo.data import instances, pipeline

    if FLAGS.input_files:

        def records_fn(ctx):
            return pipeline.pretraining_dataset_from_records(
                FLAGS.input_files,
                batch_size=ctx.get_per_replica_batch_size(FLAGS.global_batch_size),
                sequence_length=FLAGS.sequence_length,
                max_predictions=FLAGS.max_predictions,
                seed=FLAGS.seed,
                input_context=ctx,
                shard_by=FLAGS.input_sharding,
            )

        return records_fn
    tokenizer, ids = common.tokenize(vocabulary_holder["documents"], vocabulary_holder["vocabulary"], FLAGS.lowercase)
    pairs = instances.stack_instances(
        instances.create_pair_instances(
            ids,
            vocabulary=tokenizer.vocabulary,
            sequence_length=FLAGS.sequence_length,
            short_seq_prob=FLAGS.short_seq_prob,
            dupe_factor=1,
            seed=FLAGS.seed,
            progress=common.progress_printer("Building sentence pairs"),
        )
    )
    logging.info("%d sentence pairs (%.1f%% random next)", len(pairs["next_sentence_labels"]), 100 * pairs["next_sentence_labels"].mean())
    specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.unknown_id]

    def dynamic_fn(ctx):
        return pipeline.dynamic_masking_dataset(
            pairs,
            batch_size=ctx.get_per_replica_batch_size(FLAGS.global_batch_size),
            vocabulary_size=tokenizer.vocabulary_size,
            mask_id=tokenizer.mask_id,
            special_ids=specials,
            max_predictions=FLAGS.max_predictions,
            mask_prob=FLAGS.masked_lm_prob,
            seed=FLAGS.seed,
            input_context=ctx,
        )

    return dynamic_fn


def data_vocabulary(FLAGS):
    """The vocabulary to train with, and the raw documents when training from text."""
    from zoo.bert.pretrained import VOCAB_FILE

    existing = os.path.join(FLAGS.model_dir, VOCAB_FILE)
    if FLAGS.input_files:
        data_config = _records_data_config(FLAGS.input_files)
        vocab_file = FLAGS.vocab_file or (data_config and data_config["vocab_file"])
        if not vocab_file and not os.path.exists(existing):
            raise ValueError("--input_files needs --vocab_file (or the data_config.json that create_pretraining_data writes).")
        if data_config:
            for key in ("sequence_length", "max_predictions"):
                if data_config[key] != getattr(FLAGS, key):
                    raise ValueError(f"--{key}={getattr(FLAGS, key)} but the records were written with {data_config[key]}.")
            FLAGS.lowercase = data_config["lowercase"]
        return {"vocabulary": common.vocabulary_for([], vocab_file, 0, FLAGS.lowercase, existing), "documents": None}
    documents = common.read_corpus(FLAGS)
    vocabulary = common.vocabulary_for(documents, FLAGS.vocab_file, FLAGS.vocab_size, FLAGS.lowercase, existing)
    return {"vocabulary": vocabulary, "documents": documents}


def _check_resume_compatible(model_dir, config):
    from zoo import model_dir as md

    try:
        previous = md.read_config(model_dir)
    except md.ModelDirError:
        return
    if previous.get("backbone") != config.to_dict():
        raise ValueError(
            f"--model_dir={model_dir} already holds a different model ({previous.get('backbone')}); "
            "use a new --model_dir or the same --preset/--config_json to resume."
        )


def _records_data_config(pattern):
    folder = os.path.dirname(pattern.split(",")[0])
    path = os.path.join(folder, "data_config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        config = json.load(f)
    config["vocab_file"] = os.path.join(folder, config["vocab_file"])
    return config


def main(_):
    import keras

    import zoo
    from zoo import optim
    from zoo.training import loop, strategy as strategy_lib

    zflags.require(model_dir=FLAGS.model_dir)
    strategy = strategy_lib.make_strategy(FLAGS.strategy, tpu=FLAGS.tpu, num_cpu_devices=FLAGS.num_cpu_devices)
    if FLAGS.global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--global_batch_size={FLAGS.global_batch_size} is not divisible by {strategy.num_replicas_in_sync} replicas.")
    family = zoo.family(FLAGS.model)
    config = family.get_preset(FLAGS.preset)
    if FLAGS.init_checkpoint:
        # Continued pretraining: the architecture, vocabulary and casing come from the model being continued.
        from zoo import model_dir as md

        init = md.read_config(FLAGS.init_checkpoint)
        config = family.Config.from_dict(init["backbone"])
        if not FLAGS.vocab_file:
            FLAGS.vocab_file = os.path.join(md.config_dir(FLAGS.init_checkpoint), init["preprocessor"]["vocabulary"])
        FLAGS.lowercase = init["preprocessor"]["lowercase"]
        logging.info("Continuing %s: its architecture, vocabulary and casing (lowercase=%s)", FLAGS.init_checkpoint, FLAGS.lowercase)
    if FLAGS.config_json:
        with open(FLAGS.config_json) as f:
            config = config.replace(**json.load(f))
    data = data_vocabulary(FLAGS)
    if FLAGS.init_checkpoint and len(data["vocabulary"]) != config.vocabulary_size:
        raise ValueError(f"--vocab_file has {len(data['vocabulary'])} tokens but {FLAGS.init_checkpoint} was trained with {config.vocabulary_size}.")
    config = config.replace(vocabulary_size=len(data["vocabulary"]))
    if FLAGS.sequence_length > config.max_sequence_length:
        raise ValueError(f"--sequence_length={FLAGS.sequence_length} exceeds the model's max_sequence_length={config.max_sequence_length}.")
    _check_resume_compatible(FLAGS.model_dir, config)
    family.write_model_dir(
        FLAGS.model_dir, config, data["vocabulary"], lowercase=FLAGS.lowercase, sequence_length=FLAGS.sequence_length,
        preset=FLAGS.preset, training={k: getattr(FLAGS, k) for k in ("global_batch_size", "train_steps", "learning_rate", "warmup_steps", "precision", "strategy", "seed")},
    )
    dataset_fn = bert_dataset_fn(FLAGS, data)
    common.set_precision(FLAGS.precision)
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        model = family.pretrainer(config)
        if FLAGS.init_checkpoint:
            from zoo.model_dir import restore_backbone

            restore_backbone(model.backbone, FLAGS.init_checkpoint)
            logging.info("Initialised the backbone from %s", FLAGS.init_checkpoint)
        schedule = optim.WarmupLinearDecay(FLAGS.learning_rate, FLAGS.warmup_steps, FLAGS.schedule_steps or FLAGS.train_steps)
        optimizer = optim.adamw(schedule, weight_decay=FLAGS.weight_decay, variables=model.trainable_variables)
        optimizer.build(model.trainable_variables)
    logging.info("%s %s: %s parameters, %d replicas", FLAGS.model, FLAGS.preset, f"{model.count_params():,}", strategy.num_replicas_in_sync)
    loop_config = loop.LoopConfig(
        model_dir=FLAGS.model_dir,
        train_steps=FLAGS.train_steps,
        checkpoint_every=FLAGS.checkpoint_every,
        log_every=FLAGS.log_every,
        steps_per_loop=FLAGS.steps_per_loop,
        jit_compile=FLAGS.jit_compile,
        tokens_per_step=FLAGS.global_batch_size * FLAGS.sequence_length,
    )
    history = loop.train(model, optimizer, dataset_fn, strategy, loop_config, FLAGS.global_batch_size)
    if history:
        first, last = history[0], history[-1]
        logging.info("Done: loss %.4f -> %.4f over steps %d..%d; model in %s", first["loss"], last["loss"], first["step"], last["step"], FLAGS.model_dir)
        with open(os.path.join(FLAGS.model_dir, "train_history.json"), "a") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    zflags.run(main)
