"""GPT fine-tuning (issue 23 items 4 and 6): the paper's four input transforms build exactly its sequences, the
similarity model is symmetric, multiple choice is a softmax across candidates, the auxiliary LM loss is added (and
removed) by lm_coef, fit lowers the loss on real text, the model survives `.keras` and model-dir round trips in a
fresh process, trainers.finetune drives it (multiple-choice TSV rows), and the fine-tuned exports match Keras in a
fresh process (empty batch and hostile strings included)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import zoo
from tests import cli_utils as cli
from zoo.data.corpus import rotten_tomatoes_task
from zoo.gpt import GPTClassifier, GPTConfig, GPTPreprocessor
from zoo.text.bpe import BytePairTokenizer

FAMILY = zoo.family("gpt")
LENGTH = 32  # the preprocessor's T in the model dir


@pytest.fixture(scope="module")
def rt():
    return rotten_tomatoes_task()


@pytest.fixture(scope="module")
def tokenizer(rt):
    return BytePairTokenizer.learn([t for t, _ in rt["train"][:1500]], 700)


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    """A GPT model dir as trainers.pretrain writes it (seeded random weights, no dropout: exact comparisons)."""
    keras.utils.set_random_seed(5)
    config = GPTConfig(vocabulary_size=tokenizer.vocabulary_size, num_layers=2, num_heads=2, hidden_dim=32,
                       intermediate_dim=64, max_sequence_length=48, dropout=0.0)
    path = str(tmp_path_factory.mktemp("gpt_pretrained"))
    FAMILY.write_model_dir(path, config, tokenizer, sequence_length=LENGTH)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=FAMILY.pretrainer(config)), path, max_to_keep=1).save()
    return path


def _task(model_dir, transform, num_classes=2, seed=1, **options):
    keras.utils.set_random_seed(seed)
    backbone, preprocessor = FAMILY.load_pretrained(model_dir)
    return FAMILY.task(backbone, preprocessor, num_classes, transform=transform, **options)


# ---- the transforms' token layouts --------------------------------------------------------------------------------


def _real_rows(features):
    """[[ids of the real positions] per sequence] (rows of [B, T] or [B, S, T] features); checks right padding."""
    ids, mask = features["token_ids"].numpy(), features["padding_mask"].numpy()
    ids, mask = ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, mask.shape[-1])
    rows = []
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any(), f"padding is not on the right: {m}"
        rows.append(row[:n].tolist())
    return rows


def test_each_transform_lays_out_the_papers_sequences(tokenizer):
    sp = tokenizer.special_ids
    s, d, e, pad = sp["start"], sp["delimiter"], sp["classify"], sp["pad"]
    tok = lambda text: tokenizer.tokenize(tf.constant([text]))[0].numpy().tolist()  # noqa: E731
    a, b, c = "a gripping , beautifully acted story", "dull", "far too long"
    ta, tb, tc = tok(a), tok(b), tok(c)

    def layout(form, *inputs, length=24):
        features = GPTPreprocessor(tokenizer, length, form=form)(*[tf.constant(x) for x in inputs])
        assert (features["token_ids"].numpy()[features["padding_mask"].numpy() == 0] == pad).all()
        return features, _real_rows(features)

    assert layout("lm", [a])[1] == [[sp["end_of_text"]] + ta]
    assert layout("classification", [a, ""])[1] == [[s] + ta + [e], [s, e]]
    assert layout("entailment", [a], [b])[1] == [[s] + ta + [d] + tb + [e]]
    features, rows = layout("similarity", [a, b], [b, c])
    assert features["token_ids"].shape == (2, 2, 24)  # [B, both orders, T]
    assert rows == [[s] + ta + [d] + tb + [e], [s] + tb + [d] + ta + [e], [s] + tb + [d] + tc + [e], [s] + tc + [d] + tb + [e]]
    features, rows = layout("multiple_choice", [a, b], [[b, c, ""], [a, b, c]])
    assert features["token_ids"].shape == (2, 3, 24)  # [B, K, T]
    assert rows == [[s] + ta + [d] + t + [e] for t in (tb, tc, [])] + [[s] + tb + [d] + t + [e] for t in (ta, tb, tc)]

    # Truncation: every sequence fits T; a pair is cut longest-first, neither part below half of the T - 3 free
    # positions, symmetrically; multiple choice keeps the end of a long context.
    long = " ".join(["the film drags on and on"] * 6)
    tl = tok(long)
    assert len(tl) > 30
    assert layout("classification", [long], length=8)[1] == [[s] + tl[:6] + [e]]
    assert layout("entailment", [long], [b], length=12)[1] == [[s] + tl[:9 - len(tb)] + [d] + tb + [e]]
    assert layout("entailment", [long], [long], length=12)[1] == [[s] + tl[:4] + [d] + tl[:4] + [e]]  # 9 // 2 each
    _, rows = layout("similarity", [long], [c], length=12)
    assert rows == [[s] + tl[:9 - len(tc)] + [d] + tc + [e], [s] + tc + [d] + tl[:9 - len(tc)] + [e]]
    assert layout("similarity", [c], [long], length=12)[1] == rows[::-1]  # swapped inputs: the same two sequences
    assert layout("multiple_choice", [long], [[b, long]], length=12)[1] == [
        [s] + tl[-(9 - len(tb)):] + [d] + tb + [e], [s] + tl[-4:] + [d] + tl[:4] + [e]]
    # Serving shapes: trimmed to the longest sequence; an empty batch keeps the stacked rank.
    trimmed = GPTPreprocessor(tokenizer, 24, trim=True, form="multiple_choice")(tf.constant([b]), tf.constant([[b, c]]))
    assert trimmed["token_ids"].shape == (1, 2, 3 + len(tc) + len(tb))
    empty = GPTPreprocessor(tokenizer, 24, trim=True, form="similarity")(tf.constant([], tf.string), tf.constant([], tf.string))
    assert empty["token_ids"].shape == (0, 2, 1)
    with pytest.raises(ValueError, match="two inputs"):
        GPTPreprocessor(tokenizer, 24, form="entailment")(tf.constant([a]))


# ---- the task models ------------------------------------------------------------------------------------------


def test_similarity_adds_both_orders_and_is_symmetric(model_dir):
    model = _task(model_dir, "similarity", num_classes=3, dropout=0.0)
    a = ["a gripping story", "dull", "", "the film drags on and on " * 12]
    b = ["far too long", "a wonderful , moving film", "ok", "fine"]
    logits = model.predict((a, b), verbose=0)
    np.testing.assert_allclose(model((tf.constant(b), tf.constant(a))).numpy(), logits, atol=1e-6)
    # By hand: the two orders' hidden states at their extract tokens, added, through the linear head.
    features = model.features((a, b))
    hidden = model.backbone({k: tf.reshape(v, [-1, v.shape[-1]]) for k, v in features.items()})["sequence_output"].numpy()
    last = features["padding_mask"].numpy().reshape(-1, hidden.shape[1]).sum(1) - 1
    pooled = hidden[np.arange(len(last)), last].reshape(len(a), 2, -1).sum(1)
    kernel, bias = (w.numpy() for w in model.head.dense.weights)
    np.testing.assert_allclose(pooled @ kernel + bias, logits, atol=1e-5)


def test_multiple_choice_is_a_softmax_across_candidates(model_dir):
    model = _task(model_dir, "multiple_choice", num_classes=3, dropout=0.0)
    contexts = ["the acting was", "i left the cinema"]
    candidates = np.array([["superb", "a pineapple", ""], ["happy", "bored to tears", "after two hours"]], object)
    probabilities = model.predict_proba((contexts, candidates))  # Keras' predict on (contexts, candidates)
    score = lambda k: model((tf.constant(contexts), tf.constant(k.tolist()))).numpy()  # noqa: E731  (eager: no retrace)
    logits = score(candidates)
    assert logits.shape == probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits, axis=1).numpy(), atol=1e-6)
    permutation = [2, 0, 1]
    np.testing.assert_allclose(score(candidates[:, permutation]), logits[:, permutation], atol=1e-6)
    # Each candidate is scored on its own: one candidate alone gets the same score; any K works.
    np.testing.assert_allclose(score(candidates[:, 1:2])[:, 0], logits[:, 1], atol=1e-5)
    assert score(np.concatenate([candidates, candidates[:, :1]], 1)).shape == (2, 4)


def _hand_lm_loss(model, features):
    """The auxiliary loss from numpy: tied-embedding logits, per-sequence mean over real targets, batch mean."""
    hidden = model.backbone(features)["sequence_output"].numpy().astype(np.float64)
    table = model.backbone.token_embedding.embeddings.numpy().astype(np.float64)
    logits = hidden[:, :-1] @ table.T  # [B, T-1, V]
    logits -= logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ids, mask = features["token_ids"].numpy(), features["padding_mask"].numpy()
    nll = -np.take_along_axis(log_probs, ids[:, 1:, None], -1)[..., 0]
    weights = mask[:, 1:] * mask[:, :-1]
    return float(np.mean((nll * weights).sum(1) / weights.sum(1)))


@pytest.mark.parametrize("lm_coef", [0.0, 0.5])
def test_the_auxiliary_lm_loss_is_added_by_lm_coef(model_dir, rt, lm_coef):
    model = _task(model_dir, "classification", lm_coef=lm_coef, dropout=0.0)
    model.compile()
    texts = tf.constant([t for t, _ in rt["train"][:6]])
    labels = np.array([y for _, y in rt["train"][:6]])
    logits = model(texts, training=True)
    total = float(model.compute_loss(texts, labels, logits))
    task_loss = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
    if lm_coef == 0:
        assert model.losses == [] and model.lm_loss_tracker is None
        assert total == task_loss  # exactly the task loss
        return
    hand = _hand_lm_loss(model, model.features(texts))
    assert hand > 1.0
    np.testing.assert_allclose(total, task_loss + 0.5 * hand, rtol=1e-5)
    np.testing.assert_allclose(float(model.lm_loss_tracker.result()), hand, rtol=1e-5)
    model.lm_loss_tracker.reset_state()
    model(texts)  # an inference call computes no auxiliary loss
    assert model.losses == [] and float(model.lm_loss_tracker.count) == 0


def test_fit_lowers_task_and_lm_losses_on_real_text(model_dir, rt):
    model = _task(model_dir, "classification")
    train, dev = rt["train"][:320], rt["dev"][:64]
    steps = 3 * len(train) // 32
    model.compile(optimizer=model.finetune_optimizer(5e-3, total_steps=steps))
    history = model.fit([t for t, _ in train], [y for _, y in train], validation_data=([t for t, _ in dev], [y for _, y in dev]),
                        batch_size=32, epochs=3, verbose=0, shuffle=True).history
    assert {"loss", "accuracy", "lm_loss", "val_loss", "val_accuracy", "val_lm_loss"} <= set(history), sorted(history)
    assert history["loss"][-1] < history["loss"][0] - 0.2, history
    assert history["lm_loss"][-1] < history["lm_loss"][0] - 0.2, history["lm_loss"]
    assert history["val_lm_loss"][-1] < history["val_lm_loss"][0], history["val_lm_loss"]


def test_the_papers_optimizer_recipe(model_dir):
    model = _task(model_dir, "entailment")
    optimizer = model.finetune_optimizer(6.25e-5, total_steps=1000)
    assert optimizer.epsilon == 1e-8 and optimizer.weight_decay == 0.01 and optimizer.global_clipnorm == 1.0
    lr = optimizer._learning_rate  # the schedule: warmup over 0.2 % (2 steps), then linear decay to 0
    assert (lr.warmup_steps, lr.total_steps, lr.peak) == (2, 1000, 6.25e-5)
    assert float(model.default_optimizer().learning_rate) == pytest.approx(6.25e-5)
    with pytest.raises(ValueError, match="transform must be one of"):
        _task(model_dir, "summarization")


_FRESH_ROUND_TRIP = r"""
import json, sys
import keras, numpy as np
import zoo.gpt  # registers the classes
contexts, candidates = json.load(open(sys.argv[3]))
candidates = np.array(candidates, object)
keras_model = keras.saving.load_model(sys.argv[1])
model_dir_model = zoo.load_task(sys.argv[2])
assert keras_model.compiled and keras_model.optimizer.epsilon == 1e-8  # compiled as saved (the paper's Adam)
np.savez(sys.argv[4], keras=keras_model.predict((contexts, candidates), verbose=0),
         model_dir=model_dir_model.predict((contexts, candidates), verbose=0))
"""


def test_keras_and_model_dir_round_trips_in_a_fresh_process(model_dir, tmp_path):
    model = _task(model_dir, "multiple_choice", num_classes=2)
    contexts = ["the acting was", "i left the cinema"]
    candidates = [["superb", "a pineapple"], ["happy", "bored to tears"]]
    model.compile()
    want = model.predict((contexts, np.array(candidates, object)), verbose=0)
    keras_path, ft_dir = str(tmp_path / "mc.keras"), str(tmp_path / "mc_dir")
    model.save(keras_path)
    FAMILY.save_task(model, ft_dir, model.preprocessor.tokenizer, LENGTH)
    spec, out = tmp_path / "inputs.json", tmp_path / "out.npz"
    spec.write_text(json.dumps([contexts, candidates]))
    result = subprocess.run([sys.executable, "-c", _FRESH_ROUND_TRIP, keras_path, ft_dir, str(spec), str(out)],
                            capture_output=True, text=True, env=cli.env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as got:
        np.testing.assert_allclose(got["keras"], want, atol=1e-6)
        np.testing.assert_allclose(got["model_dir"], want, atol=1e-6)
    assert json.load(open(os.path.join(ft_dir, "zoo_config.json")))["task"] == {
        "num_classes": 2, "transform": "multiple_choice", "lm_coef": 0.5, "dropout": 0.1}


def test_finetune_cli_on_multiple_choice_rows(model_dir, rt, tmp_path):
    """trainers.finetune with `context<TAB>candidate_1..K<TAB>label` rows and the transform as a --task_option."""
    rng = np.random.default_rng(0)
    rows = []
    texts = [t for t, _ in rt["train"][:120]]
    for i, text in enumerate(texts):
        words = text.split()
        cut = max(1, len(words) // 2)
        right, wrong = " ".join(words[cut:]), " ".join(texts[(i + 7) % len(texts)].split()[cut:])
        label = int(rng.integers(2))
        rows.append("\t".join([" ".join(words[:cut]), *([right, wrong] if label == 0 else [wrong, right]), str(label)]))
    (tmp_path / "train.tsv").write_text("\n".join(rows[:96]) + "\n")
    (tmp_path / "eval.tsv").write_text("\n".join(rows[96:]) + "\n")
    out = tmp_path / "mc"
    returncode, output = cli.run_trainer(
        "finetune", f"--init={model_dir}", f"--train_file={tmp_path / 'train.tsv'}", f"--eval_file={tmp_path / 'eval.tsv'}",
        f"--model_dir={out}", "--task_option=transform=multiple_choice", "--task_option=lm_coef=0.5", "--sequence_length=32",
        "--batch_size=16", "--epochs=1", "--learning_rate=1e-3", timeout=240)
    assert returncode == 0, cli.tail(output)
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0 and np.isfinite(results["lm_loss"]) and results["examples"] == 24
    model = zoo.load_task(str(out))
    assert isinstance(model, GPTClassifier) and model.transform == "multiple_choice"
    assert model.predict_proba((["the film"], np.array([["was good", "was bad"]], object))).shape == (1, 2)


# ---- exports ------------------------------------------------------------------------------------------------------

# For `choose(candidates [B, K], context [B])`: one batch per string input, in sorted-name order.
CHOICES = [[["superb", "a pineapple", ""], ["\xff bad bytes", "bored to tears", "ok"], ["x", "y", "z"]],
           ["the acting was", "", "naïve café — 東京 🙂 " * 40]]


@pytest.fixture(scope="module", params=["classification", "multiple_choice"])
def exported(request, model_dir, tmp_path_factory):
    """A fine-tuned model dir (as trainers.finetune writes it) through harness.check_export."""
    transform = request.param
    model = _task(model_dir, transform, num_classes=3)
    ft_dir = str(tmp_path_factory.mktemp(f"gpt_{transform}"))
    FAMILY.save_task(model, ft_dir, model.preprocessor.tokenizer, LENGTH)
    keras_model = zoo.load_task(ft_dir, trim=True)
    task_signatures = ("classify", "choose", "serving_default")

    def reference(signature, batches):
        if signature not in task_signatures:
            return {}  # tests/test_gpt_export.py checks encode, score and generate
        inputs = batches[0] if transform == "classification" else (batches[1], np.array(batches[0], object))
        logits = keras_model.predict(inputs, verbose=0)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1).numpy()}

    def compare(signature, got, want):
        if signature not in task_signatures:
            return
        assert sorted(got) == ["logits", "probabilities"], sorted(got)
        for key in want:
            assert got[key].shape == want[key].shape, (signature, key, got[key].shape, want[key].shape)
            diff = float(np.abs(got[key].astype(np.float64) - want[key]).max())
            assert diff <= 1e-5, f"{signature}/{key}: served and Keras outputs differ by {diff:.3g}"

    result = harness.check_export(ft_dir, str(tmp_path_factory.mktemp("export") / transform), reference=reference,
                                  compare=compare, choices=CHOICES,
                                  settings={"max_new_tokens": 3, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0})
    return transform, result


def test_fine_tuned_export_matches_keras_in_a_fresh_process(exported):
    transform, result = exported
    name = "choose" if transform == "multiple_choice" else "classify"
    assert sorted(result["outputs"]) == sorted(["encode", "score", "generate", "generate_with_settings", name, "serving_default"])
    probabilities = result["outputs"][name]["probabilities"]
    if transform == "multiple_choice":
        assert probabilities.shape == (3, 3)  # one per candidate, softmax across them
    else:
        assert probabilities.shape == (len(harness.TEXTS), 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result["outputs"]["serving_default"]["logits"], result["outputs"][name]["logits"])
    empty = result["hostile"]["zero_batch"][name]
    assert empty["probabilities"].dtype == np.float32
    assert empty["probabilities"].shape == ((0, 2) if transform == "multiple_choice" else (0, 3))
    for case, outputs in result["hostile"].items():  # empty strings, invalid UTF-8, 100 KB, control characters
        assert np.isfinite(outputs[name]["logits"]).all(), case


@pytest.mark.parametrize("transform", ["entailment", "similarity"])
def test_pair_endpoints_match_keras_and_take_hostile_input(model_dir, transform):
    """The pair transforms' `classify(text_a, text_b)` (exported the same way as the two above), traced in process."""
    from zoo.gpt.serving import task_endpoint

    model = _task(model_dir, transform, num_classes=3)
    name, endpoint = task_endpoint(model, FAMILY.preprocessor(model.preprocessor.tokenizer, LENGTH, trim=True),
                                   lambda fn, jit_compile=False: fn)
    assert name == "classify" and sorted(endpoint.input_signature[i].name for i in (0, 1)) == ["text_a", "text_b"]
    a, b = harness.PAIRS
    got = endpoint(tf.constant(a), tf.constant(b))
    np.testing.assert_allclose(got["logits"].numpy(), model.predict((a, b), verbose=0), atol=1e-5)
    for case, batch in harness.HOSTILE_INPUTS.items():
        out = endpoint(tf.constant(batch, tf.string, shape=[len(batch)]), tf.constant(batch[::-1], tf.string, shape=[len(batch)]))
        assert out["probabilities"].shape == (len(batch), 3) and np.isfinite(out["logits"].numpy()).all(), case
