"""The on-disk contract of a zoo model, shared by every family, trainer, converter and export.

A model dir (written by `trainers.pretrain`, `trainers.finetune` and `trainers.convert`) holds:
  zoo_config.json   {"family": "bert", "backbone": {...constructor args...}, "preprocessor": {...}, ...}
  vocab.txt         (or the family's vocabulary files)
  checkpoint, ckpt-N.*   tf.train.Checkpoint with the trained model under `model` (its `.backbone` inside)
A SavedModel export keeps the same zoo_config.json and vocabulary under `assets/`, and its variables under
`backbone`, so a fine-tuning user can start from either.
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
    tmp = path + ".tmp"
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
    with open(os.path.join(config_dir(path), CONFIG_FILE)) as f:
        return json.load(f)


def is_export(path):
    return os.path.exists(os.path.join(path, "saved_model.pb"))


def restore(path, **parts):
    """Loads trained weights into built model parts (e.g. backbone=..., head=...) from a model dir or export.

    In a model dir's checkpoint the parts sit under `model` (the pretrainer or classifier that was trained);
    in an export they sit on the root object. Other objects in the checkpoint (heads, optimizer slots) are
    ignored, but every variable of every part must be found.
    """
    if is_export(path):
        status = tf.train.Checkpoint(**parts).read(os.path.join(path, "variables", "variables"))
    else:
        ckpt = tf.train.latest_checkpoint(path)
        if ckpt is None:
            raise ModelDirError(f"No checkpoint in {path!r}: train first, or point to a dir with ckpt-N files.")
        status = tf.train.Checkpoint(model=tf.train.Checkpoint(**parts)).read(ckpt)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise ModelDirError(f"{path!r} does not hold weights for {sorted(parts)} of this architecture: {e}") from e
    return parts


def restore_backbone(backbone, path):
    """Loads a backbone's trained weights from a model dir's latest checkpoint or an export."""
    restore(path, backbone=backbone)
    return backbone
