"""zoo.gpt.convert: HF openai-gpt, the original finetune-transformer-lm shards and zoo model dirs, converted both
ways; parity with HF transformers (torch, run here), with tests/reference_gpt_numpy.py and through the export in
a fresh process; errors that name the file or weight and leave nothing behind; the command line.

The models are seeded random OpenAIGPTLMHeadModels from scripts/make_gpt_reference_weights.py (biases and
LayerNorm parameters perturbed, so a swapped one would show). GPT-1's own BPE files are read from
../shared/fixtures/gpt1_bpe where present (never copied into the repo).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import cli_utils as cli
import zoo
from reference_gpt_numpy import gpt_forward, load_original
from zoo import formats
from zoo import model_dir as md
from zoo.gpt import GPTCausalLM, convert
from zoo.text.bpe import SPECIAL_TOKENS

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers only reads local folders
sys.path.insert(0, os.path.join(cli.REPO, "scripts"))
import make_gpt_reference_weights as reference_weights  # noqa: E402

FAMILY = zoo.family("gpt")
GPT1_FILES = os.path.normpath(os.path.join(cli.REPO, "..", "shared", "fixtures", "gpt1_bpe"))
GPT1_VOCABULARY = 40478
ATOL = 1e-4
TEXTS = ["the film was a gripping story , beautifully acted .", "", "a dull plot , far too long !",
         "Unseen WORDS: naïve café 東京 🙂", "what a waste of time"]


def _hf_outputs(model, ids, mask):
    """HF's [embeddings, layer 1 .. L] hidden states and logits, numpy float32."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states], out.logits.numpy()


def _zoo_outputs(model_dir, ids, mask):
    """The converted model dir's [embedding_output, encoder_outputs ...] and LM logits, numpy float32."""
    backbone, _ = FAMILY.load_pretrained(model_dir)
    features = {"token_ids": tf.constant(ids, tf.int32), "padding_mask": tf.constant(mask, tf.int32)}
    out = backbone(features)
    logits = GPTCausalLM(backbone)(features).numpy()
    return [out["embedding_output"].numpy()] + [h.numpy() for h in out["encoder_outputs"]], logits


def _max_diffs(got_hidden, got_logits, want_hidden, want_logits, mask):
    """{output: max |got - want|} at real positions; logits over want's rows (the source's vocabulary)."""
    real = np.asarray(mask).astype(bool)
    diffs = {("embeddings" if i == 0 else f"layer_{i}"): float(np.abs(g[real] - w[real]).max())
             for i, (g, w) in enumerate(zip(got_hidden, want_hidden))}
    rows = want_logits.shape[-1]
    diffs["logits"] = float(np.abs(got_logits[..., :rows][real] - want_logits[real]).max())
    print("max abs diff:", {k: f"{v:.1e}" for k, v in diffs.items()})
    return diffs


def _ids(vocabulary_size, batch=3, length=12, seed=0):
    """Random token ids over the whole vocabulary, right-padded (row 1 has 7 real tokens)."""
    rng = np.random.RandomState(seed)
    mask = np.ones((batch, length), np.int32)
    mask[1, 7:] = 0
    return rng.randint(0, vocabulary_size, (batch, length)).astype(np.int32) * mask, mask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny HF folder whose vocab.json holds the zoo's special tokens (what zoo -> HF writes), converted."""
    base = tmp_path_factory.mktemp("gpt_tiny")
    model, vocab, _ = reference_weights.make(str(base / "hf"), "tiny", seed=0, special_tokens=True)
    converted = convert.from_hf(str(base / "hf"), str(base / "zoo"))
    return {"model": model, "vocab": vocab, "hf": str(base / "hf"), "zoo": str(base / "zoo"), "converted": converted}


# ---- HF -> zoo ----------------------------------------------------------------------------------------------------

def test_tiny_hf_to_zoo_matches_hf(tiny):
    config = md.read_config(tiny["zoo"])
    assert config["family"] == "gpt" and config["backbone"]["vocabulary_size"] == len(tiny["vocab"])
    assert config["backbone"]["num_layers"] == 2 and config["preprocessor"]["sequence_length"] == 64  # the context
    assert config["conversion"]["token_rows"]["initialised"] == {}  # vocab.json named every row
    ids, mask = _ids(len(tiny["vocab"]))
    diffs = _max_diffs(*_zoo_outputs(tiny["zoo"], ids, mask), *_hf_outputs(tiny["model"], ids, mask), mask)
    assert len(diffs) == 4 and max(diffs.values()) <= ATOL, diffs


FRESH = r"""
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text  # all that a serving process needs
loaded = tf.saved_model.load(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))
out = loaded.signatures["encode"](text=tf.constant([t.encode("utf-8") for t in texts]))
assert not [m for m in sys.modules if m.split(".")[0] in ("zoo", "torch", "transformers")]
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
"""


def test_tiny_export_matches_hf_in_fresh_process(tiny, tmp_path, monkeypatch):
    from trainers.common import export_model_dir

    serving_endpoints = FAMILY.serving_endpoints

    def encode_only(*args, **kwargs):
        # The export path of trainers.export with the family's own `encode`; the other endpoints (their parity
        # with Keras is tests/test_gpt_export.py's) would add ~25 s of tracing.
        endpoints, _, trackables = serving_endpoints(*args, **kwargs)
        return {"encode": endpoints["encode"]}, "encode", trackables

    monkeypatch.setattr(FAMILY, "serving_endpoints", encode_only)
    export = export_model_dir(tiny["zoo"], str(tmp_path / "export"))
    with open(tmp_path / "texts.json", "w", encoding="utf-8") as f:
        json.dump(TEXTS, f)
    subprocess.run([sys.executable, "-c", FRESH, export, str(tmp_path / "texts.json"), str(tmp_path / "out.npz")],
                   check=True, cwd=str(tmp_path), env=cli.env(), timeout=300)
    served = np.load(tmp_path / "out.npz")
    # HF runs on the ids the zoo preprocessor gives (an end-of-text separator, then the text: the export's layout).
    _, pre = FAMILY.load_pretrained(tiny["zoo"], trim=True)
    features = pre(tf.constant(TEXTS))
    ids, mask = features["token_ids"].numpy(), features["padding_mask"].numpy()
    np.testing.assert_array_equal(served["sequence_mask"], mask)
    hidden, _ = _hf_outputs(tiny["model"], ids, mask)
    real = mask.astype(bool)
    diffs = {f"encoder_layer_{i}": float(np.abs(served[f"encoder_layer_{i}"][real] - hidden[i + 1][real]).max()) for i in range(2)}
    diffs["embedding_output"] = float(np.abs(served["embedding_output"][real] - hidden[0][real]).max())
    diffs["sequence_output"] = float(np.abs(served["sequence_output"][real] - hidden[-1][real]).max())
    print("served vs HF:", diffs)
    assert max(diffs.values()) <= ATOL, diffs
    # An export converts back too (its backbone variables): the same tensors bit for bit.
    again = convert.to_hf(export, str(tmp_path / "hf"))
    for name, value in tiny["converted"].weights.items():
        np.testing.assert_array_equal(again.weights[name], value, err_msg=name)


# ---- zoo -> HF ----------------------------------------------------------------------------------------------------

def test_zoo_to_hf_loads_in_transformers_and_comes_back_bit_exact(tiny, tmp_path):
    out = str(tmp_path / "hf")
    convert.to_hf(tiny["zoo"], out)
    assert sorted(os.listdir(out)) == ["config.json", "merges.txt", "model.safetensors", "tokenizer_config.json", "vocab.json"]
    model, info = transformers.OpenAIGPTLMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, mask = _ids(len(tiny["vocab"]), seed=1)
    diffs = _max_diffs(*_zoo_outputs(tiny["zoo"], ids, mask), *_hf_outputs(model.eval(), ids, mask), mask)
    assert max(diffs.values()) <= ATOL, diffs
    base = transformers.OpenAIGPTModel.from_pretrained(out)  # the base model loads the same folder
    assert base.config.vocab_size == len(tiny["vocab"])
    # HF's tokenizer on the written vocab.json / merges.txt gives our ids.
    ours = FAMILY.load_tokenizer(tiny["zoo"]).tokenize(tf.constant(TEXTS)).to_list()
    for tokenizer in (transformers.OpenAIGPTTokenizer.from_pretrained(out), transformers.AutoTokenizer.from_pretrained(out)):
        assert [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS] == ours
    # Back to zoo: the same tensors bit for bit, the same vocabulary.
    again = convert.from_hf(out, str(tmp_path / "zoo"))
    for name, value in tiny["converted"].weights.items():
        np.testing.assert_array_equal(again.weights[name], value, err_msg=name)
    assert again.tokenizer.vocabulary == tiny["converted"].tokenizer.vocabulary


def test_hub_style_pytorch_bin_converts(tiny, tmp_path):
    """openai-gpt's pytorch_model.bin on the hub: OpenAIGPTModel names (no 'transformer.'), the causal-mask buffers
    h.<i>.attn.bias stored, a tied lm_head.weight; read with torch into the same weights."""
    folder = str(tmp_path / "bin")
    shutil.copytree(tiny["hf"], folder)
    state = {k.removeprefix("transformer."): torch.tensor(v) for k, v in formats.read_safetensors(os.path.join(folder, "model.safetensors")).items()}
    state.update({f"h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 64, 64)) for i in range(2)})
    state["lm_head.weight"] = state["tokens_embed.weight"]
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    os.remove(os.path.join(folder, "model.safetensors"))
    again = convert.convert("hf", "zoo", folder, str(tmp_path / "zoo"))
    for name, value in tiny["converted"].weights.items():
        np.testing.assert_array_equal(again.weights[name], value, err_msg=name)


# ---- the paper's size ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt1(tmp_path_factory):
    """An HF folder of the paper's shapes (GPT-1's real BPE files where present, else 40,478 learned + filler
    symbols), as the hub's openai-gpt: no special tokens; converted."""
    base = tmp_path_factory.mktemp("gpt1")
    real = os.path.isdir(GPT1_FILES)
    model, vocab, _ = reference_weights.make(str(base / "hf"), "gpt1", seed=3, vocab_dir=GPT1_FILES if real else None,
                                             vocab_size=None if real else GPT1_VOCABULARY)
    converted = convert.from_hf(str(base / "hf"), str(base / "zoo"))
    return {"model": model, "vocab": vocab, "hf": str(base / "hf"), "zoo": str(base / "zoo"), "converted": converted}


def test_paper_sized_hf_to_zoo_matches_hf(gpt1):
    config = gpt1["converted"].config
    assert (config.num_layers, config.hidden_dim, config.num_heads, config.intermediate_dim, config.max_sequence_length) == (12, 768, 12, 3072, 512)
    # HF's 40,478 rows are copied; the zoo's five special tokens get fresh N(0, 0.02) rows after them.
    assert config.vocabulary_size == GPT1_VOCABULARY + len(SPECIAL_TOKENS)
    rows = md.read_config(gpt1["zoo"])["conversion"]["token_rows"]
    assert rows["from_source"] == GPT1_VOCABULARY
    assert rows["initialised"] == {t: GPT1_VOCABULARY + i for i, t in enumerate(SPECIAL_TOKENS.values())}
    tokens = gpt1["converted"].weights["tokens_embed.weight"]
    np.testing.assert_array_equal(tokens[:GPT1_VOCABULARY], gpt1["model"].transformer.tokens_embed.weight.detach().numpy())
    assert 0.01 < tokens[GPT1_VOCABULARY:].std() < 0.03
    ids, mask = _ids(GPT1_VOCABULARY, batch=2, length=10)
    diffs = _max_diffs(*_zoo_outputs(gpt1["zoo"], ids, mask), *_hf_outputs(gpt1["model"], ids, mask), mask)
    assert len(diffs) == 14 and max(diffs.values()) <= ATOL, diffs


def test_tokenizer_from_hf_files_equals_openai_gpt_tokenizer(gpt1):
    if not os.path.isdir(GPT1_FILES):
        pytest.skip(f"GPT-1's BPE files are not here: {GPT1_FILES} (shared/fixtures/gpt1_bpe)")
    hf = transformers.OpenAIGPTTokenizer.from_pretrained(gpt1["hf"])
    texts = TEXTS + ["The quick brown fox doesn't jump over the lazy dog.", "U.S. GDP rose 3.14% in 2023…"]
    ours = FAMILY.load_tokenizer(gpt1["zoo"]).tokenize(tf.constant(texts)).to_list()
    assert ours == [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert sum(map(len, ours)) > 40


# ---- the original layout --------------------------------------------------------------------------------------

def test_original_layout_matches_numpy_reference(tmp_path):
    folder = str(tmp_path / "model")
    model, vocab, merges = reference_weights.make(folder, "tiny", layout="original", seed=1)
    assert len([f for f in os.listdir(folder) if f.endswith(".npy")]) == 10
    converted = convert.from_openai(folder, str(tmp_path / "zoo"), num_heads=2)
    assert converted.config.vocabulary_size == len(vocab) + len(SPECIAL_TOKENS)
    assert md.read_config(str(tmp_path / "zoo"))["conversion"]["num_heads"] == 2
    ids, mask = _ids(len(vocab), seed=2)
    embeddings, layers, logits = gpt_forward(load_original(folder), ids, num_heads=2)
    diffs = _max_diffs(*_zoo_outputs(str(tmp_path / "zoo"), ids, mask), [embeddings] + layers, logits, mask)
    assert max(diffs.values()) <= ATOL, diffs
    # The same model through HF's layout converts to the same weights.
    reference_weights.save_hf(model, vocab, merges, str(tmp_path / "hf"))
    from_hf = convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "zoo_from_hf"))
    for name, value in from_hf.weights.items():
        np.testing.assert_array_equal(converted.weights[name], value, err_msg=name)


# ---- errors: named weights and files, nothing written -----------------------------------------------------------

def _fails(tmp_path, source, *patterns, kind="hf", **options):
    out = str(tmp_path / "new" / "out")
    with pytest.raises(convert.ConversionError) as error:
        convert.convert(kind, "zoo", source, out, **options)
    for pattern in patterns:
        assert pattern in str(error.value), str(error.value)
    assert not os.path.exists(str(tmp_path / "new")), "a failed conversion left files behind"
    return str(error.value)


def _edited_hf(tiny, tmp_path, edit=None, config=None, name="edited"):
    """A copy of the tiny HF folder whose tensors went through `edit(dict)` and config.json through `config(dict)`."""
    folder = str(tmp_path / name)
    shutil.copytree(tiny["hf"], folder)
    if edit:
        path = os.path.join(folder, "model.safetensors")
        tensors = formats.read_safetensors(path)
        edit(tensors)
        formats.write_safetensors(tensors, path)
    if config:
        path = os.path.join(folder, "config.json")
        values = json.load(open(path))
        config(values)
        json.dump(values, open(path, "w"))
    return folder


def test_hf_errors_name_the_weight_or_file(tiny, tmp_path):
    source = _edited_hf(tiny, tmp_path, lambda t: t.pop("transformer.h.1.mlp.c_proj.bias"), name="missing")
    _fails(tmp_path, source, "missing variables", "h.1.mlp.c_proj.bias", "model.safetensors")
    source = _edited_hf(tiny, tmp_path, lambda t: t.update({"multiple_choice_head.summary.weight": np.zeros((1, 32), np.float32)}), name="extra")
    _fails(tmp_path, source, "unexpected variables", "multiple_choice_head.summary.weight")
    source = _edited_hf(tiny, tmp_path, lambda t: t.update({"transformer.h.0.mlp.c_fc.weight": np.zeros((32, 60), np.float32)}), name="shape")
    _fails(tmp_path, source, "h.0.mlp.c_fc.weight", "(32, 60)", "(32, 128)")
    source = _edited_hf(tiny, tmp_path, lambda t: t.update({"lm_head.weight": t["transformer.tokens_embed.weight"] + 1}), name="untied")
    _fails(tmp_path, source, "lm_head.weight differs")
    source = _edited_hf(tiny, tmp_path, config=lambda c: c.update(model_type="gpt2"), name="gpt2")
    _fails(tmp_path, source, "config.json", "model_type='gpt2'")
    source = _edited_hf(tiny, tmp_path, config=lambda c: c.update(afn="relu"), name="relu")
    _fails(tmp_path, source, "afn='relu'")
    source = _edited_hf(tiny, tmp_path, config=lambda c: c.update(vocab_size=100), name="rows")
    _fails(tmp_path, source, "tokens_embed.weight", "(100, 32)")
    os.remove(os.path.join(source, "merges.txt"))
    _fails(tmp_path, source, "merges.txt not found")
    _fails(tmp_path, str(tmp_path / "nowhere"), "not a folder")
    with pytest.raises(ValueError, match="none may be missing"):
        FAMILY.convert("hf", "zoo", tiny["hf"], str(tmp_path / "x"), allow_missing=["pooler"])


def test_original_layout_errors(tmp_path):
    folder = str(tmp_path / "model")
    reference_weights.make(folder, "tiny", layout="original", seed=1)
    broken = str(tmp_path / "broken")
    shutil.copytree(folder, broken)
    os.remove(os.path.join(broken, "params_3.npy"))
    _fails(tmp_path, broken, "params_3.npy", "missing", kind="openai", num_heads=2)
    shutil.copy(os.path.join(folder, "params_3.npy"), broken)
    np.save(os.path.join(broken, "params_9.npy"), np.load(os.path.join(folder, "params_9.npy"))[:-5])
    _fails(tmp_path, broken, "params_shapes.json describes", "truncated", kind="openai", num_heads=2)
    shutil.copy(os.path.join(folder, "params_9.npy"), broken)
    shapes = json.load(open(os.path.join(folder, "params_shapes.json")))
    shapes[2 + 12 + 6] = [1, 32, 120]  # layer 1's c_fc kernel disagrees with layer 0's
    json.dump(shapes, open(os.path.join(broken, "params_shapes.json"), "w"))
    _fails(tmp_path, broken, "params_shapes.json", "h1/mlp/c_fc/w", "(1, 32, 120)", "(1, 32, 128)", kind="openai", num_heads=2)
    shutil.copy(os.path.join(folder, "params_shapes.json"), broken)
    _fails(tmp_path, broken, "not divisible by 12 heads", kind="openai")  # H=32: the default 12 heads cannot split it
    os.remove(os.path.join(broken, "vocab_40000.bpe"))
    _fails(tmp_path, broken, "vocab_40000.bpe not found", kind="openai", num_heads=2)


def test_family_formats_are_the_converters_own():
    assert set(FAMILY.convert_formats["from"]) == set(convert.READERS)
    assert set(FAMILY.convert_formats["to"]) == set(convert.WRITERS)


def test_existing_output_is_kept_unless_overwritten(tiny, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(convert.ConversionError, match="already exists"):
        convert.from_hf(tiny["hf"], str(out))
    assert os.listdir(str(out)) == ["keep.txt"]
    convert.from_hf(tiny["hf"], str(out), overwrite=True, sequence_length=16)
    assert md.read_config(str(out))["preprocessor"]["sequence_length"] == 16
    assert sorted(os.listdir(str(tmp_path))) == ["exists"]  # no temporary folders left


# ---- the command line -------------------------------------------------------------------------------------------

def test_cli_converts_gpt_and_reports_errors_cleanly(tiny, tmp_path):
    no_merges = _edited_hf(tiny, tmp_path, name="no_merges")
    os.remove(os.path.join(no_merges, "merges.txt"))
    bad_shape = _edited_hf(tiny, tmp_path, lambda t: t.update({"transformer.h.0.attn.c_proj.weight": np.zeros((32, 31), np.float32)}), name="bad_shape")
    (tmp_path / "empty").mkdir()
    runs = {  # name: (flags, the strings its error line must hold); run side by side (each pays TF's start-up)
        "ok": ((f"--input={tiny['hf']}",), None),
        "no_merges": ((f"--input={no_merges}",), ("merges.txt not found",)),
        "bad_shape": ((f"--input={bad_shape}",), ("h.0.attn.c_proj.weight", "(32, 31)", "(32, 32)")),
        "empty": ((f"--input={tmp_path / 'empty'}",), ("config.json not found",)),
    }
    procs = {name: subprocess.Popen(cli.command("convert", "--model=gpt", "--from=hf", *flags, f"--output={tmp_path / 'out' / name}"),
                                    cwd=cli.REPO, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, (flags, _) in runs.items()}
    outputs = {name: (proc.communicate(timeout=300)[0], proc.returncode) for name, proc in procs.items()}
    for name, (_, expected) in runs.items():
        output, code = outputs[name]
        if expected is None:
            assert code == 0, cli.tail(output)
            assert md.read_config(str(tmp_path / "out" / name))["family"] == "gpt"
        else:
            cli.assert_clean_failure(code, output, *expected)
            assert not os.path.exists(str(tmp_path / "out" / name))
