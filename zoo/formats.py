"""Weight and folder formats that every family's converter reads and writes; knows no model family.

Readers return plain numpy arrays under each format's own variable names (the family's converter maps names).
Every problem with a file raises `ConversionError` naming the file and what was expected there.

  * safetensors: parsed here from its header (8-byte little-endian length, JSON, raw data), so a truncated
    or foreign file is reported with the byte counts; F32/F16/BF16/F64 tensors (integer buffers kept as is).
  * PyTorch pickles (pytorch_model.bin): read with torch (weights_only) when torch is installed.
  * HF folders' weights: model.safetensors or pytorch_model.bin, sharded (an index JSON) or not.
  * TF1 / TF2 checkpoints: tf.train.load_checkpoint (index + data shards).
  * hdf5 files (bilm-tf's weights): every dataset under its slash-separated path, read with h5py.
  * check_weights: a source's {name: array} against {name: shape}, every problem listed in one message.
  * atomic_dir: an output folder that appears only when everything was written (check_distinct_folders first).
"""

import contextlib
import json
import os
import shutil

import numpy as np


class ConversionError(ValueError):
    """A checkpoint does not match the expected layout; the message lists names and shapes."""


_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
# Optimizer state and bookkeeping in TF1 pretraining checkpoints (google-research/bert, bilm-tf).
TF1_IGNORED_SUFFIXES = ("/adam_m", "/adam_v", "/Adam", "/Adam_1", "/Adagrad")
TF1_IGNORED_NAMES = ("global_step", "_CHECKPOINTABLE_OBJECT_GRAPH")


def read_json(path, what, expected_type=dict):
    """A JSON object (or, with expected_type=list, an array) from `path`; ConversionError naming the file when it
    is missing, not JSON or of another type."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path} not found: expected the {what} there.")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e}); expected the {what}.") from e
    if not isinstance(value, expected_type):
        kind = "a JSON object" if expected_type is dict else f"a JSON {expected_type.__name__}"
        raise ConversionError(f"{path} holds a JSON {type(value).__name__}; expected the {what} ({kind}).")
    return value


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


def read_tf1_checkpoint(prefix):
    """{original variable name: float32 array} from a TF checkpoint, optimizer slots and step left out."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        names = [n for n in names if n not in TF1_IGNORED_NAMES and not n.endswith(TF1_IGNORED_SUFFIXES)]
        return {n: np.asarray(reader.get_tensor(n), np.float32) for n in names}
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:  # a short .data file: IndexError
        message = (getattr(e, "message", None) or str(e) or type(e).__name__).strip().splitlines()[0]
        raise ConversionError(f"{prefix}.index / {prefix}.data-*: not a readable TF checkpoint ({message}).") from e


def read_hdf5(path, what):
    """{dataset path ("group/sub/name"): np.ndarray} of every dataset in an hdf5 file; ConversionError naming the
    file when it is missing or not hdf5. `what` says what the file should hold, for the messages."""
    import h5py

    if not os.path.isfile(path):
        raise ConversionError(f"{path} not found: expected the {what} there.")
    arrays = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    except OSError as e:
        raise ConversionError(f"{path} is not a readable hdf5 file ({e}); expected the {what}.") from e
    return arrays


# ---------------------------------------------------------------------------------------------------------
# Checks.

def check_weights(weights, expected, allow_extra=(), what="the model"):
    """Raises ConversionError naming every missing and unexpected variable and every shape mismatch.

    Args:
      weights: {name: array} of a source, under the names of `expected`.
      expected: {name: shape} that the target's config implies.
      allow_extra: names the source may hold beyond `expected` (ignored).
      what: what `expected` describes, for the message (e.g. "the BERT config").
    """
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected) - set(allow_extra))
    bad_shapes = [
        f"{name}: checkpoint {tuple(np.shape(weights[name]))}, model expects {tuple(shape)}"
        for name, shape in expected.items()
        if name in weights and tuple(np.shape(weights[name])) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing variables: {missing}")
    if unexpected:
        problems.append(f"unexpected variables: {unexpected}")
    if bad_shapes:
        problems.append("shape mismatches: " + "; ".join(bad_shapes))
    if problems:
        raise ConversionError(f"The checkpoint does not match {what}. " + " | ".join(problems))


def check_distinct_folders(input_path, output_path):
    """ConversionError when a conversion would write over its own source."""
    if os.path.abspath(input_path) == os.path.abspath(output_path):
        raise ConversionError(f"Input and output are the same folder {input_path}; write the conversion elsewhere.")


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
