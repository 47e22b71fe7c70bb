"""Generic raw-string SavedModel export with an op check against what TF Serving can run. Knows no family.

A family supplies `endpoints` (tf.functions with input signatures over raw strings) and the objects that hold
their variables; this module writes them atomically (a temporary dir renamed into place only after the op
check passes, so a failed export leaves nothing behind). Families wrap the network part of their endpoints
(features -> outputs) in `network_function`, which decides how an export runs it: XLA, or frozen weights.

Frozen weights (opt-in, `trainers.export --freeze_weights`): the network reads its weights as graph constants,
while the variables stay in the SavedModel for `zoo.model_dir.restore` and feature-based reuse. Why: at inference TensorFlow's oneDNN rewrite turns
each MatMul + bias (+ GELU) into one fused kernel, and that kernel keeps its weights in oneDNN's blocked layout only
when the weight input is a constant (`is_filter_const`); reading a variable it takes the plain weights every call
and runs oneDNN's `inner_product` on its `gemm:jit` path, which leaves the AMX tiles of recent Xeons unused.
Constant weights run `brgemm` on AMX (bf16 [1024, 384] x [384, 1536] + bias + GELU: 2.2 -> 0.9 ms; at 8 rows
0.16 -> 0.08 ms), in TF Serving too, with no server setting (Intel's model zoo sets the process-wide
TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 for the same effect, which would be wrong in a process that also trains).
The costs, why it is not the default: the weights are stored twice (once in the graph, shared by every endpoint,
and once in variables/); TensorFlow's loaders and graph optimisers copy graph constants many times, so the serving
process holds ~20x the frozen bytes more memory (all-MiniLM-L6-v2 in bf16, 47 MB of constants: peak RSS 1.2 -> 2.0
GB under the TF1 session loader TF Serving uses); and a GraphDef must stay under protobuf's 2 GB, so networks with
more than `MAX_FROZEN_BYTES` of weights keep reading variables. A server that only serves can get the weight
cache without these costs by setting TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 in its environment (benchmarks/RESULTS.md).
"""

import os
import shutil

import tensorflow as tf
from absl import logging
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from zoo.layers.islands import whole_step_xla
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
# Frozen weights live in the GraphDef, which protobuf caps at 2 GB (BERT-large in float32, 1.3 GB, still fits).
MAX_FROZEN_BYTES = 1536 * 2**20


def network_function(fn, jit_compile=False, freeze_weights=False):
    """The network part of export endpoints, fn(*tensor structures) -> outputs, as the export runs it.

    jit_compile: one XLA computation per input shape (TF Serving needs --xla_cpu_compilation_enabled=true).
    freeze_weights (without jit_compile): the weights fn reads become graph constants (see the module docstring),
      traced once per input signature, so every endpoint that calls it shares one copy. Skipped, with a log line,
      above MAX_FROZEN_BYTES of weights. Ignored with jit_compile: XLA does not use oneDNN's weight cache (no gain
      measured) and would fold the weights into every program it compiles.
    Call it while tracing an endpoint (tf.function with an input signature).
    """
    if jit_compile:
        def whole_program(*args):  # layers pick their XLA-friendly form (zoo.layers.islands.whole_step_xla)
            with whole_step_xla():
                return fn(*args)

        whole_program.__name__ = fn.__name__
        return tf.function(whole_program, jit_compile=True)
    if not freeze_weights:
        return fn
    traced = tf.function(fn, autograph=False)
    cache = {}

    def call(*args):
        specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), args)
        key = repr(specs)
        if key not in cache:
            with tf.init_scope():  # freezing reads the variables' values: eagerly, outside the endpoint's trace
                concrete = traced.get_concrete_function(*specs)
                size = sum(_num_bytes(v) for v in concrete.variables)
                if size > MAX_FROZEN_BYTES:
                    logging.info("%s reads its %.2f GB of weights as variables (frozen graphs are capped at %.2f GB).",
                                 fn.__name__, size / 2**30, MAX_FROZEN_BYTES / 2**30)
                    cache[key] = None
                else:
                    cache[key] = (concrete.structured_outputs, convert_variables_to_constants_v2(concrete))
        if cache[key] is None:
            return traced(*args)
        structure, constant = cache[key]
        outputs = constant(*tf.nest.flatten(args, expand_composites=True))
        return tf.nest.pack_sequence_as(structure, tf.nest.flatten(outputs, expand_composites=True), expand_composites=True)

    call.__name__ = fn.__name__
    return call


def _num_bytes(variable):
    return variable.shape.num_elements() * variable.dtype.size


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
        if op in PYTHON_OPS or op.startswith("Zoo") or not (core or op in TF_TEXT_OPS_SERVABLE):  # Zoo*: zoo/kernels
            bad.append(op)
    return sorted(bad)


def check_serving_ops(export_dir):
    bad = disallowed_ops(list_ops(export_dir))
    if bad:
        raise ExportError(
            f"The export uses ops that TF Serving (with TF Text 2.12.1) cannot run: {bad}. "
            "Replace them with TF core ops or ops listed in zoo.export.TF_TEXT_OPS_SERVABLE."
        )
