"""ELMo's task models (issue 24 item 6, zoo/elmo/tasks.py): a sentence classifier and a per-word tagger on the
frozen biLM with a jointly learned scalar mix (or the top layer only), fit/evaluate/predict on Python strings, tag
loss and accuracy that ignore padding, .keras and model-dir round trips, clear errors for bad labels.
trainers.finetune and the fine-tuned exports: tests/test_elmo_finetune.py."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.data.corpus import rotten_tomatoes_task
from zoo.elmo import ElmoConfig, ElmoTokenizer
from zoo.elmo.tasks import ElmoClassifier, ElmoTagger
from zoo.task import IGNORED_TAG, TagAccuracy, TagCrossEntropy, pad_tags

FAMILY = zoo.family("elmo")
LENGTH = 12  # T: <S>, at most 10 words, </S>
FUNCTION_WORDS = {"the", "a", "an", "of", "and", "to", "is", "it", "in"}


def word_tags(text):
    """A learnable per-word tagging: 0 function word, 1 punctuation, 2 any other word."""
    return [0 if w.lower() in FUNCTION_WORDS else 1 if not any(c.isalnum() for c in w) else 2 for w in text.split()]


@pytest.fixture(scope="module")
def texts():
    return [" ".join(t.split()[:9]) for t, _ in rotten_tomatoes_task()["train"][:600]]


@pytest.fixture(scope="module")
def sentiment(texts):
    """64 real sentences, labelled by a rule a random biLM's features can learn fast: does "the" occur?"""
    return texts[:64], [int("the" in t.lower().split()) for t in texts[:64]]


@pytest.fixture(scope="module")
def model_dir(texts, tmp_path_factory):
    """A converted-style feature model dir (backbone only, vocabulary_size 0): seeded random biLM weights."""
    keras.utils.set_random_seed(3)
    tokenizer = ElmoTokenizer.learn(texts, 300)
    config = ElmoConfig(vocabulary_size=0, filters=((1, 4), (2, 8), (3, 8)), num_highway=1, projection_dim=8,
                        lstm_dim=16, dropout=0.0)
    path = str(tmp_path_factory.mktemp("elmo_features"))
    FAMILY.write_model_dir(path, config, tokenizer, sequence_length=LENGTH)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=FAMILY.backbone(config))), path,
                               max_to_keep=1).save()
    return path


def _task(model_dir, kind="classification", num_classes=2, seed=1, **options):
    keras.utils.set_random_seed(seed)
    backbone, preprocessor = FAMILY.load_pretrained(model_dir)
    return FAMILY.task(backbone, preprocessor, num_classes, kind=kind, encoder_dim=8, **options)


def _bilm_weights(model):
    return [v.numpy().copy() for v in model.backbone.weights if "seed_generator" not in v.path]


@pytest.mark.parametrize("kind", ["classification", "tagging"])
def test_fit_lowers_the_loss_with_the_bilm_frozen_and_the_mix_learned(model_dir, sentiment, kind):
    texts, labels = sentiment
    if kind == "tagging":
        labels = [word_tags(t) for t in texts]
    model = _task(model_dir, kind, num_classes=2 if kind == "classification" else 3, dropout=0.1)
    assert isinstance(model, ElmoClassifier if kind == "classification" else ElmoTagger)
    model.compile(optimizer=model.finetune_optimizer(2e-2))
    head = model.head
    # Only the head trains: no biLM weight is trainable; the mix weights and gamma are.
    bilm = {id(v) for v in model.backbone.weights}
    assert model.trainable_variables and not any(id(v) in bilm for v in model.trainable_variables)
    assert {id(head.mix.scalar_weights), id(head.mix.gamma)} <= {id(v) for v in model.trainable_variables}
    # Gradients: the mix weights and gamma get them; the biLM gets none (stop_gradient), even if it were trainable.
    bilm_variables = [v.value for v in model.backbone.weights]  # the tf.Variables, watched though not trainable
    with tf.GradientTape() as tape:
        tape.watch(bilm_variables)
        loss = model.compute_loss(y=model._labels(labels) if kind == "tagging" else np.asarray(labels),
                                  y_pred=model(tf.constant(texts), training=True))
    grads = tape.gradient(loss, [head.mix.scalar_weights, head.mix.gamma] + bilm_variables)
    assert np.abs(grads[0].numpy()).sum() > 0 and abs(float(grads[1])) > 0
    assert all(g is None for g in grads[2:])

    before_weights = _bilm_weights(model)
    losses = model.fit(texts, labels, batch_size=16, epochs=20, verbose=0).history["loss"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    after = model.evaluate(texts, labels, verbose=0, return_dict=True)
    assert after.keys() >= {"loss", "accuracy"} and after["loss"] < losses[0]
    for a, b in zip(before_weights, _bilm_weights(model)):
        np.testing.assert_array_equal(a, b)  # frozen
    assert np.abs(head.mix.scalar_weights.numpy()).max() > 0 and float(head.mix.gamma.numpy()) != 1.0  # learned
    # predict on Python strings.
    if kind == "classification":
        assert model.predict_proba(["a wonderful film", "dull"]).shape == (2, 2)
    else:
        assert model.predict(["a wonderful film", "dull"], verbose=0).shape == (2, LENGTH - 2, 3)
        assert [len(t) for t in model.predict_tags(["the film , dull", "x " * 30])] == [4, LENGTH - 2]


def test_top_layer_option_reads_only_the_top_layer(model_dir):
    model = _task(model_dir, layers="top", num_classes=3)
    everything = _task(model_dir, layers="all", num_classes=3)
    assert model.head.mix.num_representations == 1 and everything.head.mix.num_representations == 3
    assert model.feature_mix() is None and everything.feature_mix() is everything.head.mix
    features = model.preprocessor(tf.constant(["the film was great", "dull , dull"]))
    layers = model.backbone(features)["layers"]
    inputs = {"token_ids": features["token_ids"], "padding_mask": features["padding_mask"]}
    noise = [tf.random.normal(tf.shape(h)) for h in layers[:-1]]
    for head, changes in ((model.head, False), (everything.head, True)):
        clean = head({**inputs, "layers": layers}).numpy()
        noisy = head({**inputs, "layers": noise + layers[-1:]}).numpy()
        assert (np.abs(clean - noisy).max() > 1e-4) == changes
    # The top-only mix is gamma times the top layer.
    np.testing.assert_allclose(model.head.mix(layers[-1:]).numpy(), layers[-1].numpy(), atol=1e-6)
    assert model.task_config()["layers"] == "top"


def test_tag_loss_and_accuracy_ignore_padding(model_dir):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4)).astype(np.float32)
    tags = [[1, 2, 3], [0], [3, 3, IGNORED_TAG, 1, 0]]
    real = [(i, j) for i, row in enumerate(tags) for j, t in enumerate(row) if t != IGNORED_TAG]
    log_probs = tf.nn.log_softmax(logits).numpy()
    want_loss = -np.mean([log_probs[i, j, tags[i][j]] for i, j in real])
    want_accuracy = np.mean([logits[i, j].argmax() == tags[i][j] for i, j in real])
    scrambled = logits.copy()
    scrambled[0, 3:], scrambled[1, 1:], scrambled[2, 2] = 50.0, -50.0, 9.0  # padding (and the untagged word) changed
    for labels in (pad_tags(tags), pad_tags(tags, width=9), pad_tags(tags, width=2)[:, :2]):
        for values in (logits, scrambled):
            loss = float(TagCrossEntropy()(labels, values))
            metric = TagAccuracy()
            metric.update_state(labels, values)
            if labels.shape[1] >= 5:
                assert abs(loss - want_loss) < 1e-5 and abs(float(metric.result()) - want_accuracy) < 1e-6
    # In the model: a sentence's logits do not depend on the padding its batch gives it, and are 0 past its words.
    tagger = _task(model_dir, "tagging", num_classes=3)
    sentences = ["the film , dull", "great", "a b c d e f g h i j k l"]  # the last is cut to T - 2 words
    batch = tagger.predict(sentences, verbose=0)
    counts = [4, 1, LENGTH - 2]
    for i, (text, n) in enumerate(zip(sentences, counts)):
        np.testing.assert_allclose(batch[i, :n], tagger.predict([text], verbose=0)[0, :n], atol=1e-5)
        assert not batch[i, n:].any()
    labels = [word_tags(t) for t in sentences]
    tagger.compile()
    loss = tagger.loss(pad_tags(labels, tagger.max_words), tf.constant(batch))  # the compiled loss: TagCrossEntropy
    log_probs = tf.nn.log_softmax(batch).numpy()
    want = -np.mean([log_probs[i, j, labels[i][j]] for i, n in enumerate(counts) for j in range(min(n, len(labels[i])))])
    assert abs(float(loss) - want) < 1e-5


@pytest.mark.parametrize("kind", ["classification", "tagging"])
def test_keras_and_model_dir_round_trips_give_identical_predictions(model_dir, kind, tmp_path):
    model = _task(model_dir, kind, num_classes=3, layers="all", do_layer_norm=True)
    model.compile()
    model.head.mix.scalar_weights.assign([0.5, -1.0, 2.0])  # a mix as training leaves it, not the even start
    model.head.mix.gamma.assign(0.7)
    probe = ["the film was great", "", "naïve 東京 🙂 , dull"]
    want = model.predict(probe, verbose=0)
    model.save(str(tmp_path / "task.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "task.keras"))
    FAMILY.save_task(model, str(tmp_path / "dir"), model.preprocessor.tokenizer, LENGTH)
    reloaded = zoo.load_task(str(tmp_path / "dir"))
    for other in (loaded, reloaded):
        assert type(other) is type(model) and not other.backbone.trainable
        # Still frozen: the same trainable variables (the head's), none of the biLM's.
        assert [v.path.split("/", 1)[1] for v in other.trainable_variables] == \
            [v.path.split("/", 1)[1] for v in model.trainable_variables]
        np.testing.assert_array_equal(other.predict(probe, verbose=0), want)
    assert type(loaded.loss) is type(model.loss)  # the compile defaults survive the .keras file
    np.testing.assert_array_equal(reloaded.head.mix.scalar_weights.numpy(), [0.5, -1.0, 2.0])
    config = json.loads((tmp_path / "dir" / "zoo_config.json").read_text())["task"]
    assert config["kind"] == kind and config["num_classes"] == 3 and config["do_layer_norm"] is True


def test_bad_labels_and_options_give_clear_errors(model_dir):
    classifier = _task(model_dir, num_classes=2)
    classifier.compile()
    texts = ["a film", "dull , dull"]
    for labels, match in (([0, 2], "outside 0..1"), ([0], "2 texts but 1 labels"), (["pos", "neg"], "integer ids"),
                          ([[0, 1], [1, 0]], "one id per text")):
        with pytest.raises(ValueError, match=match):
            classifier.fit(texts, labels, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="outside 0..1"):
        classifier.fit(texts, [0, 1], validation_data=(texts, [0, 5]), epochs=1, verbose=0)
    tagger = _task(model_dir, "tagging", num_classes=3)
    tagger.compile()
    for tags, match in (([[2, 2], [0]], "Sentence 1 has 3 words but 1 tags"), ([[2, 3], [0, 1, 0]], "Tag 3 of word 1"),
                        ([[2, 2], [0, -2, 0]], "Tag -2"), ([[2, 2]], "2 sentences but 1 rows"),
                        (np.array([[2, 2, 1], [0, 1, 0]]), "Sentence 0 has 2 words but a tag at word 2"),
                        ([["B-PER", "O"], ["O", "O", "O"]], "not integer tag ids")):
        with pytest.raises(ValueError, match=match):
            tagger.fit(texts, tags, epochs=1, verbose=0)
    tagger.evaluate(texts, np.array([[2, 2, -1], [0, 1, 0]]), verbose=0)  # dense rows padded with -1 are fine
    with pytest.raises(ValueError, match="kind must be one of"):
        FAMILY.task(classifier.backbone, classifier.preprocessor, 2, kind="parsing")
    with pytest.raises(ValueError, match="layers must be one of"):
        FAMILY.task(classifier.backbone, classifier.preprocessor, 2, layers="middle")
