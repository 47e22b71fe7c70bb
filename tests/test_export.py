"""Raw-string SavedModel export: fresh-process parity, saved_model_cli, op allow-list, edge inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from zoo import export as export_lib
from zoo.bert import BertClassifier, BertConfig, load_pretrained, pretrainer, write_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["The movie was great!", "", "naïve café — 東京 🙂 " * 40, "Ünïcödé and ZWJ 👩‍👩‍👧 family", "short"]
PAIRS = (["Is it good?", "", "a b c"], ["Yes, very.", "x", ""])


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


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    from trainers.common import export_model_dir

    out = str(tmp_path_factory.mktemp("export") / "bert")
    export_model_dir(model_dir, out)
    return out


FRESH = r"""
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text  # the only imports a server-side user needs
assert not any(m.startswith("zoo") for m in sys.modules), "a serving process must not need zoo"
loaded = tf.saved_model.load(sys.argv[1])
texts = json.loads(sys.argv[2]); pairs = json.loads(sys.argv[3])
out = {k: v.numpy() for k, v in loaded.signatures["encode"](text=tf.constant(texts)).items()}
pair = {k: v.numpy() for k, v in loaded.signatures["encode_pairs"](text_a=tf.constant(pairs[0]), text_b=tf.constant(pairs[1])).items()}
assert not any(m.startswith("zoo") for m in sys.modules)
np.savez(sys.argv[4], **{"single_" + k: v for k, v in out.items()}, **{"pair_" + k: v for k, v in pair.items()})
"""


def test_fresh_process_parity_with_keras(exported, model_dir, tmp_path):
    npz = str(tmp_path / "out.npz")
    subprocess.run([sys.executable, "-c", FRESH, exported, json.dumps(TEXTS), json.dumps(PAIRS), npz], check=True, cwd=str(tmp_path))
    got = np.load(npz)
    backbone, pre = load_pretrained(model_dir, trim=True)
    for prefix, features in (("single_", pre(tf.constant(TEXTS))), ("pair_", pre(tf.constant(PAIRS[0]), tf.constant(PAIRS[1])))):
        ref = backbone(features)
        mask = features["padding_mask"].numpy()
        np.testing.assert_array_equal(got[prefix + "sequence_mask"], mask)
        assert np.abs(got[prefix + "pooled_output"] - ref["pooled_output"].numpy()).max() <= 1e-5
        assert np.abs(got[prefix + "sequence_output"] - ref["sequence_output"].numpy()).max() <= 1e-5
        for i, layer in enumerate(ref["encoder_outputs"]):
            assert np.abs(got[f"{prefix}encoder_layer_{i}"] - layer.numpy()).max() <= 1e-5
        assert np.abs(got[prefix + "embedding_output"] - ref["embedding_output"].numpy()).max() <= 1e-5
    # Over-long text is truncated to the model's 32 tokens; the empty string is [CLS] [SEP].
    assert got["single_sequence_output"].shape[1] == 32
    assert got["single_sequence_mask"][1].sum() == 2
    assert np.all(np.isfinite(got["single_pooled_output"]))


# saved_model_cli itself, with TF Text's ops registered first (as TF Serving links them into its binary).
SAVED_MODEL_CLI = "import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli; sys.argv[0] = 'saved_model_cli'; saved_model_cli.main()"


def test_saved_model_cli_runs(exported):
    result = subprocess.run(
        [sys.executable, "-c", SAVED_MODEL_CLI, "run", "--dir", exported, "--tag_set", "serve", "--signature_def", "serving_default", "--input_exprs", 'text=["hello world", ""]'],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pooled_output" in result.stdout


def test_only_tf_serving_ops(exported):
    ops = export_lib.list_ops(exported)
    assert "FastWordpieceTokenizeWithOffsets" in ops  # the check really sees TF Text ops
    assert export_lib.disallowed_ops(ops) == []
    assert not set(ops) & export_lib.TF_TEXT_MISSING_IN_2_12


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

    monkeypatch.setenv("ZOO_NATIVE_KERNELS", "0")  # the island, not the native kernel (next test)
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

    monkeypatch.setenv("ZOO_NATIVE_KERNELS", "1")
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
                    sequence_length=32, classifier={"num_classes": num_classes, "dropout": 0.1})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=classifier), ft_dir, max_to_keep=1).save()
    return classifier


def test_finetuned_export_gives_probabilities(model_dir, tmp_path):
    from trainers.common import export_model_dir

    ft_dir = str(tmp_path / "ft")
    classifier = _finetuned_model_dir(model_dir, ft_dir, num_classes=3)
    out = export_model_dir(ft_dir, str(tmp_path / "ft_export"))
    loaded = tf.saved_model.load(out)
    probs = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    ref = tf.nn.softmax(classifier(tf.constant(TEXTS))).numpy()
    assert np.abs(probs - ref).max() <= 1e-5
    pair_probs = loaded.signatures["classify_pairs"](text_a=tf.constant(PAIRS[0]), text_b=tf.constant(PAIRS[1]))["probabilities"]
    assert pair_probs.shape == (3, 3)


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


XLA_FRESH = r"""
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text
loaded = tf.saved_model.load(sys.argv[1])
texts = json.loads(sys.argv[2]); pairs = json.loads(sys.argv[3])
out = {k: v.numpy() for k, v in loaded.signatures["encode"](text=tf.constant(texts)).items()}
pair = {k: v.numpy() for k, v in loaded.signatures["encode_pairs"](text_a=tf.constant(pairs[0]), text_b=tf.constant(pairs[1])).items()}
assert not any(m.startswith("zoo") for m in sys.modules), "a serving process must not need zoo"
np.savez(sys.argv[4], **{"single_" + k: v for k, v in out.items()}, **{"pair_" + k: v for k, v in pair.items()})
"""


def test_jit_compile_export_matches_float32_in_a_fresh_process(exported, model_dir, tmp_path):
    # trainers.export --jit_compile: the network is one XLA function, lengths padded to a multiple of 8; the
    # outputs are the float32 export's (XLA reorders float sums only), with the padding masked out.
    from trainers.common import XLA_LENGTH_MULTIPLE, export_model_dir

    out = export_model_dir(model_dir, str(tmp_path / "xla"), jit_compile=True)
    assert export_lib.xla_functions(out) and not export_lib.xla_functions(exported)
    assert export_lib.disallowed_ops(export_lib.list_ops(out)) == []
    texts = ["The movie was great!", "short", ""]
    pairs = [["Is it good?", "film " * 40], ["Yes.", "x"]]  # the second pair fills T = 32 (a clamp at a T that is
    # not a multiple of 8 is tested on BertPreprocessor itself)
    npz = str(tmp_path / "xla.npz")
    subprocess.run([sys.executable, "-c", XLA_FRESH, out, json.dumps(texts), json.dumps(pairs), npz], check=True, cwd=str(tmp_path))
    got = np.load(npz)
    loaded = tf.saved_model.load(exported)
    for prefix, exact in (("single_", loaded.signatures["encode"](text=tf.constant(texts))),
                          ("pair_", loaded.signatures["encode_pairs"](text_a=tf.constant(pairs[0]), text_b=tf.constant(pairs[1])))):
        exact = {k: v.numpy() for k, v in exact.items()}
        length = exact["sequence_mask"].shape[1]
        bucket = min(-(-length // XLA_LENGTH_MULTIPLE) * XLA_LENGTH_MULTIPLE, 32)
        assert got[prefix + "sequence_mask"].shape[1] == bucket
        np.testing.assert_array_equal(got[prefix + "sequence_mask"][:, :length], exact["sequence_mask"])
        assert got[prefix + "sequence_mask"][:, length:].sum() == 0
        for name, want in exact.items():
            if name == "sequence_mask":
                continue
            have = got[prefix + name]
            np.testing.assert_allclose(have if want.ndim == 2 else have[:, :length], want, atol=1e-5, err_msg=prefix + name)
    assert got["single_sequence_mask"].shape[1] == XLA_LENGTH_MULTIPLE  # 7 tokens -> 8
    assert got["pair_sequence_mask"].shape[1] == 32  # full length stays 32


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


FROZEN_FRESH = r"""
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text
loaded = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
out = {k: v.numpy() for k, v in loaded.signatures["encode"](text=texts).items()}
out.update({k: v.numpy() for k, v in loaded.signatures["classify"](text=texts).items()})
assert not any(m.startswith("zoo") for m in sys.modules), "a serving process must not need zoo"
np.savez(sys.argv[3], **out)
"""


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
    # export is still a model source; served in a fresh process, the outputs are the unfrozen export's.
    from trainers.common import export_model_dir

    ft_dir = str(tmp_path / "ft")
    _finetuned_model_dir(model_dir, ft_dir, num_classes=3)
    plain = export_model_dir(ft_dir, str(tmp_path / "plain"), precision=precision)
    frozen = export_model_dir(ft_dir, str(tmp_path / "frozen"), precision=precision, freeze_weights=True)
    assert json.load(open(os.path.join(frozen, "assets", "zoo_config.json")))["export"]["freeze_weights"] is True
    assert export_lib.disallowed_ops(export_lib.list_ops(frozen)) == [] and not export_lib.xla_functions(frozen)
    weights = _weight_bytes(frozen)
    assert weights == _weight_bytes(plain) > 0
    assert weights <= _float_constant_bytes(frozen) - _float_constant_bytes(plain) < 1.5 * weights  # one copy in the graph
    npz = str(tmp_path / "frozen.npz")
    subprocess.run([sys.executable, "-c", FROZEN_FRESH, frozen, json.dumps(TEXTS), npz], check=True, cwd=str(tmp_path))
    got = np.load(npz)
    loaded = tf.saved_model.load(plain)
    want = {k: v.numpy() for k, v in loaded.signatures["encode"](text=tf.constant(TEXTS)).items()}
    want.update({k: v.numpy() for k, v in loaded.signatures["classify"](text=tf.constant(TEXTS)).items()})
    assert set(got.files) == set(want)
    # Same weights and maths; oneDNN's cached-weight kernel may sum in another order (bf16: one rounding apart).
    tolerance = 1e-5 if precision == "float32" else 2e-2
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=tolerance * max(1.0, np.abs(value).max()), err_msg=name)
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
