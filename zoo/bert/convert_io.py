"""Readers and writers of zoo.bert.convert: every source format becomes a `Converted`, which every target writes.

A reader loads and checks everything (config, vocabulary, every weight's name and shape) before a writer
creates anything; writers fill a temporary folder that is renamed into place (convert_formats.atomic_dir).
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from zoo import model_dir as md
from zoo.bert import convert_formats as fmt
from zoo.bert.backbone import BertBackbone
from zoo.bert.config import BertConfig
from zoo.bert.weight_map import (
    HEAD_NAMES,
    PARTS,
    ConversionError,
    assign_google,
    checked_canonical,
    expected_shapes,
    hf_name,
    normalize_hf,
    transposed,
    zoo_to_google,
)
from zoo.bert.pretrainer import BertPretrainer


# ---------------------------------------------------------------------------------------------------------
# Readers: every source becomes a `Converted`.

@dataclasses.dataclass
class Converted:
    """A BERT in canonical form: config, canonical weights, tokenizer settings, and where it came from."""

    config: BertConfig
    weights: dict
    vocabulary: list
    lowercase: bool
    sequence_length: int
    source: dict

    @property
    def parts(self):
        """{"pooler", "mlm", "nsp": bool}: which optional parts hold real (converted or trained) weights."""
        return {part: all(n in self.weights for n in names) for part, names in PARTS.items()}


def _vocabulary(path, config):
    from zoo.text.wordpiece import RESERVED_TOKENS, load_vocabulary

    try:
        vocabulary = load_vocabulary(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: {e}; expected the WordPiece vocabulary (one token per line).") from e
    if len(vocabulary) > config.vocabulary_size:
        raise ConversionError(f"{path} has {len(vocabulary)} tokens but the config's vocab_size is {config.vocabulary_size}.")
    missing = [t for t in RESERVED_TOKENS if t not in vocabulary]
    if missing:
        raise ConversionError(f"{path} lacks the special tokens {missing}.")
    return vocabulary


def _sequence_length(length, config):
    """The zoo preprocessor's length: `length` capped by the position table; at least [CLS] x [SEP]."""
    if int(length) < 3:
        raise ConversionError(f"sequence_length={length} is too short: at least 3 ([CLS] token [SEP]).")
    return min(int(length), config.max_sequence_length)


def read_hf(path, sequence_length=128, allow_missing_pooler=False):
    """An HF transformers BERT folder (config.json, model.safetensors or pytorch_model.bin, vocab.txt)."""
    if not os.path.isdir(path):
        raise ConversionError(f"{path} is not a folder; expected an HF BERT folder with config.json, model.safetensors or pytorch_model.bin, vocab.txt.")
    config = fmt.bert_config_from_json(fmt.read_json(os.path.join(path, "config.json"), "HF BERT config"), os.path.join(path, "config.json"))
    vocabulary = _vocabulary(os.path.join(path, "vocab.txt"), config)
    tensors, files = fmt.read_hf_weights(path)
    where = ", ".join(files)
    weights = checked_canonical(normalize_hf(tensors, where), config, where, hf_name, transposed, allow_missing_pooler)
    lowercase, reason = fmt.hf_lowercase(path, vocabulary)
    length = _sequence_length(sequence_length, config)
    return Converted(config, weights, vocabulary, lowercase, length, {"format": "hf", "path": os.path.abspath(path), "lowercase_from": reason})


def read_tf1(path, sequence_length=128, allow_missing_pooler=False):
    """A google-research/bert folder (bert_config.json, vocab.txt, bert_model.ckpt.*) or checkpoint prefix."""
    prefix = fmt.tf1_checkpoint_prefix(path)
    folder = os.path.dirname(os.path.abspath(prefix))
    config_path = os.path.join(folder, "bert_config.json")
    config = fmt.bert_config_from_json(fmt.read_json(config_path, "google-research bert_config.json"), config_path)
    vocabulary = _vocabulary(os.path.join(folder, "vocab.txt"), config)
    weights = checked_canonical(fmt.read_tf1_checkpoint(prefix), config, prefix, allow_missing_pooler=allow_missing_pooler)
    lowercase, reason = fmt.tf1_lowercase(folder, vocabulary)
    length = _sequence_length(sequence_length, config)
    return Converted(config, weights, vocabulary, lowercase, length, {"format": "tf1", "path": os.path.abspath(prefix), "lowercase_from": reason})


def read_zoo(path, sequence_length=None, allow_missing_pooler=False):
    """A zoo model dir (pretrained: heads included; fine-tuned: backbone only) or a zoo SavedModel export.

    Parts that zoo_config.json `conversion.parts` marks as not converted (e.g. the heads of a converted
    BertModel) are left out. `allow_missing_pooler` is accepted for a uniform signature and unused.
    """
    from zoo.text.wordpiece import load_vocabulary

    try:
        values = md.read_config(path)
        if values.get("family") != "bert":
            raise ConversionError(f"{path} holds a {values.get('family')!r} model, not BERT.")
        config = BertConfig.from_dict(values["backbone"])
        model = BertPretrainer(BertBackbone(**config.to_dict()))
        model.build()
        heads = not md.is_export(path) and "task" not in values
        parts = {"backbone": model.backbone}
        if heads:
            parts.update(masked_lm_head=model.masked_lm_head, next_sentence_head=model.next_sentence_head)
        try:
            md.restore(path, **parts)
        except md.ModelDirError:
            if not heads:
                raise
            heads = False
            md.restore(path, backbone=model.backbone)
        pre, tokenizer = values["preprocessor"], values["tokenizer"]
        vocabulary = load_vocabulary(md.asset_files(path, values)["vocabulary"])
    except (KeyError, ValueError) as e:  # ModelDirError is a ValueError
        raise ConversionError(f"{path}: not a readable zoo BERT model dir or export ({type(e).__name__}: {e}).") from e
    weights = zoo_to_google(model.backbone, model if heads else None)
    real = values.get("conversion", {}).get("parts", {})
    for part, names in PARTS.items():
        if not real.get(part, True):
            for n in names:
                weights.pop(n, None)
    if "task" in values:
        logging.warning("%s is a fine-tuned classifier: only its backbone is converted, not the classification head.", path)
    source = {"format": "zoo", "path": os.path.abspath(path), "lowercase_from": f"{md.CONFIG_FILE} tokenizer.lowercase"}
    return Converted(config, weights, vocabulary, bool(tokenizer["lowercase"]), _sequence_length(sequence_length or pre["sequence_length"], config), source)


# ---------------------------------------------------------------------------------------------------------
# Writers.

def _initial_value(name, shape, stddev, rng):
    # What a fresh zoo BERT starts from: truncated normal kernels, unit LayerNorm scales, zero biases.
    if name.endswith(("kernel", "output_weights", "_embeddings")):
        return np.clip(rng.normal(0.0, stddev, shape), -2 * stddev, 2 * stddev).astype(np.float32)
    return (np.ones if name.endswith("gamma") else np.zeros)(shape, np.float32)


def write_zoo(converted, model_dir, overwrite=False):
    """A zoo model dir: zoo_config.json, vocab.txt, tf.train.Checkpoint(model=BertPretrainer).

    Parts the source does not have (pretraining heads, an allowed-missing pooler) start from a fresh (seeded)
    initialisation and are recorded as such in zoo_config.json `conversion.parts`.
    """
    from zoo.text.wordpiece import WordPieceTokenizer

    config = converted.config
    model = BertPretrainer(BertBackbone(**config.to_dict()))
    model.build()
    rng = np.random.RandomState(0)
    full = dict(converted.weights)
    for name, shape in expected_shapes(config, heads=True).items():
        if name not in full:
            full[name] = _initial_value(name, shape, config.initializer_range, rng)
    assign_google(full, model.backbone, model)
    with fmt.atomic_dir(model_dir, overwrite) as tmp:
        md.write_model_dir(tmp, "bert", config, WordPieceTokenizer(converted.vocabulary, lowercase=converted.lowercase),
                           converted.sequence_length, conversion={**converted.source, "parts": converted.parts})
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), tmp, max_to_keep=1).save()
    return model_dir


def write_hf(converted, out_dir, overwrite=False):
    """An HF folder: config.json, model.safetensors, vocab.txt, tokenizer_config.json, special_tokens_map.json.

    With both pretraining heads the layout is BertForPreTraining ('bert.' prefix, cls.*; the tied decoder is
    left to transformers), with the MLM head only BertForMaskedLM, else BertModel.
    """
    from zoo.text.wordpiece import save_vocabulary

    parts = converted.parts
    if parts["mlm"]:
        architecture, prefix, keep = ("BertForPreTraining" if parts["nsp"] else "BertForMaskedLM"), "bert.", set(HEAD_NAMES)
    else:
        architecture, prefix, keep = "BertModel", "", set()
    tensors = {}
    for name, value in converted.weights.items():
        if name in HEAD_NAMES and name not in keep:
            continue
        key = hf_name(name) if name.startswith("cls/") else prefix + hf_name(name)
        tensors[key] = value.T if transposed(name) else value
    vocabulary = converted.vocabulary
    pad = vocabulary.index("[PAD]")
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    tokenizer = {"tokenizer_class": "BertTokenizer", "do_lower_case": converted.lowercase, "strip_accents": None, "tokenize_chinese_chars": True,
                 "model_max_length": converted.config.max_sequence_length, **special}
    files = {"config.json": fmt.hf_config_json(converted.config, architecture, pad), "tokenizer_config.json": tokenizer, "special_tokens_map.json": special}
    with fmt.atomic_dir(out_dir, overwrite) as tmp:
        fmt.write_safetensors(tensors, os.path.join(tmp, "model.safetensors"))
        save_vocabulary(vocabulary, os.path.join(tmp, "vocab.txt"))
        for name, value in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(value, f, indent=2, sort_keys=True)
    return out_dir


READERS = {"hf": read_hf, "tf1": read_tf1, "zoo": read_zoo}
WRITERS = {"zoo": write_zoo, "hf": write_hf}
