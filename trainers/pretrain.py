r"""Pretrain a zoo model from raw text or pretraining TFRecords, under any tf.distribute strategy.

  python -m trainers.pretrain --flagfile=tpu_configs/<family>_tiny_cpu.cfg
  python -m trainers.pretrain --model=<family> --preset=mini --default_corpus --model_dir=runs/mini --train_steps=2000

The family (--model) names its tokenizer, pretraining objective and optimizer recipe (zoo.contract); this app
only wires them: strategy -> family -> config -> tokenizer -> model dir -> dataset -> pretrainer -> optimizer ->
training loop. From raw text (--corpus / --tfds / --default_corpus) the objective builds its examples in
tf.data (new masks every epoch where it masks); from --input_files (trainers.create_pretraining_data output)
the records are read. Re-running with the same --model_dir resumes from the latest checkpoint.
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
zflags.define_strategy_flags()
zflags.define_optimizer_flags()
flags.DEFINE_string("input_files", None, "Glob of pretraining TFRecords (from trainers.create_pretraining_data).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, summaries and the model config go (resumes if present).")
flags.DEFINE_integer("global_batch_size", 32, "Examples per step over all replicas.")
flags.DEFINE_integer("train_steps", 1000, "Total optimizer steps.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints.")
flags.DEFINE_integer("log_every", 50, "Steps between progress lines and TensorBoard summaries.")
flags.DEFINE_integer("steps_per_loop", 1, "Steps per tf.function call (fewer host round trips; 100s on TPU).")
flags.DEFINE_bool("jit_compile", False, "Compile forward+backward with XLA (static shapes; required on TPU).")
flags.DEFINE_enum("input_sharding", "file", ["file", "batch"], "With several input pipelines: give each its own files, or have all read the same stream and keep every n-th batch (the exact single-process batches).")
flags.DEFINE_string("init_checkpoint", None, "Start from this model dir/export's backbone (continued pretraining).")


def read_records_config(pattern):
    """data_config.json of a create_pretraining_data folder (None when absent), its tokenizer path made absolute."""
    folder = os.path.dirname(pattern.split(",")[0])
    path = os.path.join(folder, "data_config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        config = json.load(f)
    config["folder"] = folder
    return config


def data_and_tokenizer(family, objective, settings):
    """(tokenizer, tokenized documents or None when training from records), with the records' settings checked."""
    existing = FLAGS.model_dir
    if FLAGS.input_files:
        data_config = read_records_config(FLAGS.input_files)
        if data_config:
            if data_config.get("family", family.name) != family.name:
                raise ValueError(f"--input_files were written for --model={data_config['family']}, not --model={family.name}.")
            for key in objective.RECORD_KEYS:
                if data_config[key] != getattr(settings, key):
                    raise ValueError(f"--{key}={getattr(settings, key)} but the records were written with {data_config[key]}.")
            FLAGS.lowercase = data_config["lowercase"]
        vocab_file = FLAGS.vocab_file or (data_config and data_config["folder"])
        if not vocab_file and not os.path.exists(os.path.join(existing, "zoo_config.json")):
            raise ValueError("--input_files needs --vocab_file (or the data_config.json that create_pretraining_data writes).")
        return common.tokenizer_for(family, [], vocab_file, 0, FLAGS.lowercase, existing), None
    documents = common.read_corpus(FLAGS)
    tokenizer = common.tokenizer_for(family, documents, FLAGS.vocab_file, FLAGS.vocab_size, FLAGS.lowercase, existing)
    return tokenizer, common.tokenize(documents, tokenizer, objective)  # what the objective's prepare takes


def model_config(family):
    """The architecture: the preset, or the continued model's; --config_json replaces fields."""
    from zoo import model_dir as md

    config = family.get_preset(FLAGS.preset)
    if FLAGS.init_checkpoint:
        # Continued pretraining: the architecture, tokenizer and casing come from the model being continued.
        init = family.read_config(FLAGS.init_checkpoint)
        config = family.Config.from_dict(init["backbone"])
        if not FLAGS.vocab_file:
            FLAGS.vocab_file = md.config_dir(FLAGS.init_checkpoint)
        FLAGS.lowercase = init["tokenizer"].get("lowercase", FLAGS.lowercase)
        logging.info("Continuing %s: its architecture, tokenizer and casing (lowercase=%s)", FLAGS.init_checkpoint, FLAGS.lowercase)
    if FLAGS.config_json:
        with open(FLAGS.config_json) as f:
            changes = json.load(f)
        if not isinstance(changes, dict):
            raise ValueError(f"--config_json={FLAGS.config_json} must hold a JSON object of {family.Config.__name__} fields.")
        config = config.replace(**changes)
    return config


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


def main(_):
    import keras

    import zoo
    from zoo import optim
    from zoo.data import objectives
    from zoo.training import loop, strategy as strategy_lib

    zflags.require(model_dir=FLAGS.model_dir)
    strategy = strategy_lib.make_strategy(FLAGS.strategy, tpu=FLAGS.tpu, num_cpu_devices=FLAGS.num_cpu_devices)
    if FLAGS.global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"--global_batch_size={FLAGS.global_batch_size} is not divisible by {strategy.num_replicas_in_sync} replicas.")
    family = zoo.family(FLAGS.model)
    objective = objectives.get(family.objective)
    settings = zflags.objective_settings(objective)
    config = model_config(family)
    tokenizer, documents = data_and_tokenizer(family, objective, settings)
    if FLAGS.init_checkpoint and tokenizer.vocabulary_size != config.vocabulary_size:
        raise ValueError(f"--vocab_file has {tokenizer.vocabulary_size} tokens but {FLAGS.init_checkpoint} was trained with {config.vocabulary_size}.")
    config = config.replace(vocabulary_size=tokenizer.vocabulary_size)
    if settings.sequence_length > config.max_sequence_length:
        raise ValueError(f"--sequence_length={settings.sequence_length} exceeds the model's max_sequence_length={config.max_sequence_length}.")
    _check_resume_compatible(FLAGS.model_dir, config)
    recipe = FLAGS.optimizer or family.optimizer
    training = {k: getattr(FLAGS, k) for k in ("global_batch_size", "train_steps", "learning_rate", "warmup_steps", "precision", "strategy", "seed")}
    family.write_model_dir(FLAGS.model_dir, config, tokenizer, settings.sequence_length, preset=FLAGS.preset,
                           objective={"name": objective.name, **vars(settings)}, training={**training, "optimizer": recipe})

    examples = None if FLAGS.input_files else objective.prepare(
        documents, tokenizer, settings, seed=FLAGS.seed, progress=common.progress_printer("Building examples"))

    def dataset_fn(ctx):
        batch_size = ctx.get_per_replica_batch_size(FLAGS.global_batch_size)
        if FLAGS.input_files:
            return objective.records_dataset(FLAGS.input_files, settings, batch_size=batch_size, seed=FLAGS.seed,
                                             input_context=ctx, shard_by=FLAGS.input_sharding)
        return objective.dataset(examples, tokenizer, settings, batch_size=batch_size, seed=FLAGS.seed, input_context=ctx)

    common.set_precision(FLAGS.precision)
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        model = family.pretrainer(config)
        if FLAGS.init_checkpoint:
            from zoo.model_dir import restore_backbone

            restore_backbone(model.backbone, FLAGS.init_checkpoint)
            logging.info("Initialised the backbone from %s", FLAGS.init_checkpoint)
        optimizer = optim.make_optimizer(recipe, learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
                                         total_steps=FLAGS.schedule_steps or FLAGS.train_steps,
                                         weight_decay=FLAGS.weight_decay, variables=model.trainable_variables)
        optimizer.build(model.trainable_variables)
    logging.info("%s %s: %s parameters, %d replicas, optimizer %s", family.name, FLAGS.preset, f"{model.count_params():,}",
                 strategy.num_replicas_in_sync, recipe)
    loop_config = loop.LoopConfig(
        model_dir=FLAGS.model_dir,
        train_steps=FLAGS.train_steps,
        checkpoint_every=FLAGS.checkpoint_every,
        log_every=FLAGS.log_every,
        steps_per_loop=FLAGS.steps_per_loop,
        jit_compile=FLAGS.jit_compile,
        tokens_per_step=FLAGS.global_batch_size * objective.tokens_per_example(settings),
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
