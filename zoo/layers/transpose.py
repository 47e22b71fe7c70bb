"""transpose: tf.transpose through TF's own (Eigen) kernel instead of oneDNN's, with its gradient.

With oneDNN on (TF's default on x86), a float Transpose becomes `_MklTranspose`, a oneDNN reorder that costs
~50 µs even on a few kilobytes (BERT attention at batch 1: 12 transposes, ~0.8 of a ~4.5 ms request on the AMX
Xeon) and is slower than Eigen's on large tensors too (10 bf16 [64, 128, 3, 12, 32] transposes: 13.0 ms against
10.2 ms). Transposing the same bits as integers of the same width keeps TF's own kernel; the bitcasts are free.
"""

import tensorflow as tf

from zoo.layers.islands import in_whole_step_xla

_SAME_WIDTH_INT = {tf.bfloat16: tf.int16, tf.float16: tf.int16, tf.float32: tf.int32, tf.float64: tf.int64}


def _bit_transpose(x, perm):
    as_int = _SAME_WIDTH_INT.get(x.dtype)
    if as_int is None:
        return tf.transpose(x, perm)
    return tf.bitcast(tf.transpose(tf.bitcast(x, as_int), perm), x.dtype)


def transpose(x, perm, training=True):
    """x [d_0, ..., d_k] -> [d_perm[0], ..., d_perm[k]], as tf.transpose; differentiable.

    Inside a whole-step XLA compile it is tf.transpose (XLA fuses it; no oneDNN there).
    training: the gradient is this same transpose (so higher orders work too). With training=False (inference,
    exports) the gradient is a plain tf.transpose: still differentiable to any order, and a SavedModel then holds
    no nested custom gradient, which TF warns about ("unsaved custom gradients") on every load.
    """
    perm = list(perm)
    if in_whole_step_xla():
        return tf.transpose(x, perm)
    inverse = [perm.index(i) for i in range(len(perm))]

    @tf.custom_gradient
    def forward(x):
        if training:
            return _bit_transpose(x, perm), lambda dy: transpose(dy, inverse)
        return _bit_transpose(x, perm), lambda dy: tf.transpose(dy, inverse)

    return forward(x)
