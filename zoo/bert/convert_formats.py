"""File formats for zoo.bert.convert: reading and writing weights, configs and casing of BERT checkpoints.

Readers return plain numpy arrays under each format's own variable names; zoo.bert.convert maps names.
Every problem with a file raises `ConversionError` naming the file and what was expected there.

  * safetensors: parsed here from its header (8-byte little-endian length, JSON, raw data), so a truncated
    or foreign file is reported with the byte counts; F32/F16/BF16/F64 tensors (integer buffers kept as is).
  * pytorch_model.bin: read with torch (weights_only) when torch is installed.
  * google-research/bert TF1 checkpoints: tf.train.load_checkpoint (index + data shards).
"""

import contextlib
import json
import os
import shutil

import numpy as np

from zoo.bert.config import BertConfig


class ConversionError(ValueError):
    """A checkpoint does not match the expected layout; the message lists names and shapes."""


_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
# HF buffers that are not weights (integer position/segment ids).
HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# TF1 optimizer state and bookkeeping in google-research/bert pretraining checkpoints.
TF1_IGNORED_SUFFIXES = ("/adam_m", "/adam_v", "/Adam", "/Adam_1")
TF1_IGNORED_NAMES = ("global_step", "_CHECKPOINTABLE_OBJECT_GRAPH")


# ---------------------------------------------------------------------------------------------------------
# JSON and configs.

def read_json(path, what):
    """A JSON object from `path`; ConversionError naming the file when it is missing or not JSON."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path} not found: expected the {what} there.")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e}); expected the {what}.") from e
    if not isinstance(value, dict):
        raise ConversionError(f"{path} holds a JSON {type(value).__name__}; expected the {what} (a JSON object).")
    return value


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

def read_safetensors(path):
    """{name: np.ndarray} from a .safetensors file (float tensors as float32)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ConversionError(f"{path} has {size} bytes: too short for a safetensors file (8-byte header length, JSON header, data).")
        length = int.from_bytes(prefix, "little")
        if length > size - 8:
            raise ConversionError(f"{path} is not a safetensors file or is truncated: its header length says {length} bytes, the file has {size}.")
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConversionError(f"{path} is not a safetensors file: its header is not JSON ({e}).") from e
    header.pop("__metadata__", None)
    try:
        end = max([int(entry["data_offsets"][1]) for entry in header.values()], default=0)
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ConversionError(f"{path} is not a safetensors file: bad header entry ({e}).") from e
    if 8 + length + end > size:
        raise ConversionError(f"{path} is truncated: its header describes {8 + length + end} bytes, the file has {size}.")
    data = np.memmap(path, np.uint8, "r", offset=8 + length, shape=(end,)) if end else np.zeros(0, np.uint8)
    out = {}
    for name, entry in header.items():
        begin, stop = (int(x) for x in entry["data_offsets"])
        shape, dtype = tuple(entry["shape"]), entry["dtype"]
        raw = data[begin:stop]
        if dtype == "BF16":
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = raw.view(_SAFETENSORS_DTYPES[dtype])
        else:
            raise ConversionError(f"{path}: tensor {name} has dtype {dtype}, which this converter does not read.")
        if array.size != int(np.prod(shape)):
            raise ConversionError(f"{path}: tensor {name} holds {raw.size} bytes, not the {dtype} {list(shape)} its header says.")
        array = array.reshape(shape)
        out[name] = array.astype(np.float32) if array.dtype.kind == "f" else np.array(array)
    del data
    return out


def write_safetensors(tensors, path):
    """Writes {name: float32 array} as safetensors with the metadata transformers expects ({"format": "pt"})."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, path, metadata={"format": "pt"})


def read_torch_bin(path):
    """{name: np.ndarray} from a pytorch_model.bin (a pickled state dict); needs torch."""
    try:
        import torch
    except ImportError as e:
        raise ConversionError(f"{path} is a PyTorch pickle and reading it needs torch (pip install torch); or give the weights as model.safetensors.") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt zips/pickles
        raise ConversionError(f"{path} could not be read as a PyTorch state dict ({type(e).__name__}: {e}).") from e
    if not isinstance(state, dict):
        raise ConversionError(f"{path} holds a {type(state).__name__}, expected a state dict of tensors.")
    return {k: (v.float().numpy() if v.is_floating_point() else v.numpy()) for k, v in state.items() if hasattr(v, "numpy")}


HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read_hf_weights(folder):
    """({name: np.ndarray}, [files read]) from an HF folder: safetensors preferred, sharded or not."""
    for name in HF_WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            break
    else:
        have = sorted(os.listdir(folder))
        raise ConversionError(f"{folder} holds no weights: expected one of {list(HF_WEIGHT_FILES)}, found {have}.")
    if name.endswith(".index.json"):
        weight_map = read_json(path, "shard index (a 'weight_map' of tensor name -> file)").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConversionError(f"{path} has no 'weight_map' object.")
        files = [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]
    else:
        files = [path]
    tensors = {}
    for file in files:
        if not os.path.isfile(file):
            raise ConversionError(f"{file} not found (named by {path}).")
        tensors.update(read_safetensors(file) if file.endswith(".safetensors") else read_torch_bin(file))
    return tensors, files


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


def read_tf1_checkpoint(prefix):
    """{original variable name: float32 array} from a TF1 checkpoint, optimizer slots and step left out."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        names = [n for n in names if n not in TF1_IGNORED_NAMES and not n.endswith(TF1_IGNORED_SUFFIXES)]
        return {n: np.asarray(reader.get_tensor(n), np.float32) for n in names}
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:  # a short .data file: IndexError
        message = (getattr(e, "message", None) or str(e) or type(e).__name__).strip().splitlines()[0]
        raise ConversionError(f"{prefix}.index / {prefix}.data-*: not a readable TF checkpoint ({message}).") from e


# ---------------------------------------------------------------------------------------------------------
# Output folders.

@contextlib.contextmanager
def atomic_dir(path, overwrite=False):
    """Yields a temporary sibling of `path` to write into; renames it to `path` only if the block succeeds.

    On failure the temporary folder (and any parent folders this created) are removed, so nothing is left.
    """
    path = os.path.abspath(path)
    if os.path.lexists(path) and not overwrite:
        raise ConversionError(f"{path} already exists; choose a new output folder or overwrite it (--overwrite).")
    created = None
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        created, parent = parent, os.path.dirname(parent)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        yield tmp
        if os.path.lexists(path):
            old = f"{path}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(created, ignore_errors=True)
        raise
