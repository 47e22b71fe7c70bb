"""BERT input packing and dynamic MLM masking, in pure TF ops with static output shapes.

Both functions run eagerly, in tf.function and in tf.data, and use no TF Text op (RoundRobinTrim and friends
are missing from older TF Serving). Shape legend: B batch, T sequence length, P max predictions, V vocab size.
"""

import tensorflow as tf


def _truncated_lengths(len_a: tf.Tensor, len_b: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Closed form of google-research/bert `_truncate_seq_pair`.

    That loop pops one token at a time from the longer segment (from b on ties) until la + lb <= budget. The
    longer one is cut first; once both are equal they alternate, b first, so the result is
    b' = min(lb, max(budget - la, budget // 2)), a' = min(la, budget - b'). This equals HF's pure-python
    tokenizer with truncation="longest_first". HF's Rust `BertTokenizer` (the default in transformers 5) differs:
    when both are cut to an odd budget it gives the extra token to b, and for b == "" it packs a single segment
    (no second [SEP]); tests/golden/tokenizer_golden.json records both.
    """
    over = len_a + len_b > budget
    keep_b = tf.where(over, tf.minimum(len_b, tf.maximum(budget - len_a, budget // 2)), len_b)
    keep_a = tf.where(over, tf.minimum(len_a, budget - keep_b), len_a)
    return keep_a, keep_b


def _segment_tokens(segment: tf.RaggedTensor, start: tf.Tensor, positions: tf.Tensor, pad_id: int) -> tf.Tensor:
    """segment's item (positions - start) of each row, int32 [B, T]; pad_id where that is not an item index.

    The caller keeps only positions inside the kept part of the row, so any index outside it may read anything:
    it reads the pad appended to the flat values (which also makes an all-empty batch safe to gather from).
    """
    values = tf.concat([segment.values, [pad_id]], axis=0)
    index = tf.expand_dims(segment.row_splits[:-1], 1) + tf.cast(positions - start, tf.int64)  # [B, T]
    return tf.gather(values, tf.clip_by_value(index, 0, tf.size(values, out_type=tf.int64) - 1))


def pack_segments(
    segments: list[tf.RaggedTensor],
    sequence_length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
) -> dict[str, tf.Tensor]:
    """Builds `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, truncated as google-research/bert, padded to T.

    Args:
      segments: one or two int RaggedTensors [B, (n_i)] of token ids without special tokens.
      sequence_length: T; at least 2 for one segment, 3 for two.
      cls_id, sep_id, pad_id: special token ids.

    Returns:
      dict of int32 [B, T]: `token_ids`, `segment_ids` (0 for [CLS] A [SEP], 1 for B [SEP], 0 on padding),
      `padding_mask` (1 on real tokens).
    """
    if len(segments) not in (1, 2):
        raise ValueError(f"pack_segments takes 1 or 2 segments, got {len(segments)}")
    num_special = len(segments) + 1
    if sequence_length < num_special:
        raise ValueError(f"sequence_length={sequence_length} cannot hold {num_special} special tokens")
    segments = [
        tf.cast(s if isinstance(s, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(s), tf.int32)
        .with_row_splits_dtype(tf.int64)  # concat needs one splits dtype
        for s in segments
    ]
    budget = sequence_length - num_special
    if len(segments) == 1:
        keeps = [tf.minimum(segments[0].row_lengths(), budget)]
    else:
        keeps = list(_truncated_lengths(segments[0].row_lengths(), segments[1].row_lengths(), budget))

    # Dense, position by position: a handful of ops for any batch (ragged concat and mask took ~600 before
    # graph optimization, a third of a batch-1 request's preprocessing).
    positions = tf.range(sequence_length, dtype=tf.int32)[tf.newaxis, :]  # [1, T]
    keep_a = tf.cast(keeps[0], tf.int32)[:, tf.newaxis]  # [B, 1]
    sep_a = keep_a + 1  # position of the first [SEP]
    token_ids = tf.where(positions <= keep_a, _segment_tokens(segments[0], 1, positions, pad_id), sep_id)
    length = sep_a + 1
    segment_ids = tf.zeros_like(token_ids)
    if len(segments) == 2:
        tf.debugging.assert_equal(segments[0].nrows(), segments[1].nrows(),
                                  message="pack_segments: the two segments have different batch sizes")
        keep_b = tf.cast(keeps[1], tf.int32)[:, tf.newaxis]
        sep_b = sep_a + 1 + keep_b
        in_b = (positions > sep_a) & (positions < sep_b)
        token_ids = tf.where(in_b, _segment_tokens(segments[1], sep_a + 1, positions, pad_id), token_ids)
        token_ids = tf.where(positions == sep_b, sep_id, token_ids)
        length = sep_b + 1
        segment_ids = tf.cast((positions > sep_a) & (positions < length), tf.int32)
    padding_mask = tf.cast(positions < length, tf.int32)
    token_ids = tf.where(positions == 0, cls_id, tf.where(positions < length, token_ids, pad_id))
    return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}


def trim_to_longest(features: dict[str, tf.Tensor], sequence_length: int, pad_to_multiple_of: int = 1,
                    minimum: int = 1) -> dict[str, tf.Tensor]:
    """Cuts [B, T] features to the batch's longest `padding_mask` row (faster serving of short texts).

    Args:
      features: dict of [B, T, ...] tensors with a `padding_mask` int [B, T].
      sequence_length: T, the upper bound.
      pad_to_multiple_of: the cut length is rounded up to a multiple of this (at most T): an XLA-compiled consumer
        then sees T / m lengths instead of one program per length.
      minimum: the shortest cut: an empty batch (B = 0, as TF Serving may send) keeps `minimum` positions, so
        consumers that read position 0 (a [CLS] pooler) get [0, minimum, ...] tensors instead of an error.

    Returns:
      the same dict with every tensor cut to [B, T'].
    """
    longest = tf.maximum(tf.reduce_max(tf.reduce_sum(features["padding_mask"], axis=1)), minimum)
    if pad_to_multiple_of > 1:
        m = pad_to_multiple_of
        longest = tf.minimum((longest + m - 1) // m * m, sequence_length)
    return {k: v[:, :longest] for k, v in features.items()}


_RESOLUTION = 1 << 24  # granularity of the integer uniform draws


def _uniform_ints(shape, seed, maxval=_RESOLUTION):
    return tf.random.stateless_uniform(shape, seed, minval=0, maxval=maxval, dtype=tf.int32, alg="philox")


def mask_tokens(
    token_ids: tf.Tensor,
    padding_mask: tf.Tensor,
    *,
    vocabulary_size: int,
    mask_id: int,
    special_ids: list[int],
    max_predictions: int,
    mask_prob: float = 0.15,
    mask_token_rate: float = 0.8,
    random_token_rate: float = 0.1,
    seed: tf.Tensor,
) -> dict[str, tf.Tensor]:
    """BERT masked-LM corruption (google-research `create_masked_lm_predictions`), stateless and batched.

    Per row: n = min(P, max(1, round(n_real * mask_prob)), n_candidates) positions are drawn uniformly without
    replacement among real non-special tokens (n_real counts [CLS]/[SEP] too, as the original's len(tokens);
    round is half-to-even like Python 3's). Each chosen token becomes [MASK] with probability
    `mask_token_rate`, a uniform random id in [0, V) with `random_token_rate`, else stays.

    Args:
      token_ids: int [B, T].
      padding_mask: int or bool [B, T], 1 on real tokens.
      vocabulary_size: V.
      mask_id: id of [MASK].
      special_ids: ids never chosen ([CLS], [SEP], [PAD], ...).
      max_predictions: P (may exceed T when T is static; the extra slots are padding).
      mask_prob, mask_token_rate, random_token_rate: the BERT 15% / 80% / 10% rates.
      seed: int32/int64 [2] stateless seed; the same seed gives the same masks.

    Returns:
      dict: `token_ids` int32 [B, T] (corrupted input), `mask_positions` int32 [B, P] (ascending, 0-padded),
      `mask_ids` int32 [B, P] (original ids, 0-padded), `mask_weights` float32 [B, P] (1.0 real, 0.0 pad).
    """
    token_ids = tf.cast(token_ids, tf.int32)
    real = tf.cast(padding_mask, tf.bool)
    candidate = real
    for special in special_ids:
        candidate &= tf.not_equal(token_ids, special)
    batch = tf.shape(token_ids)[0]
    length = token_ids.shape[1] if token_ids.shape[1] is not None else tf.shape(token_ids)[1]
    # top_k needs k <= T; when P > T the extra slots are just padding.
    k = min(max_predictions, length) if isinstance(length, int) else max_predictions
    # int64 first: stateless_split's output depends on the seed dtype, and callers pass either.
    seed = tf.cast(seed, tf.int64)
    choice_seed, action_seed, random_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))

    num_real = tf.reduce_sum(tf.cast(real, tf.float32), axis=1)
    num_candidates = tf.reduce_sum(tf.cast(candidate, tf.int32), axis=1)
    num_to_predict = tf.maximum(1, tf.cast(tf.round(num_real * mask_prob), tf.int32))
    num_to_predict = tf.minimum(tf.minimum(num_to_predict, k), num_candidates)

    # Uniform sample without replacement: the top-n of i.i.d. uniform scores. Non-candidates score -1, below
    # every candidate, so they are picked only into slots beyond num_to_predict, which are discarded.
    # Integer draws throughout: TF's CPU kernel and XLA turn the same Philox bits into different floats, but
    # into the same integers, so masks are identical eagerly, in tf.function and under jit_compile.
    # Full 31-bit range: score ties (broken towards lower positions by top_k) are then rare even for long T.
    scores = _uniform_ints(tf.shape(token_ids), choice_seed, maxval=2**31 - 1)
    scores = tf.where(candidate, scores, -1)
    # sorted=True so that the first num_to_predict slots are the top-n. int32 [B, k], distinct per row.
    _, picked = tf.math.top_k(scores, k=k, sorted=True)
    valid = tf.range(k)[tf.newaxis, :] < num_to_predict[:, tf.newaxis]
    # Sort chosen positions ascending; invalid slots sort last (value T) and become 0-padding.
    sentinel = tf.cast(tf.shape(token_ids)[1], tf.int32)
    positions = tf.sort(tf.where(valid, picked, sentinel), axis=1)
    valid = positions < sentinel
    positions = tf.where(valid, positions, 0)

    # [B, T] chosen mask via scatter of the valid slots (picked indices are distinct, so no collisions).
    rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(positions))
    chosen = tf.scatter_nd(
        tf.stack([rows, positions], axis=-1), tf.cast(valid, tf.int32), tf.shape(token_ids)
    ) > 0

    action = _uniform_ints(tf.shape(token_ids), action_seed)  # uniform in [0, 2^24)
    mask_below = int(round(mask_token_rate * _RESOLUTION))
    random_below = int(round((mask_token_rate + random_token_rate) * _RESOLUTION))
    random_ids = tf.random.stateless_uniform(
        tf.shape(token_ids), random_seed, minval=0, maxval=vocabulary_size, dtype=tf.int32, alg="philox"
    )
    corrupted = tf.where(action < mask_below, tf.constant(mask_id, tf.int32), token_ids)
    corrupted = tf.where((action >= mask_below) & (action < random_below), random_ids, corrupted)
    masked_input = tf.where(chosen, corrupted, token_ids)

    mask_ids = tf.where(valid, tf.gather(token_ids, positions, batch_dims=1), 0)
    pad = max_predictions - k
    outputs = {
        "token_ids": masked_input,
        "mask_positions": positions,
        "mask_ids": mask_ids,
        "mask_weights": tf.cast(valid, tf.float32),
    }
    if pad:
        outputs.update({
            name: tf.pad(outputs[name], [[0, 0], [0, pad]]) for name in ("mask_positions", "mask_ids", "mask_weights")
        })
    return outputs
