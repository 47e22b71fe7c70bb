"""ELMo's family wiring at tiny size: the bilm_sentences objective (windows, features, records), the preprocessor,
the shared softmax (sampled in training, full in evaluation) against independent computations, and the shared
harness (Keras contract, pretraining on the real corpus with loss falling and exact resume); then
trainers.pretrain + trainers.evaluate on the tiny flagfile. The backbone itself: tests/test_elmo_model.py."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import cli_utils as cli
import harness
import zoo
from zoo.data import objectives, pipeline, schema, sentences
from zoo.data.corpus import imdb_documents
from zoo.elmo import ElmoConfig, ElmoLanguageModel, ElmoPreprocessor, ElmoTokenizer
from zoo.elmo.chars import word_char_ids
from zoo.layers.sampled_softmax import (log_uniform_candidates, log_uniform_probabilities,
                                        sampled_softmax_cross_entropy)

FAMILY = zoo.family("elmo")
OBJECTIVE = objectives.get(FAMILY.objective)
CONFIG = ElmoConfig(vocabulary_size=40, filters=((1, 8), (2, 8), (3, 16)), num_highway=1, projection_dim=16,
                    lstm_dim=32, dropout=0.0, max_characters_per_token=50, max_sequence_length=20, num_samples=16)
WORDS = ["<S>", "</S>", "<UNK>"] + "the film was a good bad one and i it".split()


@pytest.fixture(scope="module")
def tokenizer():
    return ElmoTokenizer(WORDS)


def _features(tokenizer, texts=("the film was good", "a bad one", "i liked it and the film was good"), length=10):
    return ElmoPreprocessor(tokenizer, length)(tf.constant(list(texts)))


@pytest.fixture(scope="module")
def model(tokenizer):
    tf.keras.utils.set_random_seed(5)
    return FAMILY.pretrainer(CONFIG.replace(vocabulary_size=tokenizer.vocabulary_size))


# ---- data --------------------------------------------------------------------------------------------------------

def test_windows_frame_sentences_and_cut_long_ones_with_one_shared_position(tokenizer):
    corpus = sentences.split_words(["the film", "", "a b c d e f g"], tokenizer)
    table = corpus.words
    assert table[:3] == [b"", b"<S>", b"</S>"]
    windows = sentences.windows(corpus, 5)
    words = [[table[i].decode() for i in row] for row in windows]
    assert words == [["<S>", "the", "film", "</S>", ""],  # short: one padded window; the empty sentence: none
                     ["<S>", "a", "b", "c", "d"], ["d", "e", "f", "g", "</S>"]]  # long: windows share 'd'
    # Every neighbouring pair of the long sentence is in exactly one window.
    pairs = [(row[i], row[i + 1]) for row in words[1:] for i in range(4) if row[i + 1]]
    assert pairs == list(zip(["<S>"] + list("abcdefg"), list("abcdefg") + ["</S>"]))
    assert sentences.windows(corpus, 2).shape == (3 + 8, 2)  # T = 2: one window per pair of neighbours


def test_objective_batches_are_static_with_char_ids_of_the_words_themselves(tokenizer):
    settings = OBJECTIVE.Settings(sequence_length=6)
    tokenized = OBJECTIVE.tokenize([["the film was good", "unseen words here"], ["a"]], tokenizer)
    assert OBJECTIVE.count_tokens(tokenized, tokenizer) == (8, 3)
    examples = OBJECTIVE.prepare(tokenized, tokenizer, settings, seed=0)
    batch = next(iter(OBJECTIVE.dataset(examples, tokenizer, settings, batch_size=3, seed=0, training=False)))
    spec = schema.bilm_window_spec(6, 50)
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {k: ((3, *s.shape), s.dtype) for k, s in spec.items()}
    ids, mask = batch["token_ids"].numpy(), batch["padding_mask"].numpy()
    special = tokenizer.special_ids
    assert ids[0].tolist() == [special["bos"]] + [tokenizer.token_to_id(w) for w in "the film was good".split()] + [special["eos"]]
    assert ids[1].tolist() == [special["bos"], 2, 2, 2, special["eos"], 0] and mask[1].tolist() == [1] * 5 + [0]
    # Out-of-vocabulary words are <UNK> for the softmax but keep their characters for the CNN.
    np.testing.assert_array_equal(batch["char_ids"][1, 1:4], word_char_ids(tf.constant(["unseen", "words", "here"])))
    np.testing.assert_array_equal(batch["char_ids"][1, 5], np.zeros(50))
    # Training batches: shuffled, repeated, the same static shapes.
    train = OBJECTIVE.dataset(examples, tokenizer, settings, batch_size=2, seed=0)
    assert [tuple(b["char_ids"].shape) for b in train.take(4)] == [(2, 6, 50)] * 4


def test_records_hold_the_same_features(tokenizer, tmp_path):
    settings = OBJECTIVE.Settings(sequence_length=6)
    tokenized = OBJECTIVE.tokenize([["the film was good and it was a good one", "a b"]], tokenizer)
    paths, count = OBJECTIVE.write_records(tokenized, tokenizer, settings, output_pattern=str(tmp_path / "train-*.tfrecord"),
                                           num_shards=2, seed=1)
    assert count == 4 and len(paths) == 2
    read = pipeline.dataset_from_records(str(tmp_path / "train-*.tfrecord"), schema.bilm_window_spec(6, 50), batch_size=4,
                                         shuffle=False, repeat=False)
    from_records = next(iter(read))
    examples = OBJECTIVE.prepare(tokenized, tokenizer, settings, seed=0)
    direct = next(iter(OBJECTIVE.dataset(examples, tokenizer, settings, batch_size=4, seed=0, training=False)))
    order = lambda b: sorted(map(tuple, b["token_ids"].numpy().tolist()))  # noqa: E731 (records are shuffled)
    assert order(from_records) == order(direct)
    assert OBJECTIVE.records_dataset(str(tmp_path / "train-*.tfrecord"), settings, batch_size=2, seed=0).element_spec[
        "char_ids"].shape == (2, 6, 50)


def test_preprocessor_layout_truncation_trim_and_hostile_input(tokenizer):
    pre = ElmoPreprocessor(tokenizer, 5)
    out = pre(tf.constant(["the film was good indeed", "", b"\xff\xfe \xf0\x9f\x99\x82"]))
    special = tokenizer.special_ids
    film = tokenizer.token_to_id("film")
    assert out["token_ids"].numpy().tolist() == [[special["bos"], 3, film, tokenizer.token_to_id("was"), special["eos"]],
                                                 [special["bos"], special["eos"], 0, 0, 0],
                                                 [special["bos"], 2, 2, special["eos"], 0]]
    assert out["padding_mask"].numpy().sum(1).tolist() == [5, 2, 4]
    np.testing.assert_array_equal(out["char_ids"][2, 1], word_char_ids(tf.constant(b"\xff\xfe")))
    assert out["char_ids"].shape == (3, 5, 50) and out["char_ids"].dtype == tf.int32
    trimmed = ElmoPreprocessor(tokenizer, 64, trim=True)(tf.constant(["a film", ""]))
    assert trimmed["token_ids"].shape == (2, 4) and trimmed["char_ids"].shape == (2, 4, 50)
    assert ElmoPreprocessor(tokenizer, 64, trim=True)(tf.constant([], tf.string))["char_ids"].shape == (0, 1, 50)


# ---- the softmax -------------------------------------------------------------------------------------------------

def _numpy_sampled_loss(h, w, b, labels, sampled, true_expected, sampled_expected):
    h, w, b = (np.asarray(x, np.float64) for x in (h, w, b))
    true = np.sum(h * w[labels], 1) + b[labels] - np.log(true_expected[:, 0])
    neg = h @ w[sampled].T + b[sampled] - np.log(sampled_expected)[None]
    neg[labels[:, None] == sampled[None, :]] = -np.inf  # accidental hits
    logits = np.concatenate([true[:, None], neg], 1)
    top = logits.max(1, keepdims=True)
    return (top[:, 0] + np.log(np.exp(logits - top).sum(1))) - true


def test_sampled_softmax_equals_tf_and_an_independent_computation():
    rng = np.random.default_rng(0)
    v, p, n, s = 300, 8, 40, 32
    w, b, h = (rng.normal(size=shape).astype(np.float32) for shape in ((v, p), (v,), (n, p)))
    labels = np.concatenate([rng.integers(0, v, n - 4), [0, 1, 2, 3]])  # frequent classes: accidental hits
    values = log_uniform_candidates(labels, s, v, tf.constant([3, 4]))
    sampled, true_expected, sampled_expected = (x.numpy() for x in values)
    assert sampled.min() >= 0 and sampled.max() < v
    np.testing.assert_allclose(sampled_expected, s * np.log1p(1 / (sampled + 1.0)) / np.log(v + 1), rtol=1e-5)
    got = sampled_softmax_cross_entropy(tf.constant(h), w, b, labels, values).numpy()
    np.testing.assert_allclose(got, _numpy_sampled_loss(h, w, b, labels, sampled, true_expected, sampled_expected), rtol=1e-5)
    # TF's own loss agrees wherever a row's label is sampled at most once (with a repeated hit it removes only one).
    want = tf.nn.sampled_softmax_loss(w, b, labels[:, None], h, s, v, sampled_values=values).numpy()
    once = (labels[:, None] == sampled[None, :]).sum(1) <= 1
    assert (labels[:, None] == sampled[None, :]).any(1).sum() > 0, "no accidental hit: the check would prove little"
    np.testing.assert_allclose(got[once], want[once], rtol=1e-5)
    # XLA compiles it (tf.nn.sampled_softmax_loss's ComputeAccidentalHits does not).
    compiled = tf.function(lambda h: sampled_softmax_cross_entropy(h, w, b, labels, values), jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(h)).numpy(), got, rtol=1e-5)


def test_log_uniform_draws_follow_their_distribution():
    v = 50
    draws = log_uniform_candidates(np.zeros([1], np.int64), 200_000, v, tf.constant([1, 2]))[0].numpy()
    q = log_uniform_probabilities(tf.range(v), v).numpy()
    assert abs(q.sum() - 1) < 1e-5
    np.testing.assert_allclose(np.bincount(draws, minlength=v) / len(draws), q, atol=3e-3)


def test_full_softmax_loss_equals_a_hand_computation(model, tokenizer):
    features = _features(tokenizer)
    terms = model.loss_terms(features, training=False)
    out = model.backbone(features)
    w, b = model.softmax_weights.numpy().astype(np.float64), model.softmax_bias.numpy().astype(np.float64)
    ids, mask = features["token_ids"].numpy(), features["padding_mask"].numpy()
    totals = {"forward": 0.0, "backward": 0.0}
    count = 0
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        for t in range(n - 1):
            count += 1
            for direction, position, target in (("forward", t, ids[row, t + 1]), ("backward", t + 1, ids[row, t])):
                logits = out[f"{direction}_layers"][-1][row, position].numpy() @ w.T + b
                totals[direction] += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[target]
    for direction in totals:
        total, n = terms[f"{direction}_lm_loss"]
        assert float(n) == count
        np.testing.assert_allclose(float(total), totals[direction], rtol=1e-5)
    np.testing.assert_allclose(float(terms["average_lm_loss"][0]), 0.5 * sum(totals.values()), rtol=1e-5)
    # `call`'s logits are the same softmax.
    logits = model(features)["forward_logits"].numpy()
    np.testing.assert_allclose(logits[0, 0], out["forward_layers"][-1][0, 0].numpy() @ w.T + b, atol=1e-5)


def test_sampled_loss_in_expectation():
    # With log-Q corrected logits the sampled loss of a row is, in expectation over the draws (up to the small
    # Jensen gap of the log), log(exp(l_y) + S Q(y) Z_-y) - l_y, where Z_-y sums exp(l_c) over the other classes:
    # the full softmax's loss exactly where S Q(y) = 1, above it for frequent words and below for rare ones.
    # That is why perplexities are measured with the full softmax.
    rng = np.random.default_rng(1)
    v, p, n, s = 200, 8, 30, 400
    w, b, h = (rng.normal(scale=0.5, size=shape).astype(np.float32) for shape in ((v, p), (v,), (n, p)))
    labels = rng.integers(0, v, n)
    draws = [sampled_softmax_cross_entropy(tf.constant(h), w, b, labels,
                                           log_uniform_candidates(labels, s, v, tf.constant([seed, 0]))).numpy()
             for seed in range(40)]
    logits = h.astype(np.float64) @ w.T + b
    true = logits[np.arange(n), labels]
    others = np.exp(logits).sum(1) - np.exp(true)
    sq = s * log_uniform_probabilities(labels, v).numpy()
    expected = np.log(np.exp(true) + sq * others) - true
    np.testing.assert_allclose(np.mean(draws, 0), expected, rtol=0.03)
    full = np.log(np.exp(true) + others) - true
    assert np.abs(expected - full)[np.abs(np.log(sq)) < 0.05].max(initial=0) < 0.05 * full.max()
    assert FAMILY.pretrainer(CONFIG.replace(vocabulary_size=10)).num_samples == 9  # at most V - 1 negatives


def test_the_gradient_is_scaled_by_the_predictions_per_row_and_the_value_is_not(tokenizer):
    features = _features(tokenizer)
    config = CONFIG.replace(vocabulary_size=tokenizer.vocabulary_size)
    results = []
    for scale in (True, False):
        tf.keras.utils.set_random_seed(2)
        lm = ElmoLanguageModel(FAMILY.backbone(config), scale_gradient=scale)
        lm.build()
        with tf.GradientTape() as tape:
            total, _ = lm.loss_terms(features, training=True)["average_lm_loss"]
        results.append((float(total), tf.convert_to_tensor(tape.gradient(total, lm.softmax_bias)).numpy()))
    (scaled_value, scaled), (value, plain) = results
    np.testing.assert_allclose(scaled_value, value, rtol=1e-6)
    np.testing.assert_allclose(scaled, plain * (features["token_ids"].shape[1] - 1), rtol=1e-4, atol=1e-7)


def test_training_and_evaluation_losses_compile_with_xla(tokenizer):
    # A TPU step is one XLA program: the sampled softmax, its draws and the full softmax must all compile.
    lm = FAMILY.pretrainer(CONFIG.replace(vocabulary_size=tokenizer.vocabulary_size, dropout=0.1))
    features = _features(tokenizer)

    @tf.function(jit_compile=True)
    def step(features):
        with tf.GradientTape() as tape:
            total, count = lm.loss_terms(features, training=True)["average_lm_loss"]
        return total / count, tape.gradient(total, lm.trainable_variables)

    loss, grads = step(features)
    assert np.isfinite(float(loss)) and all(g is not None for g in grads)
    evaluate = tf.function(lambda f: lm.loss_terms(f)["forward_lm_loss"], jit_compile=True)
    np.testing.assert_allclose(float(evaluate(features)[0]), float(lm.loss_terms(features)["forward_lm_loss"][0]), rtol=1e-5)


def test_each_direction_sees_only_its_side(model, tokenizer):
    features = _features(tokenizer, ["the film was a good one and i"], length=10)
    base = model(features)
    changed = dict(features, char_ids=tf.tensor_scatter_nd_update(features["char_ids"], [[0, 4]], word_char_ids(tf.constant(["bad"]))))
    out = model(changed)
    fwd, bwd = (np.abs(out[k] - base[k]).max(-1)[0] for k in ("forward_logits", "backward_logits"))
    assert fwd[:4].max() < 1e-6 < fwd[4], fwd  # the forward LM at t < 4 never saw word 4
    assert bwd[5:].max() < 1e-6 < bwd[4], bwd  # the backward LM at t > 4 never saw it


# ---- the harness and the family ------------------------------------------------------------------------------------

def test_language_model_keeps_the_keras_contract(model, tokenizer, tmp_path):
    harness.check_layer_contract(model, _features(tokenizer), tmp_dir=str(tmp_path))


def test_pretraining_learns_and_resumes_exactly_on_the_real_corpus(tmp_path):
    documents = imdb_documents()[:300]
    tokenizer = FAMILY.Tokenizer.learn([s for d in documents for s in d], 2000)
    settings = OBJECTIVE.Settings(sequence_length=20)
    examples = OBJECTIVE.prepare(OBJECTIVE.tokenize(documents, tokenizer), tokenizer, settings, seed=0)
    config = CONFIG.replace(vocabulary_size=tokenizer.vocabulary_size, num_samples=256, dropout=0.1)

    def dataset_fn(ctx):
        return OBJECTIVE.dataset(examples, tokenizer, settings, batch_size=16, seed=1, input_context=ctx)

    # The sampled loss starts near log(V) + a little (7.6 + ~1); 60 steps of Adagrad 0.2 must get well below log(V).
    history = harness.check_pretrainer_learns(FAMILY, config, dataset_fn, 60, str(tmp_path / "run"), 16, learning_rate=0.2,
                                              weight_decay=0.0, steps_per_loop=10, resume_at=10, resume_steps=10,
                                              max_final_loss=np.log(tokenizer.vocabulary_size) - 0.5)
    assert {"forward_lm_loss", "backward_lm_loss", "average_lm_loss"} <= set(history[-1])


def test_family_samples_fill_the_blank_with_words(model, tokenizer):
    samples = FAMILY.samples(model, FAMILY.preprocessor(tokenizer, 20), ["the film was ___ .", "a good", "x " * 30 + "___"])
    assert len(samples["the film was ___ ."]) == 5 and len(samples["a good"]) == 5
    assert not {"<S>", "</S>", "<UNK>"} & set(samples["the film was ___ ."] + samples["a good"])
    assert samples["x " * 30 + "___"] == []  # the blank was cut off at the sequence length
    assert zoo.FAMILIES["elmo"] == "zoo.elmo" and FAMILY.objective == "bilm_sentences" and FAMILY.optimizer == "adagrad"


def test_pretrain_and_evaluate_apps_on_the_tiny_flagfile(tmp_path):
    model_dir = str(tmp_path / "elmo")
    code, output = cli.run_trainer("pretrain", "--flagfile=tpu_configs/elmo_tiny_cpu.cfg", f"--model_dir={model_dir}",
                                   "--max_documents=400", "--vocab_size=3000", "--train_steps=40", "--log_every=20",
                                   "--steps_per_loop=20", "--checkpoint_every=40", timeout=180)
    assert code == 0, cli.tail(output)
    history = cli.read_history(model_dir)
    assert sorted(history) == [20, 40] and history[40]["average_lm_loss"] < history[20]["average_lm_loss"]
    with open(os.path.join(model_dir, "zoo_config.json")) as f:
        config = json.load(f)
    assert config["family"] == "elmo" and config["tokenizer"]["lowercase"] is False
    assert config["objective"] == {"name": "bilm_sentences", "sequence_length": 20, "max_characters_per_token": 50}
    with open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8") as f:
        assert f.read().split("\n")[:3] == ["<S>", "</S>", "<UNK>"]

    code, output = cli.run_trainer("evaluate", f"--model_dir={model_dir}", "--default_corpus", "--skip_documents=24000",
                                   "--max_documents=100", "--max_batches=5", timeout=120)
    assert code == 0, cli.tail(output)
    with open(os.path.join(model_dir, "eval_results.json")) as f:
        results = json.load(f)
    for direction in ("forward", "backward", "average"):
        perplexity = results[f"{direction}_lm_perplexity"]
        assert 1 < perplexity < 3000 and np.isclose(perplexity, np.exp(results[f"{direction}_lm_loss"]), rtol=1e-6)
    assert np.isclose(results["average_lm_loss"], (results["forward_lm_loss"] + results["backward_lm_loss"]) / 2, rtol=1e-6)
    assert results["eval_batches"] == 5 and len(results["samples"]) == len(FAMILY.default_samples)
