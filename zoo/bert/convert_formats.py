"""BERT's side of the file formats: HF / google-research config JSON, casing, the TF1 checkpoint prefix.

The generic readers and writers (safetensors, torch pickles, HF weight folders, TF checkpoints, atomic output
folders) live in `zoo.formats` and are re-exported here for the BERT converter. Every problem raises
`ConversionError` naming the file and what was expected there.
"""

import os

from zoo.bert.config import BertConfig
from zoo.formats import (  # noqa: F401  (the generic readers, used through this module by the BERT converter)
    HF_WEIGHT_FILES,
    ConversionError,
    atomic_dir,
    read_hf_weights,
    read_json,
    read_safetensors,
    read_tf1_checkpoint,
    read_torch_bin,
    write_safetensors,
)

# HF buffers that are not weights (integer position/segment ids).
HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


# ---------------------------------------------------------------------------------------------------------
# JSON and configs.

# HF config.json and google-research bert_config.json share these key names.
BERT_JSON_KEYS = {
    "vocab_size": "vocabulary_size",
    "hidden_size": "hidden_dim",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_dim",
    "max_position_embeddings": "max_sequence_length",
    "type_vocab_size": "num_segments",
    "layer_norm_eps": "layer_norm_epsilon",  # HF only; the original hard-codes 1e-12
    "hidden_dropout_prob": "dropout",
    "initializer_range": "initializer_range",
}
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def bert_config_from_json(values, path):
    """BertConfig from an HF config.json or google-research bert_config.json dict (read from `path`).

    Raises:
      ConversionError: missing size keys, or an architecture zoo's BERT does not implement (activation other
        than the exact-erf "gelu", relative position embeddings, decoder/cross-attention, another model type).
    """
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ConversionError(f"{path} lacks {missing}; expected a BERT config with keys {list(_REQUIRED)}.")
    model_type = values.get("model_type", "bert")
    if model_type != "bert":
        raise ConversionError(f"{path} describes model_type={model_type!r}; only BERT (model_type 'bert') converts.")
    unsupported = {
        "hidden_act": (values.get("hidden_act", "gelu"), "gelu"),
        "position_embedding_type": (values.get("position_embedding_type", "absolute"), "absolute"),
        "is_decoder": (bool(values.get("is_decoder", False)), False),
        "add_cross_attention": (bool(values.get("add_cross_attention", False)), False),
    }
    for key, (got, want) in unsupported.items():
        if got != want:
            raise ConversionError(f"{path}: {key}={got!r} is not supported; zoo BERT implements {key}={want!r} only.")
    defaults = BertConfig().to_dict()
    args = {ours: values[theirs] for theirs, ours in BERT_JSON_KEYS.items() if theirs in values}
    try:  # cast each value to the type of the field's default (int sizes, float rates)
        config = BertConfig(**{k: type(defaults[k])(v) for k, v in args.items()})
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{path}: a size or rate is not a number ({e}).") from e
    if min(config.vocabulary_size, config.num_layers, config.num_heads, config.hidden_dim, config.intermediate_dim, config.max_sequence_length) < 1:
        raise ConversionError(f"{path}: sizes must be positive, got {config}.")
    if config.hidden_dim % config.num_heads:
        raise ConversionError(f"{path}: hidden_size {config.hidden_dim} is not divisible by num_attention_heads {config.num_heads}.")
    return config


def hf_config_json(config, architecture, pad_token_id=0):
    """The config.json dict of transformers' BERT for a BertConfig."""
    values = {theirs: getattr(config, ours) for theirs, ours in BERT_JSON_KEYS.items()}
    values.update(
        architectures=[architecture],
        model_type="bert",
        hidden_act="gelu",
        attention_probs_dropout_prob=config.dropout,
        position_embedding_type="absolute",
        pad_token_id=int(pad_token_id),
    )
    return values


# ---------------------------------------------------------------------------------------------------------
# Casing.

def vocabulary_is_cased(vocabulary):
    """True when some non-special token has an upper-case letter (uncased vocabularies have none)."""
    return any(t != t.lower() for t in vocabulary if not (t.startswith("[") and t.endswith("]")))


def hf_lowercase(folder, vocabulary):
    """(lowercase, reason) for an HF folder: tokenizer_config.json's do_lower_case, else the vocabulary's case.

    Raises:
      ConversionError: the tokenizer config asks for basic-tokenizer options zoo's tokenizer does not have.
    """
    path = os.path.join(folder, "tokenizer_config.json")
    settings = read_json(path, "tokenizer config") if os.path.isfile(path) else {}
    lower = settings.get("do_lower_case")
    if settings.get("do_basic_tokenize", True) is False or settings.get("tokenize_chinese_chars", True) is False:
        raise ConversionError(f"{path}: do_basic_tokenize=false / tokenize_chinese_chars=false are not supported by zoo's BERT tokenizer.")
    strip = settings.get("strip_accents")
    if strip is not None and lower is not None and bool(strip) != bool(lower):
        raise ConversionError(f"{path}: strip_accents={strip} with do_lower_case={lower} is not supported (zoo strips accents iff it lower-cases).")
    if lower is not None:
        return bool(lower), f"{path} do_lower_case={lower}"
    cased = vocabulary_is_cased(vocabulary)
    return not cased, "vocab.txt has upper-case tokens" if cased else "vocab.txt has no upper-case tokens"


def tf1_lowercase(folder, vocabulary):
    """(lowercase, reason) for a google-research folder: 'uncased'/'cased' in its name, else the vocabulary."""
    name = os.path.basename(os.path.normpath(folder))
    if "uncased" in name.lower():
        return True, f"folder name {name!r} says uncased"
    if "cased" in name.lower():
        return False, f"folder name {name!r} says cased"
    cased = vocabulary_is_cased(vocabulary)
    return not cased, "vocab.txt has upper-case tokens" if cased else "vocab.txt has no upper-case tokens"


# ---------------------------------------------------------------------------------------------------------
# Weights.

def tf1_checkpoint_prefix(path):
    """The checkpoint prefix of a google-research folder (bert_model.ckpt, else the latest) or of a prefix."""
    import tensorflow as tf

    if not os.path.isdir(path):
        if os.path.isfile(path + ".index"):
            return path
        raise ConversionError(f"{path} is neither a folder nor a checkpoint prefix (no {path}.index).")
    for candidate in (os.path.join(path, "bert_model.ckpt"), tf.train.latest_checkpoint(path)):
        if candidate and os.path.isfile(candidate + ".index"):
            return candidate
    indexes = sorted(f for f in os.listdir(path) if f.endswith(".index"))
    if len(indexes) == 1:
        return os.path.join(path, indexes[0][: -len(".index")])
    raise ConversionError(f"{path}: expected a TF1 checkpoint bert_model.ckpt.index + bert_model.ckpt.data-*, found {sorted(os.listdir(path))}.")


