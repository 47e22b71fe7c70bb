"""BertBackbone / BertPretrainer / BertClassifier: references, heads, losses, presets, pooling, fit.

The Keras contract (config and .keras round trips), backbone shapes and padding: tests/test_bert_family.py (harness).
"""

import numpy as np
import pytest

import keras

from reference_bert_numpy import bert_forward, masked_lm_logits
from zoo.bert import BertBackbone, BertClassifier, BertConfig, PRESETS, get_preset, pretrainer
from zoo.bert.convert import zoo_to_google


def _features(batch=3, length=12, vocab=120, predictions=4, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, vocab, (batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    mask[1, 7:] = 0  # a padded row
    ids[mask == 0] = 0
    segments = np.zeros_like(ids)
    segments[:, length // 2 :] = 1
    return {
        "token_ids": ids,
        "segment_ids": segments * mask,
        "padding_mask": mask,
        "mask_positions": np.sort(rng.randint(1, 7, (batch, predictions)), axis=1).astype("int32"),
        "mask_ids": rng.randint(5, vocab, (batch, predictions)).astype("int32"),
        "mask_weights": np.ones((batch, predictions), "float32"),
        "next_sentence_labels": np.array([0, 1, 0][:batch], "int32"),
    }


def test_backbone_matches_independent_numpy_bert(tiny_config):
    model = pretrainer(tiny_config)
    # Random non-trivial LayerNorm/bias values so that a swapped gamma/beta or bias would show.
    rng = np.random.RandomState(1)
    for v in model.variables:
        v.assign(rng.normal(0, 0.2 if len(v.shape) > 1 else 0.5, v.shape).astype("float32") + (1.0 if v.path.endswith("gamma") else 0.0))
    f = _features()
    out = model.backbone(f)
    w = zoo_to_google(model.backbone, model)
    emb, layers, pooled = bert_forward(w, f["token_ids"], f["segment_ids"], f["padding_mask"], tiny_config.num_heads)
    real = f["padding_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(out["embedding_output"])[real], emb[real], atol=1e-4)
    assert len(out["encoder_outputs"]) == tiny_config.num_layers
    for ours, ref in zip(out["encoder_outputs"], layers):
        np.testing.assert_allclose(np.asarray(ours)[real], ref[real], atol=2e-4)
    np.testing.assert_allclose(np.asarray(out["pooled_output"]), pooled, atol=2e-4)
    logits = model(f)["mlm_logits"]
    ref_logits = masked_lm_logits(w, layers[-1], f["mask_positions"])
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-3, rtol=1e-4)


def test_masked_lm_is_tied_and_only_at_masked_positions(tiny_config):
    model = pretrainer(tiny_config)
    f = _features(predictions=5)
    out = model(f)
    assert out["mlm_logits"].shape == (3, 5, tiny_config.vocabulary_size)
    assert out["nsp_logits"].shape == (3, 2)
    # The output projection is the input embedding table: no second [V, H] matrix exists.
    vh = [v for v in model.trainable_variables if tuple(v.shape) == (tiny_config.vocabulary_size, tiny_config.hidden_dim)]
    assert len(vh) == 1
    head_vars = [v.path for v in model.masked_lm_head.trainable_variables]
    assert any(p.endswith("output_bias") for p in head_vars)


def test_loss_terms_and_counts(tiny_config):
    model = pretrainer(tiny_config)
    f = _features()
    f["mask_weights"][0, 2:] = 0.0
    terms, counts = model.loss_terms(f), model.loss_counts(f)
    assert float(counts["mlm_loss"]) == f["mask_weights"].sum() == float(terms["mlm_loss"][1])
    assert float(counts["nsp_loss"]) == 3
    # Initial MLM loss is about log(V) for a fresh model.
    mlm = float(terms["mlm_loss"][0]) / float(terms["mlm_loss"][1])
    assert abs(mlm - np.log(tiny_config.vocabulary_size)) < 1.0


def test_presets_and_config():
    sizes = {name: (c.num_layers, c.hidden_dim, c.num_heads) for name, c in PRESETS.items()}
    assert sizes == {"tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8), "medium": (8, 512, 8), "base": (12, 768, 12), "large": (24, 1024, 16)}
    assert all(c.intermediate_dim == 4 * c.hidden_dim for c in PRESETS.values())
    with pytest.raises(ValueError, match="tiny, mini"):
        get_preset("huge")
    with pytest.raises(ValueError, match="Unknown BertConfig keys"):
        BertConfig.from_dict({"hidden": 3})
    base = BertBackbone(**get_preset("base").to_dict())
    base.build()
    # BERT-base: 110M parameters (the paper's figure; 109.48M for the uncased 30,522 vocabulary).
    assert abs(base.count_params() - 109_482_240) < 1000


def test_classifier_takes_raw_strings_and_pairs(real_vocabulary):
    from zoo.bert import BertPreprocessor
    from zoo.text.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer(real_vocabulary)
    backbone = BertBackbone(**BertConfig(**{**dict(vocabulary_size=len(real_vocabulary)), **dict(num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32)}).to_dict())
    model = BertClassifier(backbone, 2, preprocessor=BertPreprocessor(tok, 16))
    single = model(np.array(["a fine film", ""], object))
    pairs = model((np.array(["a fine film", "bad"], object), np.array(["yes", "no"], object)))
    assert single.shape == (2, 2) and pairs.shape == (2, 2)


def test_preprocessor_pads_trimmed_length_to_a_multiple(real_vocabulary):
    # What trainers.export --jit_compile uses: few distinct lengths for XLA, never beyond the sequence length.
    import tensorflow as tf

    from zoo.bert import BertPreprocessor
    from zoo.text.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer(real_vocabulary)
    pre = BertPreprocessor(tok, 20, trim=True, pad_to_multiple_of=8)
    short = pre(tf.constant(["a fine film", ""]))
    plain = BertPreprocessor(tok, 20, trim=True)(tf.constant(["a fine film", ""]))
    length = plain["token_ids"].shape[1]
    assert 2 < length < 8 and short["token_ids"].shape == (2, 8)
    np.testing.assert_array_equal(short["padding_mask"].numpy().sum(1), plain["padding_mask"].numpy().sum(1))
    np.testing.assert_array_equal(short["token_ids"][:, :length], plain["token_ids"])
    assert short["padding_mask"][:, length:].numpy().sum() == 0
    assert pre(tf.constant(["film " * 100]))["token_ids"].shape == (1, 20)  # 24 would exceed T = 20
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        BertPreprocessor(tok, 20, pad_to_multiple_of=0)


def test_mean_pooling_classifier_ignores_padding(tiny_config):
    backbone = BertBackbone(**tiny_config.to_dict())
    model = BertClassifier(backbone, 2, pooling="mean")
    model.build()
    f = _features()
    short = {k: f[k][1:2, :7] for k in ("token_ids", "segment_ids", "padding_mask")}
    long = {k: f[k][1:2] for k in ("token_ids", "segment_ids", "padding_mask")}
    np.testing.assert_allclose(np.asarray(model(short)), np.asarray(model(long)), atol=1e-5)
    assert BertClassifier.from_config(model.get_config()).pooling == "mean"
    with pytest.raises(ValueError, match="pooling"):
        BertClassifier(backbone, 2, pooling="max")


@pytest.mark.parametrize("jit_compile", [True, False])
def test_classifier_fit_traces_under_the_whole_step_xla_flag(tiny_config, monkeypatch, jit_compile):
    from zoo.layers import reductions

    seen = []  # what column_sum (bias and LayerNorm gradients) was told while fit's train step was traced
    real = reductions.in_whole_step_xla
    monkeypatch.setattr(reductions, "in_whole_step_xla", lambda: seen.append(real()) or seen[-1])
    f = _features()
    features = {k: f[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    model = BertClassifier(BertBackbone(**tiny_config.to_dict()), num_classes=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    history = model.fit(features, np.array([0, 1, 0]), epochs=3, batch_size=3, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert seen and set(seen) == {jit_compile}, seen
    assert not real()
