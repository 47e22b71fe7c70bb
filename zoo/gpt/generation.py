"""Sampling and the cached decoding loop, as TF graph ops with the sampling settings as tensors.

Why not keras-hub's samplers: they take k, p and the temperature as Python constructor arguments and draw from
a stateful SeedGenerator, so a SavedModel signature could not take them, nor a seed, as inputs; keras-hub cannot
export its generation at all (keras-hub issue #1717). Here every setting is a tensor and the draws are stateless
(`tf.random.stateless_categorical` with the seed folded with the step), so the same seed gives the same text in
Python and in an export.

Shape legend: B batch, V vocabulary, P prompt buffer length, S = P + max_new_tokens.
"""

import tensorflow as tf

NEGATIVE = -1e9


def filter_logits(logits, temperature, top_k, top_p):
    """float32 [B, V] -> logits / temperature with everything outside the top k and the top-p nucleus at -1e9.

    temperature <= 0 is treated as 1 here (the caller takes the argmax then); top_k <= 0 or >= V keeps all;
    top_p >= 1 keeps all, else the smallest set of most likely tokens whose probability reaches top_p (at least one).
    """
    temperature = tf.cast(temperature, tf.float32)
    logits = logits / tf.where(temperature > 0, temperature, 1.0)
    vocabulary = tf.shape(logits)[-1]
    top_k = tf.cast(top_k, tf.int32)

    def keep_top_k():
        kth = tf.math.top_k(logits, k=tf.clip_by_value(top_k, 1, vocabulary)).values[:, -1:]  # [B, 1]
        return tf.where(logits < kth, NEGATIVE, logits)

    logits = tf.cond((top_k > 0) & (top_k < vocabulary), keep_top_k, lambda: logits)
    top_p = tf.cast(top_p, tf.float32)

    def keep_nucleus():
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        probs = tf.nn.softmax(ordered)
        before = tf.cumsum(probs, axis=-1, exclusive=True)  # mass of the tokens ranked above each one
        kept = tf.where(before < top_p, ordered, tf.float32.max)  # the first token is always kept (before = 0)
        threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
        return tf.where(logits < threshold, NEGATIVE, logits)

    return tf.cond(top_p < 1.0, keep_nucleus, lambda: logits)


def sample(logits, step, *, temperature, top_k, top_p, seed):
    """One token per row: argmax where temperature <= 0, else a stateless draw from the filtered distribution.

    Args:
      logits: float32 [B, V]; step: int32 scalar folded into the seed; seed: int [2].

    Returns:
      int32 [B].
    """
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    step_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.cast(step, tf.int64))
    filtered = filter_logits(logits, temperature, top_k, top_p)
    drawn = tf.cast(tf.random.stateless_categorical(filtered, 1, seed=step_seed)[:, 0], tf.int32)
    return tf.where(tf.cast(temperature, tf.float32) > 0, drawn, greedy)


def _write_column(buffer, column, index):
    """buffer int32 [B, S] with column [B] written at position index."""
    rows = tf.range(tf.shape(buffer)[0])
    return tf.tensor_scatter_nd_update(buffer, tf.stack([rows, tf.fill(tf.shape(rows), index)], axis=1), column)


def generate(model, token_ids, prompt_lengths, max_new_tokens, *, temperature=0.0, top_k=0, top_p=1.0, seed=(0, 0),
             stop_id=None, banned_ids=()):
    """The cached decoding loop of `GPTCausalLM.generate_ids` (see there for the arguments and outputs).

    All rows advance one position per step from the shortest prompt's end; a row still inside its own prompt
    is fed its prompt token (teacher forcing), so prompts of any lengths share one batch. The loop stops when
    every row has `max_new_tokens` new tokens or has produced `stop_id`.
    """
    backbone = model.backbone
    token_ids = tf.cast(token_ids, tf.int32)
    prompt_lengths = tf.cast(prompt_lengths, tf.int32)
    max_new_tokens = tf.cast(max_new_tokens, tf.int32)
    batch = tf.shape(token_ids)[0]
    total = tf.shape(token_ids)[1] + max_new_tokens
    with tf.control_dependencies([
        tf.debugging.assert_less_equal(tf.reduce_max(prompt_lengths) + max_new_tokens, backbone.max_sequence_length,
                                       message="prompt + max_new_tokens exceeds the model's context"),
        tf.debugging.assert_positive(prompt_lengths, message="every prompt needs at least one token"),
    ]):
        buffer = tf.concat([token_ids, tf.zeros([batch, max_new_tokens], tf.int32)], axis=1)  # [B, S]
    positions = tf.range(total)[None, :]
    is_prompt = positions < prompt_lengths[:, None]  # [B, S]
    buffer = tf.where(is_prompt, buffer, 0)
    end = tf.reduce_max(prompt_lengths) + max_new_tokens  # the last row's last position + 1
    start = tf.reduce_min(prompt_lengths)
    vocabulary = backbone.vocabulary_size
    ban = tf.zeros([vocabulary], tf.float32)
    if banned_ids:
        ban = tf.tensor_scatter_nd_update(ban, [[int(i)] for i in banned_ids], [NEGATIVE] * len(banned_ids))
    stop = tf.constant(-1 if stop_id is None else int(stop_id), tf.int32)

    cache = backbone.empty_cache(batch, total)
    hidden, cache = backbone.call_with_cache(buffer[:, :start], cache, 0)
    logits = model.lm_logits(hidden[:, -1])  # [B, V]: the distribution at position `start`
    done = tf.zeros([batch], tf.bool)

    def body(index, buffer, cache, logits, done):
        sampled = sample(logits + ban, index, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        prompt_here = tf.gather(is_prompt, index, axis=1)
        token = tf.where(prompt_here, tf.gather(buffer, index, axis=1), tf.where(done, 0, sampled))
        past_budget = index >= prompt_lengths + max_new_tokens
        token = tf.where(past_budget, 0, token)
        buffer = _write_column(buffer, token, index)
        done = done | past_budget | (~prompt_here & tf.equal(token, stop))
        hidden, cache = backbone.call_with_cache(token[:, None], cache, index)
        return index + 1, buffer, cache, model.lm_logits(hidden[:, 0]), done

    def more(index, buffer, cache, logits, done):
        unfinished = ~done | (index < prompt_lengths)
        return (index < end) & tf.reduce_any(unfinished)

    _, buffer, _, _, _ = tf.while_loop(more, body, (start, buffer, cache, logits, done),
                                       shape_invariants=(start.shape, buffer.shape, cache.shape, logits.shape, done.shape))
    # Each row's new tokens: positions prompt_length .. prompt_length + max_new_tokens - 1.
    columns = prompt_lengths[:, None] + tf.range(max_new_tokens)[None, :]  # [B, max_new]
    new_ids = tf.gather(buffer, tf.minimum(columns, total - 1), batch_dims=1)
    # Count up to and including the first stop id (0 after it, as the loop wrote).
    is_stop = tf.equal(new_ids, stop)
    after_stop = tf.cumsum(tf.cast(is_stop, tf.int32), axis=1, exclusive=True) > 0
    new_ids = tf.where(after_stop, 0, new_ids)
    lengths = tf.reduce_sum(tf.cast(~after_stop, tf.int32), axis=1)
    return new_ids, lengths


def prompt_ids(tokenizer, texts, keep):
    """string [B] -> (int32 [B, P] left-aligned prompts, int32 [B] lengths): `_end_ text`, its last `keep` tokens.

    Every prompt starts after the end-of-text separator, as documents do in pretraining; a prompt longer than
    `keep` (the context minus the tokens to generate) keeps its end, the part a continuation follows from.
    """
    ids = tokenizer.tokenize(tf.reshape(texts, [-1]))
    rows = tf.shape(ids.row_splits)[0] - 1
    ids = tf.concat([tf.RaggedTensor.from_tensor(tf.fill([rows, 1], tokenizer.end_of_text_id)), ids], axis=1)
    lengths = tf.minimum(ids.row_lengths(), tf.cast(keep, tf.int64))
    starts = ids.row_splits[1:] - lengths
    kept = tf.RaggedTensor.from_row_lengths(tf.gather(ids.values, tf.ragged.range(starts, ids.row_splits[1:]).values), lengths)
    return tf.cast(kept.to_tensor(), tf.int32), tf.cast(lengths, tf.int32)


def continue_texts(model, tokenizer, texts, max_new_tokens, *, temperature=0.0, top_k=0, top_p=1.0, seed=0,
                   banned_ids=()):
    """Raw prompts -> their continuations, in the graph (Python and the export's `generate` share this).

    Args:
      model: a `GPTCausalLM`; tokenizer: its `BytePairTokenizer`; texts: string [B].
      max_new_tokens: int scalar, capped to [0, context - 1] so at least one prompt token fits.
      temperature, top_k, top_p: see `filter_logits` (scalars or tensors); seed: int scalar (stateless draws).
      banned_ids: ids never sampled. Generation stops at end-of-text, which is not part of the text.

    Returns:
      {"text": string [B], "token_ids": int32 [B, N] (0-padded, the stop token included), "lengths": int32 [B]}.
    """
    context = model.backbone.max_sequence_length
    max_new_tokens = tf.clip_by_value(tf.cast(max_new_tokens, tf.int32), 0, context - 1)
    ids, lengths = prompt_ids(tokenizer, texts, context - max_new_tokens)

    def run():
        return model.generate_ids(ids, lengths, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)]),
                                  stop_id=tokenizer.end_of_text_id, banned_ids=banned_ids)

    def nothing():  # an empty batch (TF Serving may send one): the loop has no row to start from
        return tf.zeros([0, max_new_tokens], tf.int32), tf.zeros([0], tf.int32)

    new_ids, new_lengths = tf.cond(tf.size(lengths) > 0, run, nothing)
    new = tf.RaggedTensor.from_tensor(new_ids, lengths=new_lengths)
    words = tf.ragged.boolean_mask(new, tf.not_equal(new, tokenizer.end_of_text_id))
    return {"text": tokenizer.detokenize(words), "token_ids": new_ids, "lengths": new_lengths}
