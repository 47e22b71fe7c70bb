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


def _softmax_terms(labels, logits):
    """labels int32 [N], logits float32 [N, V] -> (probs [N, V], cross-entropy [N], hits [N], label index [N, 2])."""
    probs = tf.nn.softmax(logits)  # [N, V]: one fused oneDNN kernel on CPUs
    index = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)  # [N, 2]
    label_probs = tf.gather_nd(probs, index)  # [N]
    tiny = label_probs < _SMALLEST_SAFE_PROBABILITY

    def exact():
        lse = tf.reduce_logsumexp(logits, axis=-1)
        return tf.where(tiny, lse - tf.gather_nd(logits, index), -tf.math.log(label_probs))

    cross_entropy = tf.cond(tf.reduce_any(tiny), exact, lambda: -tf.math.log(label_probs))
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
    return probs, cross_entropy, hits, index


@tf.custom_gradient
def _cross_entropy_with_hits(labels, logits):
    """labels int32 [N], logits float32 [N, V] -> (cross-entropy [N], hits [N])."""
    probs, cross_entropy, hits, index = _softmax_terms(labels, logits)

    def grad(d_cross_entropy, d_hits):
        del d_hits  # a count: no gradient
        d_logits = probs * d_cross_entropy[:, None]
        return None, tf.tensor_scatter_nd_sub(d_logits, index, d_cross_entropy)

    return (cross_entropy, hits), grad


DEFAULT_MAX_LOGITS_BYTES = 1 << 27
DEFAULT_CHUNK_ROWS = 256


def tied_softmax_cross_entropy(hidden, table, labels, *, chunk_rows=DEFAULT_CHUNK_ROWS,
                               max_logits_bytes=DEFAULT_MAX_LOGITS_BYTES):
    """Cross-entropy and top-1 hits of `labels` under softmax(hidden @ table^T), without [N, V] buffers when large.

    Args:
      hidden: float [N, H] (the compute dtype: bf16 under mixed precision).
      table: float [V, H], the output embedding (tied to the input one); cast to `hidden`'s dtype. V and H static.
      labels: int [N], each in [0, V).
      chunk_rows: the chunked path's working set: its buffers hold about chunk_rows x V logits at a time.
      max_logits_bytes: when N (static) x V x 4 is at most this, the logits are made whole and
        `softmax_cross_entropy_with_hits` runs (one matmul each way, the fastest); otherwise the chunked path
        runs (see `_chunked_cross_entropy`), whose peak holds about chunk_rows x V logits, not N x V. Both paths
        give the same values to float32 rounding (bf16 inputs: to the bf16 rounding of the matmuls' outputs).

    Returns:
      (cross_entropy, hits): float32 [N] each; hits carry no gradient.

    Raises:
      InvalidArgumentError: a label is negative or not below V (when the graph runs).
    """
    hidden = tf.convert_to_tensor(hidden)
    table = tf.cast(table, hidden.dtype)
    rows, vocabulary = hidden.shape[0], table.shape[0]
    if rows is not None and vocabulary is not None and rows * vocabulary * 4 <= max_logits_bytes:
        logits = tf.cast(tf.matmul(hidden, table, transpose_b=True), tf.float32)
        return softmax_cross_entropy_with_hits(labels, logits)
    if vocabulary is None or hidden.shape[1] is None:
        raise ValueError(f"The chunked LM loss wants static V and H, got hidden {hidden.shape}, table {table.shape}.")
    labels = tf.cast(labels, tf.int32)
    with tf.control_dependencies([tf.debugging.assert_less(labels, vocabulary, message="label >= number of classes"),
                                  tf.debugging.assert_non_negative(labels, message="negative label")]):
        labels = tf.identity(labels)
    return _chunked_cross_entropy(hidden, table, labels, max(1, int(chunk_rows)))


def _ceil_div(a, b):
    return -(-a // b)


def _chunked_cross_entropy(hidden, table, labels, chunk_rows):
    """The chunked path: the forward in row chunks, the backward in vocabulary blocks, logits recomputed.

    Forward: K = ceil(N / chunk_rows) chunks of ceil(N / K) rows (fewer than K padded rows in all), each through
    the whole path's own softmax terms (`_softmax_terms`: so the values are the whole path's); it keeps each
    row's log-sum-exp (lse = cross-entropy + label logit, [N]) and no [chunk, V] buffer beyond its chunk.

    Backward: the vocabulary in blocks of `b` columns, b about chunk_rows x V / N (the same logits per buffer as
    a forward chunk), the last block shifted back to end at V. Per block, for all N rows at once:
    g = exp(hidden @ table_b^T - lse) with 1 subtracted at the labels that fall in the block (one in-place
    scatter, no one-hot), cast once to the compute dtype; d table_b = g^T @ (d * hidden) is that block's rows of
    the table gradient outright (no [V, H] float32 accumulator summed once per chunk), and g @ table_b adds to
    a float32 [N, H] accumulator, scaled by d at the end. The upstream d scales the [N, H] sides, not [N, b].
    Every op is static-shaped (a while loop over a fixed number of blocks, dynamic slices of static size), so
    XLA compiles it, and no op accumulates in an order that depends on scheduling: results are deterministic.
    """
    n_static, width = hidden.shape[0], int(hidden.shape[1])
    vocabulary = int(table.shape[0])
    if n_static:
        chunks = _ceil_div(n_static, chunk_rows)
        rows_per_chunk = _ceil_div(n_static, chunks)
        block_target = _ceil_div(chunk_rows * vocabulary, n_static)
    else:
        rows_per_chunk, block_target = chunk_rows, 4096  # N unknown when traced: blocks of 4,096 columns
    blocks = _ceil_div(vocabulary, min(vocabulary, block_target))
    block = _ceil_div(vocabulary, blocks)

    @tf.custom_gradient
    def run(hidden, table):
        n = tf.shape(hidden)[0]
        steps = (n + rows_per_chunk - 1) // rows_per_chunk
        pad = steps * rows_per_chunk - n
        h = tf.reshape(tf.pad(hidden, [[0, pad], [0, 0]]), [-1, rows_per_chunk, width])
        y = tf.reshape(tf.pad(labels, [[0, pad]]), [-1, rows_per_chunk])

        def forward(chunk):
            h_c, y_c = chunk
            logits = tf.cast(tf.matmul(h_c, table, transpose_b=True), tf.float32)  # [C, V]
            _, cross_entropy, hit, index = _softmax_terms(y_c, logits)
            return cross_entropy, hit, cross_entropy + tf.gather_nd(logits, index)

        spec = (tf.TensorSpec([rows_per_chunk], tf.float32),) * 3
        cross_entropy, hits, lse = (
            tf.reshape(t, [-1])[:n]
            for t in tf.map_fn(forward, (h, y), fn_output_signature=spec, parallel_iterations=1))

        def grad(d_cross_entropy, d_hits):
            del d_hits  # a count: no gradient
            d = d_cross_entropy[:, None]
            scaled = tf.cast(d * tf.cast(hidden, tf.float32), hidden.dtype)  # d * hidden, [N, H]
            rows = tf.range(n)

            def body(k, d_hidden, d_table):
                start = tf.minimum(k * block, vocabulary - block)
                table_b = tf.slice(table, [start, 0], [block, width])  # [b, H]
                logits = tf.cast(tf.matmul(hidden, table_b, transpose_b=True), tf.float32)  # recomputed, [N, b]
                g = tf.exp(logits - lse[:, None])
                local = labels - start
                inside = tf.cast((local >= 0) & (local < block), tf.float32)
                g = tf.tensor_scatter_nd_sub(g, tf.stack([rows, tf.clip_by_value(local, 0, block - 1)], 1), inside)
                g = tf.cast(g, hidden.dtype)
                # Rows k*b .. k*b + b of d table (the shifted last block's rows rotated into place: its first
                # rows, the block before's, land at the end, past V), so the blocks stack into d table as is.
                shift = k * block - start
                d_table = d_table.write(k, tf.gather(tf.matmul(g, scaled, transpose_a=True),
                                                     (tf.range(block) + shift) % block))
                # Those first rows of the shifted last block add nothing to d hidden either.
                fresh = tf.cast(tf.range(block) >= shift, hidden.dtype)
                d_hidden += tf.cast(tf.matmul(g, table_b * fresh[:, None]), tf.float32)  # [N, H]
                return k + 1, d_hidden, d_table

            _, d_hidden, d_table = tf.while_loop(
                lambda k, *_: k < blocks, body,
                (tf.constant(0), tf.zeros([n, width], tf.float32),
                 tf.TensorArray(hidden.dtype, size=blocks, element_shape=[block, width])),
                parallel_iterations=1)
            # [blocks x b, H] -> its first V rows: a leading-dimension slice, which TF aliases rather than copies.
            d_table = tf.reshape(d_table.stack(), [blocks * block, width])[:vocabulary]
            return tf.cast(d * d_hidden, hidden.dtype), tf.cast(d_table, table.dtype)

        return (cross_entropy, hits), grad

    return run(hidden, table)
