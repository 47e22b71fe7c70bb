"""`Family`: the contract through which every trainer, the export and the converters drive a model family.

A family is one folder (`zoo/bert`, `zoo/gpt`, `zoo/elmo`) whose package holds `FAMILY`, an instance of a
`Family` subclass, and one line in `zoo.FAMILIES`. The subclass names its pieces and implements the few methods
that differ between families; everything that is the same for all of them (presets, model dirs, loading a
pretrained backbone or a fine-tuned task model, restoring weights) is written here once.

What a family names (class attributes):
  name                the key in zoo.FAMILIES, recorded in every model dir
  Config, PRESETS     a `zoo.config.FamilyConfig` dataclass (the backbone's constructor arguments) and its sizes
  Backbone            a `zoo.backbone.Backbone` subclass: `Backbone(**config.to_dict())`
  Tokenizer           a `zoo.text.tokenizer.Tokenizer` subclass (learn / from_files / save / load / tokenize ...)
  objective           a key of `zoo.data.objectives.OBJECTIVES` (masked_lm_nsp, causal_lm, bilm_sentences)
  optimizer           a key of `zoo.optim.RECIPES` (adamw_linear, adam_cosine, adagrad)
  default_samples     prompts `trainers.evaluate` shows samples for when none are given
  convert_formats     {"from": (...), "to": (...)} formats `convert` reads and writes; allow_missing: weight groups
                      a source may lack

What a family implements:
  pretrainer(config) -> keras.Model with `loss_terms`, `loss_counts`, `loss_names` (zoo.training.loop)
  preprocessor(tokenizer, sequence_length, trim=False, pad_to_multiple_of=1) -> raw strings -> feature dict
  task(backbone, preprocessor, num_classes, **options) -> a `zoo.task.TextTask` (fit/evaluate/predict on strings);
      its `parts()` are what checkpoints, exports and bf16 twins carry, `task_config()` what the model dir records
  serving_endpoints(backbone, preprocessor, network_function, task=None, jit_compile=False)
      -> ({name: tf.function on raw strings}, default name, {name: trackable})
  samples(pretrainer, preprocessor, prompts) -> {prompt: [str]}  (fill-mask, generated text, nearest words)
  convert(source_format, target_format, input_path, output_path, **options)
"""

from zoo import config as config_lib
from zoo import model_dir as md


class Family:
    """Base class of every family's contract; see the module docstring."""

    name = None
    Config = None
    PRESETS = {}
    Backbone = None
    Tokenizer = None
    objective = None
    optimizer = None
    default_samples = ()
    convert_formats = {"from": (), "to": ()}
    allow_missing = ()

    # ---- what each family implements -------------------------------------------------------------------
    def pretrainer(self, config):
        raise NotImplementedError

    def preprocessor(self, tokenizer, sequence_length, trim=False, pad_to_multiple_of=1):
        raise NotImplementedError

    def task(self, backbone, preprocessor, num_classes, **options):
        raise NotImplementedError

    def serving_endpoints(self, backbone, preprocessor, network_function, task=None, jit_compile=False):
        raise NotImplementedError

    def samples(self, pretrainer, preprocessor, prompts):
        raise NotImplementedError

    def convert(self, source_format, target_format, input_path, output_path, **options):
        raise NotImplementedError

    # ---- written once for every family --------------------------------------------------------------------
    def get_preset(self, name):
        """A copy of the named preset's config; ValueError listing the family's presets."""
        return config_lib.get_preset(self.PRESETS, name, what=self.name)

    def backbone(self, config):
        """A built backbone with fresh weights for a `Config`."""
        backbone = self.Backbone(**config.to_dict())
        backbone.build()
        return backbone

    def write_model_dir(self, model_dir, config, tokenizer, sequence_length, **extra):
        """zoo_config.json + the tokenizer's assets (see `zoo.model_dir.write_model_dir`)."""
        return md.write_model_dir(model_dir, self.name, config, tokenizer, sequence_length, **extra)

    def read_config(self, path):
        """The model dir's zoo_config.json; ModelDirError if it holds another family."""
        config = md.read_config(path)
        if config.get("family") != self.name:
            raise md.ModelDirError(f"{path!r} holds a {config.get('family')!r} model, not {self.name}.")
        return config

    def load_tokenizer(self, path, config=None):
        """The tokenizer saved in a model dir or export."""
        config = config or self.read_config(path)
        return self.Tokenizer.load(md.config_dir(path), config["tokenizer"])

    def load_pretrained(self, path, sequence_length=None, trim=False, restore=True):
        """(backbone with the trained weights, preprocessor) from a model dir or export.

        restore=False builds both from the config only (a bf16 twin that weights are then cast into).
        """
        config = self.read_config(path)
        backbone = self.backbone(self.Config.from_dict(config["backbone"]))
        if restore:
            md.restore_backbone(backbone, path)
        preprocessor = self.preprocessor(self.load_tokenizer(path, config),
                                         sequence_length or config["preprocessor"]["sequence_length"], trim=trim)
        return backbone, preprocessor

    def load_task(self, path, trim=False, restore=True):
        """The fine-tuned task model (with its preprocessor) that `trainers.finetune` wrote to a model dir."""
        config = self.read_config(path)
        if "task" not in config:
            raise md.ModelDirError(f"{path!r} holds a pretrained {self.name}, not a fine-tuned task model.")
        options = dict(config["task"])
        backbone, preprocessor = self.load_pretrained(path, trim=trim, restore=False)
        model = self.task(backbone, preprocessor, **options)
        if restore:
            md.restore(path, **model.parts())
        return model

    def save_task(self, model, model_dir, tokenizer, sequence_length, **extra):
        """Writes a fine-tuned task model: zoo_config.json (with its `task_config()`), assets, checkpoint."""
        import tensorflow as tf

        self.write_model_dir(model_dir, model.backbone.config, tokenizer, sequence_length, task=model.task_config(), **extra)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=tf.train.Checkpoint(**model.parts())), model_dir,
                                   max_to_keep=1).save()
