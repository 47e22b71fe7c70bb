"""Every check of tests/harness.py can fail: each is fed a deliberately broken object (and a sound one, so the
failure is the break's, not the set-up's)."""

import numpy as np
import pytest
import tensorflow as tf

import keras

import harness
from zoo.bert import BertBackbone, BertConfig
from zoo.bert.family import BertFamily
from zoo.export import ExportError

TINY = BertConfig(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)


# ---- check_layer_contract ----------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="zoo.tests")
class Scale(keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="zoo.tests")
class ScaleDroppingItsFactor(Scale):
    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("factor")  # the bug: from_config drops an argument
        return cls(**config)


class UnregisteredScale(Scale):
    pass


def test_layer_contract_passes_a_sound_layer(tmp_path):
    harness.check_layer_contract(Scale(3.0), np.ones((2, 4), "float32"), tmp_dir=str(tmp_path))


@pytest.mark.parametrize("layer", [ScaleDroppingItsFactor(3.0), UnregisteredScale(3.0)], ids=["from_config_drops_an_argument", "unregistered"])
def test_layer_contract_fails_a_broken_layer(layer, tmp_path):
    with pytest.raises(AssertionError):
        harness.check_layer_contract(layer, np.ones((2, 4), "float32"), tmp_dir=str(tmp_path))


# ---- check_backbone -------------------------------------------------------------------------------------------

class SkipsALayer(BertBackbone):
    def call(self, inputs, training=False):
        out = super().call(inputs, training)
        return {**out, "encoder_outputs": out["encoder_outputs"][:-1]}  # the bug: one layer's output is missing


class ForgetsDropout(BertBackbone):
    def get_config(self):
        config = super().get_config()
        config.pop("dropout")  # the bug: get_config loses a config field
        return config


class LeaksPadding(BertBackbone):
    def call(self, inputs, training=False):
        out = super().call(inputs, training)
        # the bug: padded positions change real ones (a mean over every position, padding included)
        leak = keras.ops.mean(out["sequence_output"], axis=1, keepdims=True)
        return {**out, "sequence_output": out["sequence_output"] + leak}


class ForgetsItsLastLayerOnSave(BertBackbone):
    def build_weights(self):
        super().build_weights()
        del self.transformer_layer_1  # the bug: a checkpoint no longer holds the last block


def _family(backbone_class):
    return type("Family", (BertFamily,), {"Backbone": backbone_class})()


def _features():
    ids = np.array([[2, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0]], "int32")
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": (ids > 0).astype("int32")}


def _shapes(b=2, t=6, h=16):
    return {"sequence_output": (b, t, h), "pooled_output": (b, h)}


def test_backbone_check_passes_bert():
    harness.check_backbone(_family(BertBackbone), TINY, _features(), _shapes())


@pytest.mark.parametrize("backbone_class", [SkipsALayer, ForgetsDropout, LeaksPadding, ForgetsItsLastLayerOnSave],
                         ids=lambda c: c.__name__)
def test_backbone_check_fails_a_broken_backbone(backbone_class):
    with pytest.raises(AssertionError):
        harness.check_backbone(_family(backbone_class), TINY, _features(), _shapes())


def test_backbone_check_fails_a_wrong_shape():
    with pytest.raises(AssertionError, match="sequence_output"):
        harness.check_backbone(_family(BertBackbone), TINY, _features(), _shapes(h=17))


# ---- check_pretrainer_learns ----------------------------------------------------------------------------------

class Regression(keras.Model):
    """A pretrainer of the loop's contract: least squares on y = x . w."""

    loss_names = ("mse",)

    def __init__(self, stuck=False, **kwargs):
        super().__init__(**kwargs)
        self.stuck = stuck
        self.dense = keras.layers.Dense(1)
        self.dense.build((None, 4))

    def loss_counts(self, features):
        return {"mse": tf.cast(tf.shape(features["y"])[0], tf.float32)}

    def loss_terms(self, features, training=False):
        error = tf.reduce_sum(tf.square(self.dense(features["x"]) - features["y"]))
        if self.stuck:  # the bug: the loss does not depend on the weights (a detached head, say)
            error = tf.stop_gradient(error) + 0.0 * tf.reduce_sum(self.dense.kernel)
        return {"mse": (error, tf.cast(tf.shape(features["y"])[0], tf.float32))}


class ToyFamily:
    optimizer = "adamw_linear"

    def __init__(self, stuck=False):
        self.stuck = stuck

    def pretrainer(self, config):
        return Regression(stuck=self.stuck)


def _dataset_fn(drifting=False):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(16, 4)).astype("float32")  # one batch, every step: a stuck model's loss stays the same
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    calls = []

    def dataset_fn(ctx):
        calls.append(1)
        shift = float(len(calls)) if drifting else 0.0  # the bug: each pipeline built differs (not deterministic)
        return tf.data.Dataset.from_tensor_slices({"x": x, "y": y + shift}).repeat().batch(16)

    return dataset_fn


def _learns(family, dataset_fn, model_dir):
    return harness.check_pretrainer_learns(family, None, dataset_fn, 8, str(model_dir), 16, learning_rate=0.1,
                                           steps_per_loop=2, resume_at=2, resume_steps=4, weight_decay=0.0)


def test_pretrainer_check_passes_a_learning_model(tmp_path):
    history = _learns(ToyFamily(), _dataset_fn(), tmp_path)
    assert [h["step"] for h in history] == [2, 4, 6, 8]


@pytest.mark.parametrize("case", ["loss_does_not_fall", "resume_is_not_exact"])
def test_pretrainer_check_fails(case, tmp_path):
    family, dataset_fn = (ToyFamily(stuck=True), _dataset_fn()) if case == "loss_does_not_fall" else (ToyFamily(), _dataset_fn(drifting=True))
    with pytest.raises(AssertionError, match="did not fall" if case == "loss_does_not_fall" else "differ from the uninterrupted"):
        _learns(family, dataset_fn, tmp_path)


# ---- check_export ---------------------------------------------------------------------------------------------

def _fake_export(kind):
    """trainers.common.export_model_dir's stand-in: a raw-string SavedModel, sound or broken in one way."""

    def export_model_dir(model_dir, export_dir, **options):
        module = tf.Module()

        def lengths(text):
            if kind == "crashes_on_invalid_utf8":  # the bug: strict decoding (a server error on bad bytes)
                return tf.cast(tf.reduce_sum(tf.strings.unicode_decode(text, "UTF-8", errors="strict"), axis=1), tf.float32)
            if kind == "python_op":
                return tf.py_function(lambda t: tf.cast(tf.strings.length(t), tf.float32), [text], tf.float32)
            return tf.cast(tf.strings.length(text), tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def encode(text):
            n = lengths(text)
            score = 1.0 / n if kind == "infinite_on_empty" else n / 10.0  # the bug: 1 / 0 for an empty string
            return {"length": n, "score": score, "matrix": tf.stack([n, n], axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text_a"), tf.TensorSpec([None], tf.string, name="text_b")])
        def encode_pairs(text_a, text_b):
            return {"length": lengths(text_a) + lengths(text_b)}

        tf.saved_model.save(module, export_dir, signatures={"encode": encode, "encode_pairs": encode_pairs})
        return export_dir

    return export_model_dir


def _reference(offset=0.0):
    def reference(signature, batches):
        n = sum(np.array([len(t.encode()) for t in b], "float32") for b in batches)
        if signature == "encode_pairs":
            return {"length": n + offset}
        return {"length": n + offset, "score": n / 10.0, "matrix": np.stack([n, n], 1)}

    return reference


@pytest.mark.parametrize("kind", ["sound", "parity_off", "crashes_on_invalid_utf8", "infinite_on_empty", "python_op"])
def test_export_check(kind, tmp_path, monkeypatch):
    from trainers import common

    monkeypatch.setattr(common, "export_model_dir", _fake_export("sound" if kind == "parity_off" else kind))
    reference = _reference(offset=1e-3 if kind == "parity_off" else 0.0)
    if kind == "sound":
        result = harness.check_export("unused", str(tmp_path / "export"), reference=reference)
        assert result["hostile"]["zero_batch"]["encode"]["matrix"].shape == (0, 2)
        return
    expected = {"parity_off": "differ by", "crashes_on_invalid_utf8": "invalid_utf8", "infinite_on_empty": "not finite",
                "python_op": "TF Serving"}[kind]
    with pytest.raises((AssertionError, ExportError), match=expected):
        harness.check_export("unused", str(tmp_path / "export"), reference=reference)
