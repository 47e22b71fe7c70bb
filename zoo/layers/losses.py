"""Softmax cross-entropy over a vocabulary, with top-1 hits, in few passes over the logits.

Shape legend: N rows (masked positions, or every position of a causal LM), V classes (the vocabulary).

Every family's language-model loss is a softmax over tens of thousands of classes (BERT's masked LM uses this
today; GPT's next-token and ELMo's forward/backward LM losses are the same function). At small hidden sizes the
passes over the [N, V] logits cost as much as the matmul that makes them: at BERT-mini (N = 640, V = 30,522)
Keras' sparse cross-entropy plus its argmax (which adds four elementwise passes to work around flush-to-zero)
took about 40 % of the head's forward + backward time (ad hoc). Here one oneDNN softmax serves the loss and the
gradient, and one argmax the hits.
"""

import tensorflow as tf

# Below this probability -log(p) would lose digits (oneDNN may flush denormals): such rows take the exact
# log-sum-exp path instead. -log(1e-30) = 69 nats, far above any loss a model that trains reaches.
_SMALLEST_SAFE_PROBABILITY = 1e-30


def softmax_cross_entropy_with_hits(labels, logits):
    """Per-row cross-entropy and top-1 hit of integer labels under softmax(logits).

    Args:
      labels: int [...], each in [0, V).
      logits: float32 [..., V].

    Returns:
      (cross_entropy, hits): float32 [...] each. `cross_entropy` = log-sum-exp(logits) - logits[label], exact
      (equal to `tf.nn.sparse_softmax_cross_entropy_with_logits` to float32 rounding); `hits` is 1.0 where
      `argmax(logits)` is the label (the first index wins ties, as in google-research/bert's accuracy) and
      carries no gradient. The gradient with respect to the logits is (softmax - one_hot(label)) * upstream,
      computed from the forward pass's softmax.
    """
    logits = tf.convert_to_tensor(logits)
    if logits.dtype != tf.float32:
        raise TypeError(f"softmax_cross_entropy_with_hits wants float32 logits, got {logits.dtype.name}.")
    leading = tf.shape(labels)
    labels = tf.cast(labels, tf.int32)
    # CPUs raise on an out-of-range gather; GPUs would return a finite wrong loss instead.
    with tf.control_dependencies([tf.debugging.assert_less(labels, tf.shape(logits)[-1], message="label >= number of classes"),
                                  tf.debugging.assert_non_negative(labels, message="negative label")]):
        labels = tf.identity(labels)
    rows_ce, rows_hit = _cross_entropy_with_hits(
        tf.reshape(labels, [-1]), tf.reshape(logits, [-1, tf.shape(logits)[-1]])
    )
    return tf.reshape(rows_ce, leading), tf.reshape(rows_hit, leading)


@tf.custom_gradient
def _cross_entropy_with_hits(labels, logits):
    """labels int32 [N], logits float32 [N, V] -> (cross-entropy [N], hits [N])."""
    probs = tf.nn.softmax(logits)  # [N, V]: one fused oneDNN kernel on CPUs
    index = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)  # [N, 2]
    label_probs = tf.gather_nd(probs, index)  # [N]
    tiny = label_probs < _SMALLEST_SAFE_PROBABILITY

    def exact():
        lse = tf.reduce_logsumexp(logits, axis=-1)
        return tf.where(tiny, lse - tf.gather_nd(logits, index), -tf.math.log(label_probs))

    cross_entropy = tf.cond(tf.reduce_any(tiny), exact, lambda: -tf.math.log(label_probs))
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)

    def grad(d_cross_entropy, d_hits):
        del d_hits  # a count: no gradient
        d_logits = probs * d_cross_entropy[:, None]
        return None, tf.tensor_scatter_nd_sub(d_logits, index, d_cross_entropy)

    return (cross_entropy, hits), grad
