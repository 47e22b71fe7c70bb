"""GPT through the shared harness at tiny size (Keras contract, backbone, pretraining with exact resume on the
real corpus), plus what is GPT's own: causality, cached decoding equal to the full forward pass, and sampling."""

import numpy as np
import pytest
import tensorflow as tf

import harness
import zoo
from zoo.data import objectives, pipeline
from zoo.data.corpus import imdb_documents
from zoo.gpt import GPTCausalLM, GPTConfig, GPTPreprocessor, generation
from zoo.text.bpe import BytePairTokenizer

FAMILY = zoo.family("gpt")
CONFIG = GPTConfig(vocabulary_size=97, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
                   max_sequence_length=48, dropout=0.0)


def _features(batch=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CONFIG.vocabulary_size, size=(batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[-1, length // 2:] = 0  # a right-padded row
    return {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask)}


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(3)
    return FAMILY.pretrainer(CONFIG)


@pytest.fixture(scope="module")
def tokenizer():
    return BytePairTokenizer.learn([s for d in imdb_documents()[:300] for s in d], 1500)


@pytest.mark.parametrize("kind", ["causal_lm", "backbone"])
def test_gpt_models_keep_the_keras_contract(kind, tmp_path):
    model = FAMILY.pretrainer(CONFIG) if kind == "causal_lm" else FAMILY.backbone(CONFIG)
    harness.check_layer_contract(model, _features(), tmp_dir=str(tmp_path))


def test_gpt_backbone():
    f = _features()
    (b, t), h = f["token_ids"].shape, CONFIG.hidden_dim
    shapes = {"sequence_output": (b, t, h), "embedding_output": (b, t, h),
              **{f"encoder_outputs/{i}": (b, t, h) for i in range(CONFIG.num_layers)}}
    harness.check_backbone(FAMILY, CONFIG, f, shapes)


def test_the_paper_preset_and_the_original_quirks():
    config = FAMILY.get_preset("gpt1")
    assert (config.num_layers, config.hidden_dim, config.num_heads, config.intermediate_dim, config.max_sequence_length) == (12, 768, 12, 3072, 512)
    assert config.activation == "gelu_tanh" and config.layer_norm_epsilon == 1e-5 and config.dropout == 0.1
    backbone = FAMILY.backbone(config.replace(num_layers=1))
    # Post-LN with no final LayerNorm: the last weights are the last block's ffn layer norm; N(0, 0.02) init.
    names = [w.path for w in backbone.weights]
    assert not any("final" in n for n in names), names
    assert abs(float(np.std(backbone.token_embedding.embeddings.numpy())) - 0.02) < 1e-3
    assert backbone.blocks[0].activation == "gelu_tanh"


def test_each_position_sees_only_the_past(model):
    f = _features(batch=1, length=10)
    ids = f["token_ids"].numpy()
    base = model(f).numpy()
    for j in (0, 4, 9):
        changed = ids.copy()
        changed[0, j] = (changed[0, j] + 1) % CONFIG.vocabulary_size
        out = model({"token_ids": tf.constant(changed), "padding_mask": f["padding_mask"]}).numpy()
        np.testing.assert_allclose(out[0, :j], base[0, :j], atol=1e-6, err_msg=f"positions before {j} saw token {j}")
        assert np.abs(out[0, j:] - base[0, j:]).max() > 1e-4, f"position {j} did not see its own token"


def test_cached_decoding_equals_the_full_forward_pass(model):
    ids = _features(batch=2, length=14)["token_ids"]
    full = model({"token_ids": ids}).numpy()
    cache = model.backbone.empty_cache(2, 14)
    hidden, cache = model.backbone.call_with_cache(ids[:, :5], cache, 0)  # a prompt, then one token at a time
    steps = [model.lm_logits(hidden).numpy()]
    for i in range(5, 14):
        hidden, cache = model.backbone.call_with_cache(ids[:, i:i + 1], cache, i)
        steps.append(model.lm_logits(hidden).numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def _greedy_without_cache(model, prompt, new):
    ids = list(prompt)
    for _ in range(new):
        logits = model({"token_ids": tf.constant([ids])})[0, -1].numpy()
        ids.append(int(np.argmax(logits)))
    return ids[len(prompt):]


def test_greedy_generation_equals_the_uncached_argmax_loop_for_prompts_of_any_length(model):
    prompts = [[5, 9, 11, 2, 7, 3], [8], [40, 41, 42]]
    padded = tf.constant([p + [0] * (6 - len(p)) for p in prompts])
    new_ids, lengths = model.generate_ids(padded, [len(p) for p in prompts], 7)
    assert new_ids.shape == (3, 7) and lengths.numpy().tolist() == [7, 7, 7]
    for row, prompt in enumerate(prompts):
        assert new_ids[row].numpy().tolist() == _greedy_without_cache(model, prompt, 7), row
    # Inside a tf.function (as the export runs it), the same.
    graph = tf.function(lambda ids, lengths: model.generate_ids(ids, lengths, 7))
    np.testing.assert_array_equal(graph(padded, tf.constant([len(p) for p in prompts]))[0], new_ids)


def test_sampling_settings_seed_and_stop(model):
    padded, lengths = tf.constant([[5, 9, 11], [8, 0, 0]]), [3, 1]
    greedy, _ = model.generate_ids(padded, lengths, 6)
    # top-k 1 and a tiny nucleus are greedy; the same seed draws the same text, another seed other text.
    np.testing.assert_array_equal(model.generate_ids(padded, lengths, 6, temperature=1.0, top_k=1)[0], greedy)
    np.testing.assert_array_equal(model.generate_ids(padded, lengths, 6, temperature=1.0, top_p=1e-6)[0], greedy)
    a = model.generate_ids(padded, lengths, 6, temperature=2.0, seed=[1, 2])[0].numpy()
    b = model.generate_ids(padded, lengths, 6, temperature=2.0, seed=[1, 2])[0].numpy()
    c = model.generate_ids(padded, lengths, 6, temperature=2.0, seed=[7, 2])[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    # Banned ids never come out; a stop id ends a row (kept), zeros after it.
    banned = tuple(range(0, CONFIG.vocabulary_size, 2))
    drawn = model.generate_ids(padded, lengths, 6, temperature=3.0, seed=[3, 3], banned_ids=banned)[0].numpy()
    assert (drawn % 2 == 1).all(), drawn
    stop = int(greedy[0, 2])
    stopped, stopped_lengths = model.generate_ids(padded, lengths, 6, stop_id=stop)
    first = greedy.numpy()[0].tolist().index(stop)
    assert stopped_lengths.numpy()[0] == first + 1
    assert stopped.numpy()[0, :first + 1].tolist() == greedy.numpy()[0, :first + 1].tolist()
    assert (stopped.numpy()[0, first + 1:] == 0).all()


def test_filter_logits_keeps_the_top_k_and_the_nucleus():
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: (out.numpy()[0] > generation.NEGATIVE / 2).tolist()  # noqa: E731
    assert kept(generation.filter_logits(logits, 1.0, 2, 1.0)) == [True, True, False, False]
    assert kept(generation.filter_logits(logits, 1.0, 0, 0.7)) == [True, True, False, False]  # 0.5 < 0.7 <= 0.8
    assert kept(generation.filter_logits(logits, 1.0, 0, 0.81)) == [True, True, True, False]
    assert kept(generation.filter_logits(logits, 1.0, 0, 1.0)) == [True] * 4
    np.testing.assert_allclose(generation.filter_logits(logits, 0.5, 0, 1.0), logits / 0.5, rtol=1e-6)


def test_preprocessor_forms(tokenizer):
    special = tokenizer.special_ids
    lm = GPTPreprocessor(tokenizer, 8)(tf.constant(["a movie", "this is a very long review of a movie that goes on", ""]))
    ids, mask = lm["token_ids"].numpy(), lm["padding_mask"].numpy()
    assert ids.shape == (3, 8) and (ids[:, 0] == special["end_of_text"]).all()
    assert mask[1].all() and mask[2].tolist() == [1] + [0] * 7 and (ids[2, 1:] == special["pad"]).all()
    cls = GPTPreprocessor(tokenizer, 8, form="classify")(tf.constant(["a movie", "this is a very long review of a movie"]))
    ids, mask = cls["token_ids"].numpy(), cls["padding_mask"].numpy()
    assert (ids[:, 0] == special["start"]).all()
    lengths = mask.sum(1)
    assert ids[1, 7] == special["classify"] and lengths[1] == 8
    assert ids[0, lengths[0] - 1] == special["classify"]
    trimmed = GPTPreprocessor(tokenizer, 64, trim=True)(tf.constant(["a movie"]))
    assert trimmed["token_ids"].shape[1] < 8
    empty = GPTPreprocessor(tokenizer, 64, trim=True)(tf.constant([], tf.string))
    assert empty["token_ids"].shape == (0, 1)


def test_packed_blocks_are_contiguous_with_end_of_text_between_documents():
    documents = [[[1, 2], [3]], [[4, 5, 6]], [[7]]]
    blocks = objectives.pack_blocks(documents, 99, 4)
    assert blocks.tolist() == [[1, 2, 3, 99], [4, 5, 6, 99]]  # '7 99' (under one block) is dropped
    with pytest.raises(ValueError, match="fewer than one block"):
        objectives.pack_blocks([[[1, 2]]], 99, 8)


def test_pretraining_learns_and_resumes_exactly_on_the_real_corpus(tokenizer, tmp_path):
    objective = objectives.get(FAMILY.objective)
    settings = objective.Settings(sequence_length=32)
    ids = pipeline.tokenize_documents(imdb_documents()[:300], tokenizer)
    blocks = objective.prepare(ids, tokenizer, settings, seed=0)
    config = CONFIG.replace(vocabulary_size=tokenizer.vocabulary_size, hidden_dim=64, intermediate_dim=128)

    def dataset_fn(ctx):
        return objective.dataset(blocks, tokenizer, settings, batch_size=16, seed=1, input_context=ctx)

    # A fresh model's loss is about log(V) = 7.3 (uniform guesses); 60 steps of Adam + cosine must get well below.
    harness.check_pretrainer_learns(FAMILY, config, dataset_fn, 60, str(tmp_path / "run"), 16, learning_rate=3e-3,
                                    warmup_steps=6, steps_per_loop=10, max_final_loss=np.log(tokenizer.vocabulary_size) - 1.0,
                                    resume_at=10, resume_steps=10)


def test_family_generates_text_for_prompts(model, tokenizer):
    config = CONFIG.replace(vocabulary_size=tokenizer.vocabulary_size)
    lm = FAMILY.pretrainer(config)
    texts = FAMILY.generate(lm, FAMILY.preprocessor(tokenizer, 32), ["the movie was", ""], max_new_tokens=5)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert all("_pad_" not in t and "_start_" not in t for t in texts)
    samples = FAMILY.samples(lm, FAMILY.preprocessor(tokenizer, 32), ["the movie was"])
    assert list(samples) == ["the movie was"] and samples["the movie was"][0].startswith("the movie was")


def test_causal_lm_is_registered_for_model_dirs():
    assert isinstance(FAMILY.pretrainer(CONFIG), GPTCausalLM)
    assert zoo.FAMILIES["gpt"] == "zoo.gpt" and FAMILY.Tokenizer is BytePairTokenizer


def test_chunked_lm_loss_gives_the_same_loss_and_gradients(model):
    """Above max_logits_bytes the LM loss runs in row chunks (no [B x T, V] buffers): same values."""
    f = _features(batch=3, length=12)

    def loss_and_grads(max_logits_bytes):
        model.max_logits_bytes = max_logits_bytes
        with tf.GradientTape() as tape:
            total, count = model.loss_terms(f)["lm_loss"]
        return total / count, tape.gradient(total, model.trainable_variables)

    try:
        whole, chunked = loss_and_grads(1 << 40), loss_and_grads(0)
    finally:
        del model.max_logits_bytes  # back to the class default
    np.testing.assert_allclose(chunked[0].numpy(), whole[0].numpy(), rtol=1e-6)
    for a, b in zip(whole[1], chunked[1]):
        np.testing.assert_allclose(tf.convert_to_tensor(b).numpy(), tf.convert_to_tensor(a).numpy(), rtol=1e-4, atol=1e-6)
