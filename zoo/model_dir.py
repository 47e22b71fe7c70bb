"""The on-disk contract of a zoo model, shared by every family, trainer, converter and export.

A model dir (written by `trainers.pretrain`, `trainers.finetune` and `trainers.convert`) holds:
  zoo_config.json   {"family": "bert",
                     "backbone": {...the backbone's constructor arguments...},
                     "tokenizer": {"class": ..., "assets": {role: file name}, ...the tokenizer's options...},
                     "preprocessor": {"sequence_length": T},
                     "objective": {"name": ..., ...settings}   (pretrained models)
                     "task": {...the task model's options...}   (fine-tuned models), ...}
  the tokenizer's asset files (vocab.txt; vocab.json + merges.txt; ...)
  checkpoint, ckpt-N.*   tf.train.Checkpoint with the trained model under `model` (its parts inside)
A SavedModel export keeps the same zoo_config.json and asset files under `assets/`, and its variables under
its parts' names (`backbone`, `head`, ...), so a fine-tuning user can start from either.
"""

import json
import os

import tensorflow as tf

CONFIG_FILE = "zoo_config.json"


class ModelDirError(ValueError):
    """A model dir or export is missing or incomplete; the message names the path."""


def write_config(model_dir, config):
    """Writes `config` (a JSON-able dict with at least "family") as zoo_config.json, atomically."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CONFIG_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"  # per process: every multi-worker task writes the same file
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def config_dir(path):
    """The folder holding zoo_config.json: `path` itself (model dir) or `path/assets` (SavedModel export)."""
    for candidate in (path, os.path.join(path, "assets")):
        if os.path.exists(os.path.join(candidate, CONFIG_FILE)):
            return candidate
    raise ModelDirError(
        f"{path!r} is not a zoo model dir or export (no {CONFIG_FILE} in it or in its assets/). "
        "Point to a --model_dir written by trainers.pretrain/finetune/convert or a trainers.export output."
    )


def read_config(path):
    """zoo_config.json of a model dir or export (the layout before the family contract is read too)."""
    with open(os.path.join(config_dir(path), CONFIG_FILE)) as f:
        return _upgraded(json.load(f))


def _upgraded(config):
    # Model dirs written before the generic layout kept the tokenizer's settings under "preprocessor" and a
    # fine-tuned model's options under "classifier".
    pre = config.get("preprocessor", {})
    if "tokenizer" not in config and "vocabulary" in pre:
        config["tokenizer"] = {"assets": {"vocabulary": pre.pop("vocabulary")}, "lowercase": pre.pop("lowercase", True)}
    if "classifier" in config and "task" not in config:
        config["task"] = config.pop("classifier")
    return config


def write_model_dir(model_dir, family, backbone_config, tokenizer, sequence_length, **extra):
    """Writes zoo_config.json and the tokenizer's asset files into `model_dir`; returns the config dict.

    Args:
      family: the family's name in `zoo.FAMILIES`.
      backbone_config: the family's `FamilyConfig`.
      tokenizer: a `zoo.text.tokenizer.Tokenizer` (its `save` writes the asset files).
      sequence_length: the preprocessor's maximum length T.
      **extra: more JSON sections ("objective", "task", "training", "conversion", ...).
    """
    os.makedirs(model_dir, exist_ok=True)
    assets = tokenizer.save(model_dir)
    config = {
        "family": family,
        "backbone": backbone_config.to_dict(),
        "tokenizer": {"class": type(tokenizer).__name__, "assets": assets, **tokenizer.config()},
        "preprocessor": {"sequence_length": int(sequence_length)},
        **extra,
    }
    write_config(model_dir, config)
    return config


def asset_files(path, config=None):
    """{role: path} of the tokenizer asset files of a model dir or export."""
    config = config or read_config(path)
    folder = config_dir(path)
    return {role: os.path.join(folder, name) for role, name in config["tokenizer"].get("assets", {}).items()}


def is_export(path):
    return os.path.exists(os.path.join(path, "saved_model.pb"))


def raw_weights(layer):
    """The tf.Variables under a Keras layer's weights, in a fixed order (seed-generator states excluded).

    Exports track these raw variables (not the Keras wrappers): the functions capture the raw variables, and
    only then do TF1-style loaders (TF Serving, saved_model_cli) find them restored.
    """
    return [getattr(v, "value", v) for v in layer.weights if "seed_generator" not in v.path]


def restore(path, **parts):
    """Loads trained weights into built model parts (e.g. backbone=..., head=...) from a model dir or export.

    In a model dir's checkpoint the parts sit under `model` (the pretrainer or classifier that was trained);
    in an export they sit on the root object. Other objects in the checkpoint (heads, optimizer slots) are
    ignored, but every variable of every part must be found. An export's weights stored in another dtype (a
    `trainers.export --precision=bfloat16` export) are read as stored and cast into the parts' variables.
    """
    casts = []
    if is_export(path):
        ckpt, prefix = os.path.join(path, "variables", "variables"), ""
        stored = tf.train.load_checkpoint(ckpt).get_variable_to_dtype_map()
        targets = {}
        for name, part in parts.items():
            targets[name] = []
            for i, variable in enumerate(raw_weights(part)):
                dtype = stored.get(f"{name}/{i}/.ATTRIBUTES/VARIABLE_VALUE", variable.dtype)
                if dtype != variable.dtype:
                    shadow = tf.Variable(tf.zeros(variable.shape, dtype), trainable=False)
                    casts.append((shadow, variable))
                    variable = shadow
                targets[name].append(variable)
        status = tf.train.Checkpoint(**targets).read(ckpt)
    else:
        ckpt, prefix = tf.train.latest_checkpoint(path), "model/"
        if ckpt is None:
            raise ModelDirError(f"No checkpoint in {path!r}: train first, or point to a dir with ckpt-N files.")
        status = tf.train.Checkpoint(model=tf.train.Checkpoint(**parts)).read(ckpt)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise ModelDirError(f"{path!r} does not hold weights for {sorted(parts)} of this architecture: {e}") from e
    # assert_existing_objects_matched only checks what both sides have: also require that the checkpoint
    # stores every weight of every part (dropout seed states are not weights).
    for name, part in parts.items():
        found = _count_stored_variables(ckpt, prefix.strip("/").split("/")[:1] + [name] if prefix else [name])
        wanted = len([v for v in part.variables if "seed_generator" not in v.path])
        if found < wanted:
            raise ModelDirError(f"{ckpt} holds {found} of the {wanted} weights of {name!r}; it was written by another architecture or version.")
    for shadow, variable in casts:
        variable.assign(tf.cast(shadow, variable.dtype))
    return parts


def restore_backbone(backbone, path):
    """Loads a backbone's trained weights from a model dir's latest checkpoint or an export."""
    restore(path, backbone=backbone)
    return backbone


def _count_stored_variables(ckpt, path):
    """Variables reachable from the object at `path` (e.g. ["model", "backbone"]) in a checkpoint's object graph."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(ckpt).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    node = 0
    for name in path:
        children = {c.local_name: c.node_id for c in graph.nodes[node].children}
        if name not in children:
            return 0
        node = children[name]
    seen, stack, count = set(), [node], 0
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        count += any(a.name == "VARIABLE_VALUE" for a in graph.nodes[n].attributes)
        stack.extend(c.node_id for c in graph.nodes[n].children)
    return count
