"""Sampled softmax (Jean et al. 2015) over a large vocabulary: `tf.nn.sampled_softmax_loss`'s loss, XLA-compilable
and stateless, with a log-uniform (Zipfian) sampler.

Shape legend: N rows, P input width, V classes, S sampled classes.

Why not `tf.nn.sampled_softmax_loss` itself: its sampler is a stateful op (a run resumed from a checkpoint draws
other negatives than the uninterrupted run, so resume is not exact) and its accidental-hit removal
(`ComputeAccidentalHits`) has no XLA kernel, so it cannot run in a TPU step. Here the negatives come from a
stateless draw of a given seed and the hits are masked by comparison; given the same sampled classes and expected
counts the loss equals `tf.nn.sampled_softmax_loss(..., remove_accidental_hits=True)` (tests/test_elmo_family.py).

One difference from the sampler bilm-tf uses (`unique=True`, which rejects repeats until S distinct classes are
drawn): negatives are drawn with replacement, so the expected count of class c is exactly S * Q(c) and the draw
has a fixed cost. Both corrections (subtracting log expected counts) estimate the same full softmax.
"""

import tensorflow as tf

_FLOAT32_MAX = 3.4028234663852886e38  # what ComputeAccidentalHits subtracts from a hit's logit


def log_uniform_probabilities(classes, num_classes):
    """Q(c) = log((c + 2) / (c + 1)) / log(V + 1), the distribution of TF's `LogUniformCandidateSampler`: class 0
    is the most likely, so the classes must be sorted by descending frequency. float32 of `classes`' shape."""
    c = tf.cast(classes, tf.float32)
    # log1p keeps the digits that log(c + 2) - log(c + 1) would cancel at c ~ 1e6.
    return tf.math.log1p(1.0 / (c + 1.0)) / tf.math.log(tf.cast(num_classes, tf.float32) + 1.0)


def log_uniform_candidates(labels, num_samples, num_classes, seed):
    """Draws S classes from Q (with replacement), statelessly from `seed`.

    Args:
      labels: int [N], the true classes (for their expected counts).
      num_samples: S.
      num_classes: V.
      seed: int32 [2], the stateless seed (e.g. `zoo.layers.dropout.replica_seed`).

    Returns:
      (sampled int64 [S], true_expected_count float32 [N, 1], sampled_expected_count float32 [S]): the triple
      `tf.nn.sampled_softmax_loss` takes as `sampled_values`; expected counts are S * Q(c).
    """
    u = tf.random.stateless_uniform([num_samples], seed, dtype=tf.float32)
    # Inverse CDF of Q: c = floor((V + 1)^u) - 1, as TF's sampler (exact to float32 rounding of (V + 1)^u).
    sampled = tf.cast(tf.floor(tf.exp(u * tf.math.log(float(num_classes) + 1.0))), tf.int64) - 1
    sampled = tf.clip_by_value(sampled, 0, num_classes - 1)
    scale = float(num_samples)
    true_expected = scale * log_uniform_probabilities(labels, num_classes)[:, None]
    return sampled, true_expected, scale * log_uniform_probabilities(sampled, num_classes)


def sampled_softmax_cross_entropy(hidden, weights, biases, labels, sampled_values, remove_accidental_hits=True):
    """Per-row sampled softmax cross-entropy: the true class against S sampled ones, logits corrected by -log of
    their expected counts.

    Args:
      hidden: float [N, P] (the compute dtype; the logits are float32).
      weights: float [V, P], the softmax's output embedding (as tf.nn.sampled_softmax_loss: [V, P], not [P, V]).
      biases: float [V].
      labels: int [N].
      sampled_values: (sampled int [S], true_expected_count [N, 1], sampled_expected_count [S]).
      remove_accidental_hits: a sampled class equal to a row's label gets -FLOAT32_MAX added to its logit (as
        ComputeAccidentalHits does), so a row never counts its own label as a negative.

    Returns:
      float32 [N].
    """
    sampled, true_expected, sampled_expected = sampled_values
    labels = tf.cast(labels, tf.int64)
    sampled = tf.cast(sampled, tf.int64)
    true_w = tf.cast(tf.gather(weights, labels), hidden.dtype)  # [N, P]
    sampled_w = tf.cast(tf.gather(weights, sampled), hidden.dtype)  # [S, P]
    biases = tf.cast(biases, tf.float32)
    true_logits = tf.reduce_sum(tf.cast(hidden * true_w, tf.float32), axis=-1) + tf.gather(biases, labels)  # [N]
    sampled_logits = tf.cast(tf.matmul(hidden, sampled_w, transpose_b=True), tf.float32) + tf.gather(biases, sampled)  # [N, S]
    if remove_accidental_hits:
        hits = tf.equal(labels[:, None], sampled[None, :])  # [N, S]
        sampled_logits = tf.where(hits, sampled_logits - _FLOAT32_MAX, sampled_logits)
    true_logits -= tf.math.log(tf.reshape(tf.cast(true_expected, tf.float32), [-1]))
    sampled_logits -= tf.math.log(tf.cast(sampled_expected, tf.float32))[None, :]
    logits = tf.concat([true_logits[:, None], sampled_logits], axis=1)  # [N, 1 + S]: the true class is column 0
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros_like(labels, tf.int32), logits=logits)
