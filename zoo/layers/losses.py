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


# Above this many logit bytes per step (rows x vocabulary x 4) the tied-head loss runs in row chunks. At GPT-1's
# size (T = 512, V = 40,483) one sequence's logits are 83 MB and a batch of 8 holds 0.66 GB of logits plus as much
# again in softmax kept for the gradient; in chunks neither exists beyond one chunk.
DEFAULT_MAX_LOGITS_BYTES = 1 << 28


def tied_softmax_cross_entropy(hidden, table, labels, *, chunk_rows=1024, max_logits_bytes=DEFAULT_MAX_LOGITS_BYTES):
    """Cross-entropy and top-1 hits of `labels` under softmax(hidden @ table^T), without [N, V] buffers when large.

    Args:
      hidden: float [N, H] (the compute dtype: bf16 under mixed precision).
      table: float [V, H], the output embedding (tied to the input one), already cast to `hidden`'s dtype.
      labels: int [N], each in [0, V).
      chunk_rows: rows per chunk on the chunked path.
      max_logits_bytes: when N (static) x V x 4 is at most this, the logits are made whole and
        `softmax_cross_entropy_with_hits` runs (one matmul each way, the fastest); otherwise the rows go through
        in chunks of `chunk_rows`: the forward keeps only each row's log-sum-exp, and the gradient recomputes a
        chunk's logits (one extra [chunk, H] x [H, V] matmul per chunk), so peak memory holds [chunk, V], not
        [N, V]. Both paths give the same values to float32 rounding.

    Returns:
      (cross_entropy, hits): float32 [N] each; hits carry no gradient.
    """
    hidden = tf.convert_to_tensor(hidden)
    table = tf.cast(table, hidden.dtype)
    rows, vocabulary = hidden.shape[0], table.shape[0]
    if rows is not None and vocabulary is not None and rows * vocabulary * 4 <= max_logits_bytes:
        logits = tf.cast(tf.matmul(hidden, table, transpose_b=True), tf.float32)
        return softmax_cross_entropy_with_hits(labels, logits)
    labels = tf.cast(labels, tf.int32)
    with tf.control_dependencies([tf.debugging.assert_less(labels, tf.shape(table)[0], message="label >= number of classes"),
                                  tf.debugging.assert_non_negative(labels, message="negative label")]):
        labels = tf.identity(labels)
    return _chunked_cross_entropy(hidden, table, labels, int(chunk_rows))


def _chunks(hidden, labels, chunk_rows):
    """Pads rows to a multiple of chunk_rows: ([K, C, H], [K, C], N)."""
    n = tf.shape(hidden)[0]
    padded = (n + chunk_rows - 1) // chunk_rows * chunk_rows
    h = tf.pad(hidden, [[0, padded - n], [0, 0]])
    y = tf.pad(labels, [[0, padded - n]])
    return tf.reshape(h, [-1, chunk_rows, tf.shape(hidden)[1]]), tf.reshape(y, [-1, chunk_rows]), n


def _chunked_cross_entropy(hidden, table, labels, chunk_rows):
    @tf.custom_gradient
    def run(hidden, table):
        h, y, n = _chunks(hidden, labels, chunk_rows)

        def forward(chunk):
            h_c, y_c = chunk
            logits = tf.cast(tf.matmul(h_c, table, transpose_b=True), tf.float32)  # [C, V]
            lse = tf.reduce_logsumexp(logits, axis=-1)
            label_logit = tf.gather(logits, y_c, axis=1, batch_dims=1)
            hit = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y_c), tf.float32)
            return lse, label_logit, hit

        spec = (tf.TensorSpec([chunk_rows], tf.float32),) * 3
        lse, label_logit, hits = tf.map_fn(forward, (h, y), fn_output_signature=spec, parallel_iterations=1)
        lse = tf.reshape(lse, [-1])[:n]
        cross_entropy = lse - tf.reshape(label_logit, [-1])[:n]
        hits = tf.reshape(hits, [-1])[:n]

        def grad(d_cross_entropy, d_hits):
            del d_hits  # a count: no gradient
            d = tf.reshape(tf.pad(d_cross_entropy, [[0, tf.shape(h)[0] * chunk_rows - n]]), [-1, chunk_rows])
            lse_c = tf.reshape(tf.pad(lse, [[0, tf.shape(h)[0] * chunk_rows - n]]), [-1, chunk_rows])

            def body(i, d_table, d_hidden):
                h_c, y_c = h[i], y[i]
                logits = tf.cast(tf.matmul(h_c, table, transpose_b=True), tf.float32)  # recomputed, [C, V]
                d_logits = tf.exp(logits - lse_c[i][:, None]) * d[i][:, None]
                d_logits = d_logits - tf.one_hot(y_c, tf.shape(table)[0], dtype=tf.float32) * d[i][:, None]
                d_logits = tf.cast(d_logits, hidden.dtype)
                d_hidden = d_hidden.write(i, tf.matmul(d_logits, table))  # [C, H]
                d_table += tf.cast(tf.matmul(d_logits, h_c, transpose_a=True), tf.float32)  # [V, H]
                return i + 1, d_table, d_hidden

            steps = tf.shape(h)[0]
            _, d_table, d_hidden = tf.while_loop(
                lambda i, *_: i < steps, body,
                (tf.constant(0), tf.zeros(tf.shape(table), tf.float32),
                 tf.TensorArray(hidden.dtype, size=steps, element_shape=[chunk_rows, hidden.shape[1]])),
                parallel_iterations=1)
            d_hidden = tf.reshape(d_hidden.stack(), [-1, tf.shape(hidden)[1]])[:n]
            return d_hidden, tf.cast(d_table, table.dtype)

        return (cross_entropy, hits), grad

    return run(hidden, table)
