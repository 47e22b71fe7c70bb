"""Pretraining on the real corpus lowers the loss; the pretrained model fine-tunes in a few lines of Keras."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras

import harness
import zoo
from zoo.bert import BertClassifier, BertConfig, write_model_dir
from zoo.data import instances, pipeline
from zoo.data.corpus import imdb_documents, rotten_tomatoes_task
from zoo.text.wordpiece import WordPieceTokenizer


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, real_vocabulary):
    """Trains a small BERT for 80 steps on 400 real IMDB reviews (and 20 more to check resuming); returns
    (model_dir, history)."""
    keras.utils.set_random_seed(0)
    model_dir = str(tmp_path_factory.mktemp("pretrained"))
    tokenizer = WordPieceTokenizer(real_vocabulary)
    ids = pipeline.tokenize_documents(imdb_documents()[:400], tokenizer)
    pairs = instances.stack_instances(instances.create_pair_instances(ids, vocabulary=real_vocabulary, sequence_length=64, seed=1))
    specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.unknown_id]

    def dataset_fn(ctx):
        return pipeline.dynamic_masking_dataset(pairs, batch_size=32, vocabulary_size=len(real_vocabulary), mask_id=tokenizer.mask_id, special_ids=specials, max_predictions=10, seed=2)

    config = BertConfig(vocabulary_size=len(real_vocabulary), num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128, max_sequence_length=64, dropout=0.0)
    write_model_dir(model_dir, config, real_vocabulary, sequence_length=64)
    # harness.check_pretrainer_learns: the zoo loop with BERT's recipe (AdamW, warmup 10, linear decay over 80
    # steps) lowers the loss, and a run stopped at step 10 and resumed to 20 in the same model dir retraces it.
    # A fresh model's loss is about log(V) + log(2) = 7.09 (uniform guesses); 80 steps must get well below it.
    history = harness.check_pretrainer_learns(
        zoo.family("bert"), config, dataset_fn, 80, model_dir, 32, learning_rate=2e-3, warmup_steps=10, steps_per_loop=10,
        log_every=20, tokens_per_step=32 * 64, max_final_loss=np.log(600) + np.log(2) - 0.6, resume_at=10, resume_steps=10)
    return model_dir, history


def test_loss_falls_on_real_corpus(pretrained):
    _, history = pretrained  # the harness checked the fall and the resume
    losses = [h["loss"] for h in history]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert os.path.exists(os.path.join(pretrained[0], "train", os.listdir(os.path.join(pretrained[0], "train"))[0]))


def test_finetune_in_a_few_lines(pretrained, tmp_path):
    model_dir, _ = pretrained
    task = rotten_tomatoes_task(seed=0)
    train = task["train"][:3000]
    test = task["test"][:600]
    to_ds = lambda rows: tf.data.Dataset.from_tensor_slices(([t for t, _ in rows], [y for _, y in rows])).batch(32)  # noqa: E731

    # The user-facing recipe: load, compile, fit, evaluate, predict.
    model = BertClassifier.from_model_dir(model_dir, num_classes=2, sequence_length=48)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(to_ds(train).shuffle(100, seed=0), epochs=3, verbose=0)
    accuracy = model.evaluate(to_ds(test), return_dict=True, verbose=0)["accuracy"]
    probabilities = model.predict_proba(np.array(["a wonderful, moving film", "boring and awful"], object))

    majority = max(np.mean([y for _, y in test]), 1 - np.mean([y for _, y in test]))
    assert accuracy > majority + 0.05, (accuracy, majority)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    # Pair inputs go through the same model.
    assert model.predict((np.array(["good"], object), np.array(["bad"], object)), verbose=0).shape == (1, 2)
