"""ELMo's task models through the house's apps (issue 24 item 6): trainers.finetune on per-word tag rows (--labels=word)
whose fine-tuned model dir exports `tag` / `tag_tokens` (plus TF Hub's `default` / `tokens` with the task's learned
mix) and passes the shared harness (op allow-list, fresh process with only tensorflow + tensorflow_text, hostile
input, empty batch, parity with Keras); a fine-tuned classifier's export serves `classify`; the tag TSV reader's
errors. The Keras-level task tests are tests/test_elmo_tasks.py."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
import zoo
from tests import cli_utils as cli
from zoo.data.corpus import rotten_tomatoes_task
from zoo.elmo import ElmoConfig, ElmoTokenizer
from zoo.elmo.embedder import ElmoEmbedder, token_words
from zoo.elmo.tasks import ElmoTagger
from zoo.task import IGNORED_TAG

FAMILY = zoo.family("elmo")
LENGTH = 12  # T: <S>, at most 10 words, </S>
FUNCTION_WORDS = {"the", "a", "an", "of", "and", "to", "is", "it", "in"}
# The `tokens` / `tag_tokens` signatures' rows ([B, K] strings) and the sequence_len each row gets (harness settings).
TOKEN_ROWS = [["The", "movie", "was", "great", "!"], ["naïve", "café", "東京", "🙂", ""], ["\xff bad", "", "x", "y", "z"]]
SEQUENCE_LEN = 4


def word_tags(text):
    """A learnable per-word tagging: 0 function word, 1 punctuation, 2 any other word."""
    return [0 if w.lower() in FUNCTION_WORDS else 1 if not any(c.isalnum() for c in w) else 2 for w in text.split()]


@pytest.fixture(scope="module")
def texts():
    return [" ".join(t.split()[:9]) for t, _ in rotten_tomatoes_task()["train"][:300]]


@pytest.fixture(scope="module")
def model_dir(texts, tmp_path_factory):
    """A converted-style feature model dir (backbone only, vocabulary_size 0): seeded random biLM weights."""
    keras.utils.set_random_seed(3)
    config = ElmoConfig(vocabulary_size=0, filters=((1, 4), (2, 8), (3, 8)), num_highway=1, projection_dim=8,
                        lstm_dim=16, dropout=0.0)
    path = str(tmp_path_factory.mktemp("elmo_features"))
    FAMILY.write_model_dir(path, config, ElmoTokenizer.learn(texts, 300), sequence_length=LENGTH)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=FAMILY.backbone(config))), path,
                               max_to_keep=1).save()
    return path


def _reference(model_dir):
    """(task model, reference(signature, batches)): the Keras task model, and the `ElmoEmbedder` with the task's mix,
    on the same strings as the served signatures."""
    model = zoo.load_task(model_dir, trim=True)
    embedder = ElmoEmbedder.from_model_dir(model_dir)
    pre = model.preprocessor

    def token_features(rows):
        return pre.features(pre.frame(token_words(pre.tokenizer, tf.constant(rows), [SEQUENCE_LEN] * len(rows))))

    def reference(signature, batches):
        tokens = signature in ("tokens", "tag_tokens")
        features = token_features(batches[0]) if tokens else pre(tf.constant(batches[0]))
        if signature in ("default", "tokens"):
            return {k: v.numpy() for k, v in embedder.outputs(features).items()}
        logits = model.logits(features).numpy()
        if not model.per_word:
            return {"logits": logits, "probabilities": tf.nn.softmax(logits).numpy()}
        lengths = features["padding_mask"].numpy().sum(1) - 2
        mask = (np.arange(logits.shape[1])[None] < lengths[:, None]).astype(np.int32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits).numpy() * mask[..., None],
                "tags": np.where(mask, logits.argmax(-1), IGNORED_TAG).astype(np.int32), "mask": mask,
                "sequence_len": mask.sum(1).astype(np.int32)}

    return model, reference


def test_finetune_cli_tags_words_and_its_export_serves_tag(model_dir, texts, tmp_path):
    rows = [f"{t}\t{' '.join(map(str, word_tags(t)))}" for t in texts[:80] if t.strip()]
    (tmp_path / "train.tsv").write_text("\n".join(rows[:64]) + "\n")
    (tmp_path / "eval.tsv").write_text("\n".join(rows[64:]) + "\n")
    out = tmp_path / "tagger"
    returncode, output = cli.run_trainer(
        "finetune", f"--init={model_dir}", f"--train_file={tmp_path / 'train.tsv'}", f"--eval_file={tmp_path / 'eval.tsv'}",
        f"--model_dir={out}", "--labels=word", "--task_option=kind=tagging", "--task_option=encoder_dim=8",
        f"--sequence_length={LENGTH}", "--batch_size=32", "--epochs=1", "--learning_rate=1e-2", timeout=240)
    assert returncode == 0, cli.tail(output)
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0 and results["examples"] == len(rows) - 64
    assert 0.0 < results["majority_class_accuracy"] < 1.0  # the share of the commonest tag among the tagged words
    model, reference = _reference(str(out))
    assert isinstance(model, ElmoTagger) and model.num_classes == 3
    result = harness.check_export(str(out), str(tmp_path / "export"), reference=reference, choices=[TOKEN_ROWS],
                                  settings={"sequence_len": SEQUENCE_LEN}, expect_ops=("StringSplitV2",))
    outputs = result["outputs"]
    assert sorted(outputs) == ["default", "serving_default", "tag", "tag_tokens", "tokens"]
    np.testing.assert_array_equal(outputs["serving_default"]["tags"], outputs["tag"]["tags"])
    assert outputs["tag"]["logits"].shape[::2] == (len(harness.TEXTS), 3)
    assert outputs["tag"]["sequence_len"].tolist() == [min(len(t.split()), LENGTH - 2) for t in harness.TEXTS]
    assert outputs["tag_tokens"]["sequence_len"].tolist() == [SEQUENCE_LEN] * len(TOKEN_ROWS)
    empty = result["hostile"]["zero_batch"]["tag"]
    assert empty["tags"].shape[0] == 0 and empty["tags"].ndim == 2 and empty["probabilities"].ndim == 3
    blank = result["hostile"]["empty_strings"]["tag"]
    assert blank["sequence_len"].tolist() == [0, 0, 0] and (blank["tags"] == IGNORED_TAG).all()


def test_fine_tuned_classifier_export_serves_classify(model_dir, tmp_path):
    """A classifier saved as trainers.finetune saves it -> the export's `classify` (the default signature) equals the
    Keras model's probabilities, on usual and hostile strings and an empty batch."""
    from trainers.common import export_model_dir
    from zoo import export as export_lib

    keras.utils.set_random_seed(2)
    backbone, preprocessor = FAMILY.load_pretrained(model_dir)
    model = FAMILY.task(backbone, preprocessor, 4, pooling="mean_max", encoder_dim=8)
    model.head.mix.scalar_weights.assign([1.0, -0.5, 0.3])
    ft_dir = str(tmp_path / "classifier")
    FAMILY.save_task(model, ft_dir, preprocessor.tokenizer, LENGTH)
    export_dir = export_model_dir(ft_dir, str(tmp_path / "export"))
    assert export_lib.disallowed_ops(export_lib.list_ops(export_dir)) == []
    loaded = tf.saved_model.load(export_dir)
    assert sorted(loaded.signatures) == ["classify", "default", "serving_default", "tokens"]
    keras_model = zoo.load_task(ft_dir, trim=True)
    for case, batch in {"texts": harness.TEXTS, **harness.HOSTILE_INPUTS}.items():
        texts = tf.constant(batch, tf.string, shape=[len(batch)])
        got = loaded.signatures["classify"](text=texts)
        assert sorted(got) == ["logits", "probabilities"] and got["probabilities"].shape == (len(batch), 4), case
        assert got["probabilities"].dtype == tf.float32 and np.isfinite(got["logits"].numpy()).all(), case
        if case in ("texts", "invalid_utf8"):  # the Keras model, eagerly, on the same strings
            want = tf.nn.softmax(keras_model(texts)).numpy()
            np.testing.assert_allclose(got["probabilities"].numpy(), want, atol=1e-5, err_msg=case)
    default = loaded.signatures["serving_default"](text=tf.constant(["a fine film"]))
    np.testing.assert_array_equal(default["logits"].numpy(), loaded.signatures["classify"](text=tf.constant(["a fine film"]))["logits"].numpy())
    # The export's `elmo` uses the task's learned mix.
    mix = {v.name.split(":")[0].split("/")[-1]: v.numpy() for v in loaded.head}
    np.testing.assert_allclose(mix["scalar_weights"], [1.0, -0.5, 0.3])


def test_tag_rows_are_read_with_clear_errors(tmp_path):
    from trainers.finetune import read_tags_tsv

    good = tmp_path / "good.tsv"
    good.write_text("John lives in Paris\t1 0 0 2\n\nhi\t-1\n")
    assert read_tags_tsv(str(good)) == [("John lives in Paris", [1, 0, 0, 2]), ("hi", [-1])]
    for text, match in (("a b c\t0 1\n", "3 words but 2 tags"), ("a b\tB-PER O\n", "integers"), ("a\t1\textra\n", "expected"),
                        ("a b\t0 -3\n", "not a tag id"), ("\n", "no rows")):
        bad = tmp_path / "bad.tsv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_tags_tsv(str(bad))
