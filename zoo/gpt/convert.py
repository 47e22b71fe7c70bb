"""Bring GPT-1 weights in from HF transformers (`openai-gpt`) and openai/finetune-transformer-lm, take them out to HF.

Every source becomes a `Converted` (config, canonical weights, tokenizer), checked whole before a writer creates
anything; writers fill a temporary folder that is renamed into place (zoo.formats.atomic_dir). See docs/CONVERT.md.

    from zoo.gpt import convert
    convert.from_hf("openai-gpt/", "runs/gpt1")                  # config.json, model.safetensors, vocab.json, merges.txt
    convert.from_openai("finetune-transformer-lm/model/", "runs/gpt1")   # params_shapes.json + params_0..9.npy
    convert.to_hf("runs/gpt1", "exports/gpt1_hf")                # what OpenAIGPTLMHeadModel.from_pretrained loads

(tests/test_gpt_convert.py runs each of these on folders it writes.)

Token rows. HF's `openai-gpt` and the original shards hold 40,478 token rows, one per BPE symbol, and no special
tokens; the zoo tokenizer appends _start_, _delimiter_, _classify_, _pad_ and _end_ (ids 40478-40482) to the
vocabulary it reads. A zoo model has one row per tokenizer id, so the converted table is the source's rows, then
each row the source lacks freshly drawn from N(0, initializer_range) (seeded; the original's train.py draws its
three special rows the same way). Source rows beyond its vocab.json (a model resized for added tokens) become the
zoo's special tokens in the order above, which is GPT-1's own order for the first three; a warning names them.
zoo_config.json records both under `conversion.token_rows`. The HF output keeps every row, and its vocab.json
every token, special ones included, so zoo -> HF -> zoo gives back the same weights bit for bit.

The name table is in zoo.gpt.weight_map; the generic files (safetensors, torch pickles, JSON, atomic folders) in
zoo.formats.
"""

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from zoo import formats
from zoo import model_dir as md
from zoo.formats import ConversionError
from zoo.gpt import weight_map as wm
from zoo.gpt.backbone import GPTBackbone
from zoo.gpt.causal_lm import GPTCausalLM
from zoo.gpt.config import GPTConfig
from zoo.text import bpe

# HF config.json keys -> GPTConfig fields (the sizes are required; HF's OpenAIGPT fixes the feed-forward at 4H).
HF_JSON_KEYS = {
    "vocab_size": "vocabulary_size",
    "n_layer": "num_layers",
    "n_head": "num_heads",
    "n_embd": "hidden_dim",
    "n_positions": "max_sequence_length",
    "resid_pdrop": "dropout",
    "layer_norm_epsilon": "layer_norm_epsilon",
    "initializer_range": "initializer_range",
}
_REQUIRED = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
# The original's hyperparameters that its files do not record (train.py's argparse defaults).
ORIGINAL_NUM_HEADS = 12
ORIGINAL_SHARDS = "params_{}.npy"
ORIGINAL_BPE_FILES = ("encoder_bpe_40000.json", "vocab_40000.bpe")
HF_BPE_FILES = (bpe.BytePairTokenizer.VOCAB_FILE, bpe.BytePairTokenizer.MERGES_FILE)
_HF_BUFFER = re.compile(r"(h\.\d+\.attn\.(bias|masked_bias)|position_ids)$")  # causal-mask and position buffers


@dataclasses.dataclass
class Converted:
    """A GPT in canonical form: its zoo config (one token row per tokenizer id), canonical weights, tokenizer,
    the preprocessor's length and where it came from (`source`, recorded as zoo_config.json `conversion`)."""

    config: GPTConfig
    weights: dict
    tokenizer: bpe.BytePairTokenizer
    sequence_length: int
    source: dict


# ---------------------------------------------------------------------------------------------------------
# Pieces every reader shares.

def _tokenizer(vocab_path, merges_path, lowercase):
    """(BytePairTokenizer, entries in the vocabulary file) from a {token: id} JSON and a merges file."""
    for path, what in ((vocab_path, "BPE vocabulary (a {token: id} JSON)"),
                       (merges_path, "BPE merges ('#version: 0.2', then 'left right' per line)")):
        if not os.path.isfile(path):
            raise ConversionError(f"{path} not found: expected the {what} there.")
    try:
        vocabulary = bpe.read_vocabulary(vocab_path)
        merges = bpe.read_merges(merges_path)
    except ValueError as e:
        raise ConversionError(str(e)) from e
    try:
        tokenizer = bpe.BytePairTokenizer(vocabulary, merges, lowercase=True if lowercase is None else bool(lowercase))
    except ValueError as e:
        raise ConversionError(f"{vocab_path}: {e}") from e
    return tokenizer, len(vocabulary)


def _with_token_rows(config, weights, tokenizer, vocabulary_entries, where, seed=0):
    """Widens the token table to one row per tokenizer id: [R, H] -> [V, H] (see the module docstring).

    Returns (config with vocabulary_size V, weights, the `conversion.token_rows` record).
    """
    rows, size = weights[wm.TOKENS].shape[0], tokenizer.vocabulary_size
    if rows < vocabulary_entries:
        raise ConversionError(f"{where}: {wm.TOKENS} has {rows} rows but the vocabulary names {vocabulary_entries} "
                              "tokens: the vocabulary and the weights do not belong together.")
    if rows > size:
        raise ConversionError(f"{where}: {wm.TOKENS} has {rows} rows, more than the vocabulary's {vocabulary_entries} "
                              f"tokens and the zoo's {len(bpe.SPECIAL_TOKENS)} special tokens ({size}).")
    from_source = {tokenizer.id_to_token(i): i for i in range(vocabulary_entries, rows)}
    if from_source:
        logging.warning("%s: token rows %d..%d have no entry in the vocabulary; they become the special tokens %s.",
                        where, vocabulary_entries, rows - 1, from_source)
    initialised = {tokenizer.id_to_token(i): i for i in range(rows, size)}
    fresh = np.random.RandomState(seed).normal(0.0, config.initializer_range, (size - rows, config.hidden_dim))
    weights = dict(weights)
    weights[wm.TOKENS] = np.concatenate([weights[wm.TOKENS], fresh.astype(np.float32)])
    record = {"from_source": rows, "special_from_source": from_source, "initialised": initialised,
              "initialised_from": f"N(0, {config.initializer_range}), seed {seed}"}
    return config.replace(vocabulary_size=size), weights, record


def _sequence_length(length, config):
    """The zoo preprocessor's length: default the whole context, at most the context, at least 2."""
    length = config.max_sequence_length if length is None else int(length)
    if length < 2:
        raise ConversionError(f"sequence_length={length} is too short: at least 2 (the end-of-text separator and a token).")
    return min(length, config.max_sequence_length)


def _checked_config(config, where):
    if min(config.vocabulary_size, config.num_layers, config.num_heads, config.hidden_dim, config.max_sequence_length) < 1:
        raise ConversionError(f"{where}: sizes must be positive, got {config}.")
    if config.hidden_dim % config.num_heads:
        raise ConversionError(f"{where}: the hidden size {config.hidden_dim} is not divisible by {config.num_heads} heads.")
    return config


def _no_heads_option(num_heads, source):
    if num_heads is not None:
        raise ConversionError(f"num_heads is for the original layout only: a {source} source's config names its heads.")


# ---------------------------------------------------------------------------------------------------------
# Readers.

def config_from_hf(values, path):
    """GPTConfig (vocabulary_size = the checkpoint's token rows) from an HF openai-gpt config.json dict."""
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        raise ConversionError(f"{path} lacks {missing}; expected an openai-gpt config with keys {list(_REQUIRED)}.")
    if values.get("model_type", "openai-gpt") != "openai-gpt":
        raise ConversionError(f"{path} describes model_type={values['model_type']!r}; only OpenAI GPT ('openai-gpt') "
                              "converts here (GPT-2 is another architecture: pre-LN with a final LayerNorm).")
    if values.get("afn", "gelu") != "gelu":  # HF's OpenAIGPT "gelu" is the tanh approximation, GPT-1's
        raise ConversionError(f"{path}: afn={values['afn']!r} is not supported; zoo GPT implements afn='gelu' "
                              "(the tanh-approximated GELU) only.")
    defaults = GPTConfig().to_dict()
    try:  # each value cast to the type of the field's default (int sizes, float rates)
        args = {ours: type(defaults[ours])(values[theirs]) for theirs, ours in HF_JSON_KEYS.items() if theirs in values}
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{path}: a size or rate is not a number ({e}).") from e
    return _checked_config(GPTConfig(**{**args, "intermediate_dim": 4 * args["hidden_dim"]}), path)


def normalize_hf(tensors, where):
    """An HF state dict under canonical names: the 'transformer.' prefix dropped, buffers dropped, and the tied
    lm_head.weight (which must equal the token embeddings) folded in."""
    out = {}
    for name, value in tensors.items():
        key = name.removeprefix("transformer.")
        if _HF_BUFFER.fullmatch(key):
            continue
        if key in out:
            raise ConversionError(f"{where}: {key} appears twice (with and without the 'transformer.' prefix).")
        out[key] = value
    head = out.pop("lm_head.weight", None)
    if head is not None and wm.TOKENS in out and not np.array_equal(head, out[wm.TOKENS]):
        raise ConversionError(f"{where}: lm_head.weight differs from tokens_embed.weight; zoo GPT ties its LM head to "
                              "the token embeddings (as GPT-1 does), so an untied head cannot be converted.")
    return out


def read_hf(path, sequence_length=None, lowercase=None, num_heads=None):
    """An HF transformers openai-gpt folder: config.json, model.safetensors or pytorch_model.bin, vocab.json,
    merges.txt."""
    _no_heads_option(num_heads, "hf")
    if not os.path.isdir(path):
        raise ConversionError(f"{path} is not a folder; expected an HF openai-gpt folder with config.json, "
                              "model.safetensors or pytorch_model.bin, vocab.json, merges.txt.")
    config_path = os.path.join(path, "config.json")
    config = config_from_hf(formats.read_json(config_path, "HF openai-gpt config"), config_path)
    tokenizer, entries = _tokenizer(*(os.path.join(path, f) for f in HF_BPE_FILES), lowercase)
    tensors, files = formats.read_hf_weights(path)
    where = ", ".join(files)
    weights = normalize_hf(tensors, where)
    try:
        formats.check_weights(weights, wm.expected_shapes(config), what=wm.CONFIG_WHAT)
    except ConversionError as e:
        raise ConversionError(f"{where}: {e}") from None
    weights = {name: np.asarray(weights[name], np.float32) for name in wm.canonical_names(config.num_layers)}
    config, weights, rows = _with_token_rows(config, weights, tokenizer, entries, where)
    source = {"format": "hf", "path": os.path.abspath(path), "token_rows": rows}
    return Converted(config, weights, tokenizer, _sequence_length(sequence_length, config), source)


def _read_shards(folder, count):
    """The original's params_0..N-1.npy concatenated: float32 [sum of sizes]."""
    present = sorted(int(m.group(1)) for m in (re.fullmatch(r"params_(\d+)\.npy", f) for f in os.listdir(folder)) if m)
    if not present:
        raise ConversionError(f"{folder} holds no {ORIGINAL_SHARDS.format(0)}: expected params_shapes.json and "
                              f"params_0..9.npy (openai/finetune-transformer-lm's model/ folder), found {sorted(os.listdir(folder))}.")
    gaps = [ORIGINAL_SHARDS.format(i) for i in range(present[-1] + 1) if i not in present]
    if gaps:
        raise ConversionError(f"{folder}: {gaps} missing; the weights are the concatenation of params_0..{present[-1]}.npy in order.")
    shards = []
    for i in present:
        path = os.path.join(folder, ORIGINAL_SHARDS.format(i))
        try:
            shards.append(np.load(path, allow_pickle=False).ravel())
        except (ValueError, OSError, EOFError) as e:
            raise ConversionError(f"{path} is not a readable numpy .npy file or is truncated ({e}).") from e
    total = sum(s.size for s in shards)
    if total != count:
        raise ConversionError(f"{folder}: params_0..{present[-1]}.npy hold {total} values but params_shapes.json describes "
                              f"{count}: a shard is missing or truncated, or the files come from different models.")
    return np.concatenate(shards).astype(np.float32, copy=False)


def read_openai(path, sequence_length=None, lowercase=None, num_heads=None):
    """openai/finetune-transformer-lm's model/ folder: params_shapes.json, params_0..9.npy, encoder_bpe_40000.json,
    vocab_40000.bpe (or vocab.json + merges.txt).

    The shards are the flat concatenation of every array (train.py: np.split at the cumulative sizes): positions
    [P, H], tokens [V, H], then per block the 12 arrays of `weight_map.LAYER_PARTS`, projections as [1, in, out].
    The files do not record the head count: `num_heads` (default 12, train.py's). Dropout, LayerNorm epsilon and
    initializer range are train.py's (0.1, 1e-5, 0.02).
    """
    if not os.path.isdir(path):
        raise ConversionError(f"{path} is not a folder; expected finetune-transformer-lm's model/ folder "
                              "(params_shapes.json, params_0..9.npy, encoder_bpe_40000.json, vocab_40000.bpe).")
    shapes_path = os.path.join(path, "params_shapes.json")
    shapes = formats.read_json(shapes_path, "shapes of the arrays in params_0..9.npy", expected_type=list)
    if not all(isinstance(s, list) and all(isinstance(d, int) and d > 0 for d in s) for s in shapes):
        raise ConversionError(f"{shapes_path}: every entry must be a list of positive sizes.")
    per_layer = len(wm.LAYER_PARTS)
    if len(shapes) < 2 + per_layer or (len(shapes) - 2) % per_layer or len(shapes[0]) != 2 or len(shapes[1]) != 2 \
            or len(shapes[8]) != 3:
        raise ConversionError(f"{shapes_path} lists {len(shapes)} arrays; expected positions [P, H], tokens [V, H], then "
                              f"{per_layer} arrays per block ({', '.join(o for _, o in wm.LAYER_PARTS)}).")
    (positions, hidden), vocabulary = shapes[0], shapes[1][0]
    config = _checked_config(GPTConfig(
        vocabulary_size=vocabulary, num_layers=(len(shapes) - 2) // per_layer, hidden_dim=hidden,
        num_heads=ORIGINAL_NUM_HEADS if num_heads is None else int(num_heads), intermediate_dim=shapes[8][2],
        max_sequence_length=positions), shapes_path)
    names, expected = wm.canonical_names(config.num_layers), wm.expected_shapes(config)
    # Every listed shape checked before the shards are read, under the original's names and its 3-D kernels, so a
    # message points at the entry of params_shapes.json (zero-size stand-ins: only their shapes are looked at).
    given = {wm.original_name(n): np.broadcast_to(np.int8(0), s) for n, s in zip(names, shapes)}
    want = {wm.original_name(n): ((1, *s) if wm.is_conv_kernel(n) else s) for n, s in expected.items()}
    try:
        formats.check_weights(given, want, what=wm.CONFIG_WHAT)
    except ConversionError as e:
        raise ConversionError(f"{shapes_path}: {e}") from None
    sizes = [int(np.prod(s)) for s in shapes]
    arrays = np.split(_read_shards(path, sum(sizes)), np.cumsum(sizes)[:-1])  # train.py's split of the concatenation
    weights = {n: a.reshape(expected[n]) for n, a in zip(names, arrays)}  # conv kernels [1, in, out] -> [in, out]
    bpe_files = ORIGINAL_BPE_FILES if os.path.exists(os.path.join(path, ORIGINAL_BPE_FILES[0])) else HF_BPE_FILES
    tokenizer, entries = _tokenizer(*(os.path.join(path, f) for f in bpe_files), lowercase)
    config, weights, rows = _with_token_rows(config, weights, tokenizer, entries, shapes_path)
    source = {"format": "openai", "path": os.path.abspath(path), "num_heads": config.num_heads, "token_rows": rows}
    return Converted(config, weights, tokenizer, _sequence_length(sequence_length, config), source)


def read_zoo(path, sequence_length=None, lowercase=None, num_heads=None):
    """A zoo GPT model dir (pretrained or fine-tuned: its backbone) or a zoo SavedModel export."""
    _no_heads_option(num_heads, "zoo")
    try:
        values = md.read_config(path)
    except (ValueError, OSError) as e:  # ModelDirError is a ValueError
        raise ConversionError(str(e)) from e
    if values.get("family") != "gpt":
        raise ConversionError(f"{path} holds a {values.get('family')!r} model, not GPT.")
    try:
        config = GPTConfig.from_dict(values["backbone"])
        backbone = GPTBackbone(**config.to_dict())
        backbone.build()
        md.restore_backbone(backbone, path)
        tokenizer = bpe.BytePairTokenizer.load(md.config_dir(path), values["tokenizer"])
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise ConversionError(f"{path}: not a readable zoo GPT model dir or export ({type(e).__name__}: {e}).") from e
    if lowercase is not None and bool(lowercase) != tokenizer.lowercase:
        tokenizer = bpe.BytePairTokenizer({t: i for i, t in enumerate(tokenizer.vocabulary)}, tokenizer.merges,
                                          lowercase=bool(lowercase), max_chars_per_word=tokenizer.max_chars_per_word)
    if "task" in values:
        logging.warning("%s is a fine-tuned task model: only its backbone is converted, not the task head.", path)
    length = _sequence_length(sequence_length or values["preprocessor"]["sequence_length"], config)
    return Converted(config, wm.from_backbone(backbone), tokenizer, length, {"format": "zoo", "path": os.path.abspath(path)})


# ---------------------------------------------------------------------------------------------------------
# Writers.

def write_zoo(converted, model_dir, overwrite=False):
    """A zoo model dir: zoo_config.json (with `conversion`), vocab.json + merges.txt, tf.train.Checkpoint(model=
    GPTCausalLM), as trainers.pretrain writes it."""
    backbone = GPTBackbone(**converted.config.to_dict())
    backbone.build()
    wm.assign(converted.weights, backbone)
    model = GPTCausalLM(backbone)
    model.build()
    with formats.atomic_dir(model_dir, overwrite) as tmp:
        md.write_model_dir(tmp, "gpt", converted.config, converted.tokenizer, converted.sequence_length,
                           conversion=converted.source)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), tmp, max_to_keep=1).save()
    return model_dir


def hf_config_json(config):
    """The config.json dict of transformers' OpenAIGPTLMHeadModel for a GPTConfig."""
    if config.intermediate_dim != 4 * config.hidden_dim or config.activation != "gelu_tanh":
        raise ConversionError(f"HF's OpenAIGPT fixes the feed-forward width at 4 x hidden and the tanh GELU; this model has "
                              f"intermediate_dim={config.intermediate_dim}, hidden_dim={config.hidden_dim}, "
                              f"activation={config.activation!r}, so it has no HF form.")
    values = {theirs: getattr(config, ours) for theirs, ours in HF_JSON_KEYS.items()}
    values.update(architectures=["OpenAIGPTLMHeadModel"], model_type="openai-gpt", afn="gelu",
                  embd_pdrop=config.dropout, attn_pdrop=config.dropout, tie_word_embeddings=True)
    return values


def write_hf(converted, out_dir, overwrite=False):
    """An HF folder: config.json, model.safetensors (OpenAIGPTLMHeadModel: 'transformer.'-prefixed, the tied
    lm_head left to transformers), vocab.json + merges.txt (every token, special ones included) and
    tokenizer_config.json (OpenAIGPTTokenizer)."""
    config, tokenizer = converted.config, converted.tokenizer
    files = {"config.json": hf_config_json(config),
             "tokenizer_config.json": {"tokenizer_class": "OpenAIGPTTokenizer", "unk_token": bpe.UNKNOWN_TOKEN,
                                       "model_max_length": config.max_sequence_length}}
    if not tokenizer.lowercase:
        logging.warning("The tokenizer does not lower-case, but HF's OpenAIGPTTokenizer always does: HF users of %s "
                        "get lower-cased ids.", out_dir)
    with formats.atomic_dir(out_dir, overwrite) as tmp:
        formats.write_safetensors({f"transformer.{k}": v for k, v in converted.weights.items()},
                                  os.path.join(tmp, "model.safetensors"))
        tokenizer.save(tmp)
        for name, value in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(value, f, indent=2, sort_keys=True)
    return out_dir


READERS = {"hf": read_hf, "openai": read_openai, "zoo": read_zoo}
WRITERS = {"zoo": write_zoo, "hf": write_hf}


# ---------------------------------------------------------------------------------------------------------
# The API.

def convert(source_format, target_format, input_path, output_path, lowercase=None, sequence_length=None,
            overwrite=False, num_heads=None):
    """Converts a GPT between formats; writes `output_path` only if everything succeeds.

    Args:
      source_format: "hf" (transformers openai-gpt folder), "openai" (finetune-transformer-lm's model/ folder) or
        "zoo" (model dir or export).
      target_format: "zoo" or "hf".
      lowercase: None: lower-case (GPT-1's and HF's tokenizer always do) or, for a zoo source, as it was saved.
      sequence_length: the zoo preprocessor's length (default: the context for hf/openai, the source's for zoo).
      overwrite: replace an existing output folder.
      num_heads: the original layout's head count (default 12); its files do not record it.

    Returns:
      the `Converted` that was written.

    Raises:
      ConversionError: a bad/missing/truncated file, missing or unexpected weights, shape mismatches.
    """
    if source_format not in READERS or target_format not in WRITERS:
        raise ConversionError(f"Cannot convert {source_format!r} -> {target_format!r}: sources {sorted(READERS)}, "
                              f"targets {sorted(WRITERS)}.")
    formats.check_distinct_folders(input_path, output_path)
    converted = READERS[source_format](input_path, sequence_length=sequence_length, lowercase=lowercase,
                                       num_heads=num_heads)
    WRITERS[target_format](converted, output_path, overwrite=overwrite)
    c = converted.config
    initialised = converted.source.get("token_rows", {}).get("initialised", {})
    logging.info("Converted %s (%s: L=%d H=%d N=%d V=%d, context %d; %d token rows initialised: %s) -> %s (%s)",
                 input_path, source_format, c.num_layers, c.hidden_dim, c.num_heads, c.vocabulary_size,
                 c.max_sequence_length, len(initialised), ", ".join(initialised) or "none", output_path, target_format)
    return converted


def from_hf(path, model_dir, lowercase=None, sequence_length=None, overwrite=False):
    """HF transformers openai-gpt folder -> zoo model dir (see `convert`)."""
    return convert("hf", "zoo", path, model_dir, lowercase, sequence_length, overwrite)


def from_openai(path, model_dir, lowercase=None, sequence_length=None, overwrite=False, num_heads=None):
    """openai/finetune-transformer-lm model/ folder -> zoo model dir (see `convert`)."""
    return convert("openai", "zoo", path, model_dir, lowercase, sequence_length, overwrite, num_heads)


def to_hf(model_dir, out_dir, overwrite=False):
    """zoo model dir or export -> HF folder that OpenAIGPTLMHeadModel / OpenAIGPTTokenizer load (see `convert`)."""
    return convert("zoo", "hf", model_dir, out_dir, overwrite=overwrite)
