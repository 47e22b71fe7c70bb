"""Generic raw-string SavedModel export with an op check against what TF Serving can run. Knows no family.

A family supplies `endpoints` (tf.functions with input signatures over raw strings) and the objects that hold
their variables; this module writes them atomically (a temporary dir renamed into place only after the op
check passes, so a failed export leaves nothing behind).
"""

import os
import shutil

import tensorflow as tf
from absl import logging

from zoo.model_dir import raw_weights

# Every op tensorflow-text 2.21.1 registers, and the subset that the TF Text 2.12.1 inside older TF Serving
# releases also has (../shared/serving_ops.md, found in that wheel's shared libraries).
TF_TEXT_OPS_2_21 = frozenset(
    """CaseFoldUTF8 ConstrainedSequence FastBertNormalize FastWordpieceTokenizeWithOffsets FindSourceOffsets
    MaxSpanningTree NormalizeUTF8 NormalizeUTF8WithOffsetsMap PhraseTokenize RegexSplitWithOffsets RougeL
    SentenceFragments SentenceFragmentsV2 SentencepieceDetokenizeOp SentencepieceIdToStringOp SentencepieceOp
    SentencepieceStringToIdOp SentencepieceTokenizeOp SentencepieceTokenizeWithOffsetsOp SentencepieceVocabSizeOp
    SplitMergeTokenizeWithOffsets TFText>BoiseTagsToOffsets TFText>ByteSplitByOffsets TFText>ByteSplitWithOffsets
    TFText>FastSentencepieceDetokenize TFText>FastSentencepieceTokenize TFText>FastWordpieceDetokenize
    TFText>NgramsStringJoin TFText>OffsetsToBoiseTags TFText>PhraseDetokenize TFText>RoundRobinGenerateMasks
    TFText>RoundRobinTrim TFText>Utf8Binarize TFText>WhitespaceTokenizeWithOffsetsV2 TokenizerFromLogits
    UnicodeScriptTokenizeWithOffsets WhitespaceTokenizeWithOffsets WordpieceTokenizeWithOffsets""".split()
)
TF_TEXT_MISSING_IN_2_12 = frozenset({"RougeL", "TFText>RoundRobinGenerateMasks", "TFText>RoundRobinTrim", "TFText>Utf8Binarize"})
TF_TEXT_OPS_SERVABLE = TF_TEXT_OPS_2_21 - TF_TEXT_MISSING_IN_2_12
# Core ops that call back into Python: a model server has no interpreter.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class ExportError(RuntimeError):
    """The export cannot be written or would not load in TF Serving."""


def export_saved_model(export_dir, endpoints, trackables, assets=None, default_endpoint=None, overwrite=False, allow_xla=False):
    """Writes a SavedModel atomically and checks its ops.

    Args:
      export_dir: destination; must not exist unless `overwrite`.
      endpoints: {signature name: tf.function with an input_signature}.
      trackables: {attribute name: object with variables/resources} kept on the exported root object
        (e.g. {"backbone": backbone, "tokenizer": tokenizer}).
      assets: {file name: source path} copied into `export_dir/assets/` (configs, vocabularies).
      default_endpoint: the endpoint also exported as "serving_default".
      allow_xla: whether functions marked for XLA compilation may be exported (`--jit_compile` exports; TF Serving
        then needs XLA enabled). Without it such a function, e.g. a training-only XLA island that reached an
        inference path, is an ExportError.
    Returns:
      export_dir.
    """
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and not overwrite:
        raise ExportError(f"{export_dir} already exists; pass --overwrite or choose another --export_dir.")
    tmp = f"{export_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    root = tf.Module()
    for name, obj in trackables.items():
        # Keras layers are kept as lists of their raw tf.Variables (see zoo.model_dir.raw_weights).
        setattr(root, name, raw_weights(obj) if hasattr(obj, "weights") and hasattr(obj, "build") else obj)
    signatures = {name: fn.get_concrete_function() for name, fn in endpoints.items()}
    if default_endpoint:
        signatures["serving_default"] = signatures[default_endpoint]
    for name, fn in endpoints.items():
        setattr(root, name, fn)
    try:
        tf.saved_model.save(root, tmp, signatures=signatures)
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        for name, src in (assets or {}).items():
            shutil.copyfile(src, os.path.join(tmp, "assets", name))
        check_serving_ops(tmp)
        compiled = [] if allow_xla else xla_functions(tmp)
        if compiled:
            raise ExportError(f"The export has XLA-compiled functions {compiled} but was not asked for XLA "
                              "(jit_compile): a training-only kernel reached an inference path.")
        if os.path.exists(export_dir):
            shutil.rmtree(export_dir)
        os.replace(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info("Exported %s with signatures %s", export_dir, sorted(signatures))
    return export_dir


def _read_saved_model(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def list_ops(export_dir):
    """Every op type in the SavedModel's graphs and function library: a sorted list of names."""
    proto = _read_saved_model(export_dir)
    ops = set()
    for meta in proto.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    function_names = {fn.signature.name for meta in proto.meta_graphs for fn in meta.graph_def.library.function}
    return sorted(ops - function_names)


def xla_functions(export_dir):
    """Names of the functions in a SavedModel marked for XLA compilation (`tf.function(jit_compile=True)`)."""
    return [fn.signature.name for meta in _read_saved_model(export_dir).meta_graphs for fn in meta.graph_def.library.function
            if fn.attr["_XlaMustCompile"].b]


def disallowed_ops(ops):
    """Ops that an old or new TF Serving cannot run: not TF core, TF Text ops missing from 2.12.1, Python ops."""
    from tensorflow.python.framework import op_def_registry

    import tensorflow_text  # noqa: F401  (registers TF Text's ops so they are known by name)

    bad = []
    for op in ops:
        core = op_def_registry.get(op) is not None and op not in TF_TEXT_OPS_2_21
        if op in PYTHON_OPS or not (core or op in TF_TEXT_OPS_SERVABLE):
            bad.append(op)
    return sorted(bad)


def check_serving_ops(export_dir):
    bad = disallowed_ops(list_ops(export_dir))
    if bad:
        raise ExportError(
            f"The export uses ops that TF Serving (with TF Text 2.12.1) cannot run: {bad}. "
            "Replace them with TF core ops or ops listed in zoo.export.TF_TEXT_OPS_SERVABLE."
        )
