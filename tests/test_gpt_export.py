"""GPT's raw-string SavedModel (encode, score, generate, generate_with_settings): the op allow-list, hostile input
and an empty batch in a fresh process (tensorflow + tensorflow_text only), and parity with the Keras model."""

import numpy as np
import pytest
import tensorflow as tf

import harness
import zoo
from zoo.data.corpus import imdb_documents
from zoo.gpt import GPTCausalLM, GPTConfig
from zoo.text.bpe import BytePairTokenizer

FAMILY = zoo.family("gpt")
# Sampling settings the served `generate_with_settings` gets; the Keras reference draws with the same ones.
SETTINGS = {"max_new_tokens": 6, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 11}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A GPT model dir as trainers.pretrain writes it: a BPE learned from real reviews, seeded random weights."""
    import keras

    keras.utils.set_random_seed(5)
    tokenizer = BytePairTokenizer.learn([s for d in imdb_documents()[:200] for s in d], 800)
    config = GPTConfig(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=2, hidden_dim=32,
                       intermediate_dim=64, max_sequence_length=40, dropout=0.0)
    path = str(tmp_path_factory.mktemp("gpt_model"))
    model = FAMILY.pretrainer(config)
    FAMILY.write_model_dir(path, config, tokenizer, sequence_length=32)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), path, max_to_keep=1).save()
    return path


def _keras_reference(model_dir):
    """reference(signature, batches): the Keras model of `model_dir` on the same strings, computed independently
    of the export's endpoint code (the backbone's outputs, log-softmax of the LM logits, the family's generate)."""
    backbone, pre = FAMILY.load_pretrained(model_dir, trim=True)
    model = GPTCausalLM(backbone)
    tokenizer = pre.tokenizer

    def reference(signature, batches):
        texts = batches[0]
        features = pre(tf.constant(texts))
        if signature in ("encode", "serving_default"):
            out = backbone(features)
            result = {"sequence_output": out["sequence_output"], "embedding_output": out["embedding_output"],
                      "sequence_mask": tf.cast(features["padding_mask"], tf.int32)}
            result.update({f"encoder_layer_{i}": h for i, h in enumerate(out["encoder_outputs"])})
            return result
        if signature == "score":
            logits = model(features).numpy().astype(np.float64)
            ids, mask = features["token_ids"].numpy(), features["padding_mask"].numpy()
            logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
            pairs = mask[:, 1:] * mask[:, :-1]
            token_logp = np.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0] * pairs
            total, count = token_logp.sum(1), pairs.sum(1)
            return {"token_log_probs": token_logp, "token_mask": pairs.astype(np.int32), "log_prob": total,
                    "num_tokens": count.astype(np.int32), "perplexity": np.exp(-total / np.maximum(count, 1))}
        settings = ({"max_new_tokens": 32, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
                    if signature == "generate" else SETTINGS)
        text = FAMILY.generate(model, pre, texts, **settings)
        return {"text": np.array([t.encode() for t in text], object)}

    return reference


def _compare(reference):
    def compare(signature, got, want):
        if not signature.startswith("generate"):
            assert sorted(got) == sorted(want), (signature, sorted(got), sorted(want))
            for key in want:
                assert got[key].shape == want[key].shape, (signature, key, got[key].shape, want[key].shape)
                # Relative for the sums and perplexities (hundreds in size), absolute for the rest.
                scale = np.maximum(1.0, np.abs(want[key])) if key in ("log_prob", "perplexity") else 1.0
                diff = float((np.abs(got[key].astype(np.float64) - want[key]) / scale).max()) if got[key].size else 0.0
                assert diff <= 1e-5, f"{signature}/{key}: served and Keras outputs differ by {diff:.3g}"
            return
        assert list(got["text"]) == list(want["text"]), (signature, got["text"], want["text"])
        ids, lengths = got["token_ids"], got["lengths"]
        limit = 32 if signature == "generate" else SETTINGS["max_new_tokens"]
        assert ids.shape[1] <= limit and np.all(lengths <= limit) and np.all(lengths >= 1)
        for row, n in zip(ids, lengths):
            assert np.all(row[n:] == 0), "token ids past a row's length must be 0"

    return compare


@pytest.fixture(scope="module")
def export_check(model_dir, tmp_path_factory):
    reference = _keras_reference(model_dir)
    return harness.check_export(model_dir, str(tmp_path_factory.mktemp("gpt_export") / "export"), reference=reference,
                                compare=_compare(reference), settings=SETTINGS,
                                expect_ops=("NormalizeUTF8", "LookupTableFindV2", "StatelessMultinomial"))


def test_gpt_export_passes_the_harness(export_check):
    outputs = export_check["outputs"]
    assert sorted(outputs) == ["encode", "generate", "generate_with_settings", "score", "serving_default"]
    n = len(harness.TEXTS)
    assert outputs["encode"]["encoder_layer_1"].shape[:1] == (n,)
    # The empty text scores nothing: no token pairs, perplexity 1; every other text has at least one.
    score = outputs["score"]
    assert score["num_tokens"][harness.TEXTS.index("")] == 0 and score["perplexity"][harness.TEXTS.index("")] == 1.0
    assert np.all(score["log_prob"] <= 0) and np.all(score["perplexity"] >= 1)


def test_empty_batch_gives_empty_outputs_of_the_right_rank(export_check):
    empty = export_check["hostile"]["zero_batch"]
    assert empty["generate"]["text"].shape == (0,) and empty["generate"]["token_ids"].shape[0] == 0
    assert empty["score"]["token_log_probs"].ndim == 2 and empty["encode"]["sequence_output"].shape[0] == 0


def test_generation_settings_and_seed_are_inputs(export_check):
    """The harness served seed 11 equal to Keras; another seed and fewer new tokens, sent as inputs, change it."""
    first = export_check["outputs"]["generate_with_settings"]
    served, errors, _ = harness.serve_in_fresh_process(
        export_check["export_dir"], {"texts": [harness.TEXTS]}, settings=dict(SETTINGS, seed=12, max_new_tokens=3))
    assert not errors, errors
    other = served["texts"]["generate_with_settings"]
    assert other["token_ids"].shape == (len(harness.TEXTS), 3) and np.all(other["lengths"] <= 3)
    assert not np.array_equal(other["token_ids"], first["token_ids"][:, :3]), "the seed input changed nothing"
