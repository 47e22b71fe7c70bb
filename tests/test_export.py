"""Raw-string SavedModel export: fresh-process parity, saved_model_cli, op allow-list, edge inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import harness
from zoo import export as export_lib
from zoo.bert import BertClassifier, BertConfig, load_pretrained, pretrainer, write_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS, PAIRS = harness.TEXTS, harness.PAIRS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, real_vocabulary):
    """A zoo model dir with random (seeded) weights and a real vocabulary, as trainers.pretrain writes it."""
    import keras

    keras.utils.set_random_seed(3)
    path = str(tmp_path_factory.mktemp("bert_model"))
    config = BertConfig(vocabulary_size=len(real_vocabulary), num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=64)
    model = pretrainer(config)
    write_model_dir(path, config, real_vocabulary, lowercase=True, sequence_length=32)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), path, max_to_keep=1).save()
    return path


def _keras_reference(model_dir):
    """reference(signature, batches) for harness.check_export: the Keras model of `model_dir` (a pretrained
    backbone, or a fine-tuned classifier) on the same strings, under BERT's serving output names."""
    import zoo
    from zoo import model_dir as md

    if "task" in md.read_config(model_dir):
        classifier = zoo.load_task(model_dir, trim=True)
        backbone, pre = classifier.backbone, classifier.preprocessor
    else:
        classifier = None
        backbone, pre = load_pretrained(model_dir, trim=True)

    def reference(signature, batches):
        features = pre(*[tf.constant(b) for b in batches])
        if classifier is not None and not signature.startswith("encode"):  # classify*, serving_default
            logits = classifier(features)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}
        out = backbone(features)
        result = {"pooled_output": out["pooled_output"], "sequence_output": out["sequence_output"],
                  "sequence_mask": tf.cast(features["padding_mask"], tf.int32), "embedding_output": out["embedding_output"]}
        result.update({f"encoder_layer_{i}": layer for i, layer in enumerate(out["encoder_outputs"])})
        return result

    return reference


@pytest.fixture(scope="module")
def export_check(model_dir, tmp_path_factory):
    """The float32 export of `model_dir` through harness.check_export: fresh-process parity with Keras (<= 1e-5,
    every output), the op allow-list, hostile inputs."""
    out = str(tmp_path_factory.mktemp("export") / "bert")
    return harness.check_export(model_dir, out, reference=_keras_reference(model_dir), texts=TEXTS, pairs=PAIRS,
                                expect_ops=("FastWordpieceTokenizeWithOffsets",))  # the check really sees TF Text ops


@pytest.fixture(scope="module")
def exported(export_check):
    return export_check["export_dir"]


def test_float32_export_passes_the_harness(export_check):
    got = export_check["outputs"]
    assert set(got) == {"encode", "encode_pairs", "serving_default"} and "encoder_layer_1" in got["encode"]
    # Over-long text is truncated to the model's 32 tokens; the empty string is [CLS] [SEP].
    assert got["encode"]["sequence_output"].shape[1] == 32
    assert got["encode"]["sequence_mask"][1].sum() == 2
    assert np.all(np.isfinite(got["encode"]["pooled_output"]))
    assert not set(export_check["ops"]) & export_lib.TF_TEXT_MISSING_IN_2_12


# saved_model_cli itself, with TF Text's ops registered first (as TF Serving links them into its binary).
SAVED_MODEL_CLI = "import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli; sys.argv[0] = 'saved_model_cli'; saved_model_cli.main()"


def test_saved_model_cli_runs(exported):
    result = subprocess.run(
        [sys.executable, "-c", SAVED_MODEL_CLI, "run", "--dir", exported, "--tag_set", "serve", "--signature_def", "serving_default", "--input_exprs", 'text=["hello world", ""]'],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pooled_output" in result.stdout


def test_op_check_rejects_python_and_new_tf_text_ops(tmp_path):
    import tensorflow_text as tf_text

    module = tf.Module()
    module.f = tf.function(lambda x: tf.py_function(lambda y: y, [x], tf.float32), input_signature=[tf.TensorSpec([None], tf.float32)])
    trimmer = tf_text.RoundRobinTrimmer(max_seq_length=4)
    module.g = tf.function(lambda x: trimmer.trim([tf.RaggedTensor.from_tensor(x)])[0].flat_values, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    path = str(tmp_path / "bad")
    tf.saved_model.save(module, path)
    bad = export_lib.disallowed_ops(export_lib.list_ops(path))
    assert "EagerPyFunc" in bad and "TFText>RoundRobinTrim" in bad
    with pytest.raises(export_lib.ExportError, match="TF Serving"):
        export_lib.check_serving_ops(path)


def test_failed_export_leaves_nothing(model_dir, tmp_path):
    backbone, pre = load_pretrained(model_dir, trim=True)
    bad = tf.function(lambda text: {"x": tf.py_function(lambda t: tf.strings.length(t), [text], tf.int32)}, input_signature=[tf.TensorSpec([None], tf.string)])
    out = str(tmp_path / "never")
    with pytest.raises(export_lib.ExportError):
        export_lib.export_saved_model(out, {"bad": bad}, {"backbone": backbone})
    assert os.listdir(str(tmp_path)) == []


def test_xla_function_in_a_plain_export_is_an_error_and_leaves_nothing(model_dir, tmp_path, monkeypatch):
    # A training-only XLA island (zoo.layers.islands) reaching an inference path must not ship silently.
    from zoo.layers.activations import gelu_for_training

    monkeypatch.setenv("ZOO_KERNELS", "xla")  # the island, not the native kernel (next test)
    leaky = tf.function(lambda x: {"y": gelu_for_training(x)}, input_signature=[tf.TensorSpec([None], tf.float32)])
    backbone, _ = load_pretrained(model_dir)
    out = str(tmp_path / "never")
    with pytest.raises(export_lib.ExportError, match="XLA"):
        export_lib.export_saved_model(out, {"leaky": leaky}, {"backbone": backbone})
    assert os.listdir(str(tmp_path)) == []
    export_lib.export_saved_model(out, {"leaky": leaky}, {"backbone": backbone}, allow_xla=True)  # asked for: fine
    assert export_lib.xla_functions(out)


def test_native_training_kernel_in_an_export_is_an_error_and_leaves_nothing(model_dir, tmp_path, monkeypatch):
    import shutil

    from zoo.layers import native
    from zoo.layers.activations import gelu_for_training

    monkeypatch.setenv("ZOO_KERNELS", "native")
    if shutil.which("g++") is None or native.layer_ops(tf.float32) is None:
        pytest.skip("the native kernels do not apply here (no g++ or an accelerator)")
    leaky = tf.function(lambda x: {"y": gelu_for_training(x)}, input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    backbone, _ = load_pretrained(model_dir)
    with pytest.raises(export_lib.ExportError, match="ZooBiasGelu"):
        export_lib.export_saved_model(str(tmp_path / "never"), {"leaky": leaky}, {"backbone": backbone}, allow_xla=True)
    assert os.listdir(str(tmp_path)) == []


def _finetuned_model_dir(model_dir, ft_dir, num_classes):
    """A classifier model dir (as trainers.finetune writes it) on top of `model_dir`'s backbone; returns the model."""
    from zoo.text.wordpiece import load_vocabulary

    classifier = BertClassifier.from_model_dir(model_dir, num_classes=num_classes)
    config = json.load(open(os.path.join(model_dir, "zoo_config.json")))
    write_model_dir(ft_dir, BertConfig.from_dict(config["backbone"]), load_vocabulary(os.path.join(model_dir, "vocab.txt")),
                    sequence_length=32, task={"num_classes": num_classes, "dropout": 0.1})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=classifier), ft_dir, max_to_keep=1).save()
    return classifier


def _assert_empty_batch(result, num_classes, hidden=32):
    # TF Serving may send a batch of zero strings: every endpoint answers with [0, ...] outputs of the usual rank
    # and dtype, not an error (harness.check_export served it in a fresh process).
    shapes = result["hostile"]["zero_batch"]
    assert set(shapes) == {"encode", "encode_pairs", "classify", "classify_pairs", "serving_default"}
    for signature, values in shapes.items():
        for key, value in values.items():
            name, shape, dtype = f"{signature}/{key}", list(value.shape), value.dtype.name
            assert shape[0] == 0, (name, shape)
            if key in ("probabilities", "logits"):
                assert shape == [0, num_classes] and dtype == "float32", (name, shape, dtype)
            elif key == "pooled_output":
                assert shape == [0, hidden] and dtype == "float32"
            elif key == "sequence_mask":
                assert len(shape) == 2 and dtype == "int32"
            else:
                assert len(shape) == 3 and shape[2] == hidden and dtype == "float32", (name, shape, dtype)


def test_finetuned_export_gives_probabilities(model_dir, tmp_path):
    # harness.check_export: every endpoint (encode, classify and their pairs) matches the Keras classifier in a
    # fresh process to 1e-5, the op allow-list holds, hostile inputs (a batch of zero strings too) are answered.
    ft_dir = str(tmp_path / "ft")
    _finetuned_model_dir(model_dir, ft_dir, num_classes=3)
    result = harness.check_export(ft_dir, str(tmp_path / "ft_export"), reference=_keras_reference(ft_dir))
    probs = result["outputs"]["classify"]["probabilities"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert probs.shape == (len(TEXTS), 3)
    assert result["outputs"]["classify_pairs"]["probabilities"].shape == (3, 3)
    loaded = tf.saved_model.load(result["export_dir"])
    assert loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"].shape == (len(TEXTS), 3)
    _assert_empty_batch(result, num_classes=3)


def _stored_dtypes(export_dir):
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    return {name: dtype for name, dtype in reader.get_variable_to_dtype_map().items() if "VARIABLE_VALUE" in name}


def _stored_values(export_dir, part):
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    names = sorted((n for n in reader.get_variable_to_dtype_map() if n.startswith(f"{part}/") and "VARIABLE_VALUE" in n),
                   key=lambda n: int(n.split("/")[1]))
    return [reader.get_tensor(n) for n in names]


def _assert_cast_exactly(bf16_export, f32_export, part):
    """Every stored bf16 weight of `part` is the float32 export's same weight rounded to bf16 (none swapped)."""
    fast, exact = _stored_values(bf16_export, part), _stored_values(f32_export, part)
    assert len(fast) == len(exact) > 0
    for got, want in zip(fast, exact):
        np.testing.assert_array_equal(tf.cast(got, tf.float32), tf.cast(tf.cast(want, tf.bfloat16), tf.float32))


def test_bfloat16_export_stays_close_to_float32(exported, model_dir, tmp_path):
    # trainers.export --precision=bfloat16: weights stored in bf16, bf16 matmuls, float32 outputs, TF Serving ops
    # only; the global Keras policy is restored afterwards.
    import keras

    from trainers.common import export_model_dir

    out = export_model_dir(model_dir, str(tmp_path / "bf16"), precision="bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"
    ops = export_lib.list_ops(out)
    assert export_lib.disallowed_ops(ops) == [] and "Cast" in ops
    assert set(_stored_dtypes(out).values()) == {tf.bfloat16}  # every weight is stored in bf16
    assert set(_stored_dtypes(exported).values()) == {tf.float32}
    _assert_cast_exactly(out, exported, "backbone")
    config = json.load(open(os.path.join(out, "assets", "zoo_config.json")))
    assert config["export"] == {"precision": "bfloat16", "jit_compile": False, "freeze_weights": False}
    texts = tf.constant(TEXTS)
    exact = tf.saved_model.load(exported).signatures["encode"](text=texts)
    fast = tf.saved_model.load(out).signatures["encode"](text=texts)
    assert set(fast) == set(exact)
    for name in exact:
        assert fast[name].dtype == exact[name].dtype, name
        if name == "sequence_mask":
            np.testing.assert_array_equal(fast[name], exact[name])
            continue
        diff = np.abs(fast[name].numpy() - exact[name].numpy()).max()
        scale = np.abs(exact[name].numpy()).max()
        assert 0 < diff <= 0.05 * max(scale, 1.0), (name, diff, scale)  # > 0: it really computed in bf16
    # A bf16 export is also a model source: read back into float32 layers (as fine-tuning from an export does).
    backbone, _ = load_pretrained(out)
    reference, _ = load_pretrained(model_dir)
    for got, want in zip(backbone.weights, reference.weights):
        np.testing.assert_array_equal(got.numpy(), tf.cast(tf.cast(want, tf.bfloat16), tf.float32).numpy())


def test_float32_export_ignores_the_callers_mixed_policy(exported, model_dir, tmp_path):
    import keras

    from trainers.common import export_model_dir

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = export_model_dir(model_dir, str(tmp_path / "f32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    texts = tf.constant(TEXTS)
    want = tf.saved_model.load(exported).signatures["encode"](text=texts)["sequence_output"].numpy()
    got = tf.saved_model.load(out).signatures["encode"](text=texts)["sequence_output"].numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_jit_compile_export_matches_float32_in_a_fresh_process(exported, model_dir, tmp_path):
    # trainers.export --jit_compile: the network is one XLA function, lengths padded to a multiple of 8; the
    # outputs are the float32 Keras model's (XLA reorders float sums only), with the padding masked out; served
    # in a fresh process by harness.check_export (op allow-list, hostile inputs, a batch of zero strings too).
    from trainers.common import XLA_LENGTH_MULTIPLE

    ft_dir = str(tmp_path / "ft")
    _finetuned_model_dir(model_dir, ft_dir, num_classes=3)
    texts = ["The movie was great!", "short", ""]
    pairs = [["Is it good?", "film " * 40], ["Yes.", "x"]]  # the second pair fills T = 32 (a clamp at a T that is
    # not a multiple of 8 is tested on BertPreprocessor itself)

    def compare(signature, got, want):
        assert set(got) == set(want), (signature, sorted(got), sorted(want))
        if "sequence_mask" not in want:  # classify: [B, K]
            for name in want:
                np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=f"{signature}/{name}")
            return
        length = want["sequence_mask"].shape[1]
        bucket = min(-(-length // XLA_LENGTH_MULTIPLE) * XLA_LENGTH_MULTIPLE, 32)
        assert got["sequence_mask"].shape[1] == bucket
        np.testing.assert_array_equal(got["sequence_mask"][:, :length], want["sequence_mask"])
        assert got["sequence_mask"][:, length:].sum() == 0
        for name, value in want.items():
            if name != "sequence_mask":
                have = got[name]
                np.testing.assert_allclose(have if value.ndim == 2 else have[:, :length], value, atol=1e-5, err_msg=f"{signature}/{name}")

    result = harness.check_export(ft_dir, str(tmp_path / "xla"), reference=_keras_reference(ft_dir), texts=texts, pairs=pairs,
                                  compare=compare, jit_compile=True)
    assert export_lib.xla_functions(result["export_dir"]) and not export_lib.xla_functions(exported)
    got = result["outputs"]
    assert got["encode"]["sequence_mask"].shape[1] == XLA_LENGTH_MULTIPLE  # 7 tokens -> 8
    assert got["encode_pairs"]["sequence_mask"].shape[1] == 32  # full length stays 32
    _assert_empty_batch(result, num_classes=3)


def test_bfloat16_jit_compiled_classifier_export(model_dir, tmp_path):
    # Both options on a fine-tuned model: the head's weights are cast too, probabilities stay close to float32.
    from trainers.common import export_model_dir

    ft_dir = str(tmp_path / "ft")
    _finetuned_model_dir(model_dir, ft_dir, num_classes=2)
    exact = export_model_dir(ft_dir, str(tmp_path / "f32"))
    fast = export_model_dir(ft_dir, str(tmp_path / "bf16_xla"), precision="bfloat16", jit_compile=True)
    assert export_lib.xla_functions(fast) and set(_stored_dtypes(fast).values()) == {tf.bfloat16}
    _assert_cast_exactly(fast, exact, "backbone")
    _assert_cast_exactly(fast, exact, "head")
    texts = tf.constant(TEXTS)
    want = tf.saved_model.load(exact).signatures["serving_default"](text=texts)["probabilities"].numpy()
    got = tf.saved_model.load(fast).signatures["serving_default"](text=texts)["probabilities"].numpy()
    assert got.dtype == np.float32 and 0 < np.abs(got - want).max() <= 0.05


def test_export_rejects_unknown_precision(model_dir, tmp_path):
    from trainers.common import export_model_dir

    with pytest.raises(ValueError, match="precision must be one of"):
        export_model_dir(model_dir, str(tmp_path / "x"), precision="mixed_bfloat16")
    assert not os.path.exists(str(tmp_path / "x"))


def _weight_bytes(export_dir):
    parts = ("backbone", "head") if _stored_values(export_dir, "head") else ("backbone",)
    return sum(np.asarray(v).nbytes for part in parts for v in _stored_values(export_dir, part))


def _float_constant_bytes(export_dir):
    """Bytes of the float32/bf16 constants in the SavedModel's graph and functions (where frozen weights live)."""
    proto = export_lib._read_saved_model(export_dir)
    total = 0
    for meta in proto.meta_graphs:
        nodes = list(meta.graph_def.node) + [n for f in meta.graph_def.library.function for n in f.node_def]
        for node in nodes:
            tensor = node.attr["value"].tensor
            if node.op == "Const" and tensor.dtype in (tf.float32.as_datatype_enum, tf.bfloat16.as_datatype_enum):
                total += len(tensor.tensor_content)
    return total


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_frozen_weights_export(model_dir, tmp_path, precision):
    # --freeze_weights: the network reads its weights as graph constants, ONE copy for all four endpoints of a
    # fine-tuned export (each endpoint freezing its own would store them four times); the variables stay, so the
    # export is still a model source; served in a fresh process (harness.check_export: also hostile inputs, a
    # batch of zero strings, the op allow-list), the outputs are the unfrozen export's.
    from trainers.common import export_model_dir

    ft_dir = str(tmp_path / "ft")
    _finetuned_model_dir(model_dir, ft_dir, num_classes=3)
    plain = export_model_dir(ft_dir, str(tmp_path / "plain"), precision=precision)
    loaded = tf.saved_model.load(plain)

    def reference(signature, batches):
        function = loaded.signatures[signature]
        names = sorted(function.structured_input_signature[1])
        return function(**{name: tf.constant(batch) for name, batch in zip(names, batches)})

    # Same weights and maths; oneDNN's cached-weight kernel may sum in another order (bf16: one rounding apart).
    tolerance = 1e-5 if precision == "float32" else 2e-2

    def compare(signature, got, want):
        assert set(got) == set(want), (signature, sorted(got), sorted(want))
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, atol=tolerance * max(1.0, np.abs(value).max()), err_msg=f"{signature}/{name}")

    result = harness.check_export(ft_dir, str(tmp_path / "frozen"), reference=reference, compare=compare, precision=precision,
                                  freeze_weights=True)
    frozen = result["export_dir"]
    assert json.load(open(os.path.join(frozen, "assets", "zoo_config.json")))["export"]["freeze_weights"] is True
    assert not export_lib.xla_functions(frozen)
    weights = _weight_bytes(frozen)
    assert weights == _weight_bytes(plain) > 0
    assert weights <= _float_constant_bytes(frozen) - _float_constant_bytes(plain) < 1.5 * weights  # one copy in the graph
    _assert_empty_batch(result, num_classes=3)
    backbone, _ = load_pretrained(frozen)  # still a model source (read back into float32 layers)
    assert len(backbone.weights) > 0


def test_frozen_weights_over_the_cap_stay_variables(model_dir, tmp_path, monkeypatch):
    # Above MAX_FROZEN_BYTES (a GraphDef is capped at 2 GB) the network keeps reading variables.
    from trainers.common import export_model_dir

    monkeypatch.setattr(export_lib, "MAX_FROZEN_BYTES", 1024)
    plain = export_model_dir(model_dir, str(tmp_path / "plain"))
    capped = export_model_dir(model_dir, str(tmp_path / "capped"), freeze_weights=True)
    assert _float_constant_bytes(capped) == _float_constant_bytes(plain) < 0.5 * _weight_bytes(capped)
    texts = tf.constant(TEXTS)
    np.testing.assert_array_equal(tf.saved_model.load(capped).signatures["encode"](text=texts)["pooled_output"],
                                  tf.saved_model.load(plain).signatures["encode"](text=texts)["pooled_output"])
