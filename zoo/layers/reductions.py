"""Column sums of bf16 gradients, accumulated in float32, for hand-written gradients (bias, LayerNorm gain/offset).

Shape legend: N rows (all leading axes), F columns.

TF's bf16 `BiasAddGrad` and `reduce_sum` accumulate in bf16 (off by several units on sums of ~45 at 2,048 rows);
XLA:CPU's column reductions are exact but slow (a separate pass per reduction, with a float32 copy). A
ones[1, N] @ t[N, F] matmul is both: the matmul kernels (oneDNN, Eigen) accumulate bf16 products in float32 and
round once, and it reads t once.
"""

import tensorflow as tf

from zoo.layers.islands import in_whole_step_xla


def column_sum(t):
    """t [..., F] -> [F] in t's dtype: the sum over every leading axis, accumulated in float32 (or wider).

    16-bit inputs in TF's own kernels take the ones-vector matmul. float32 and wider inputs, and every input
    inside a whole-step XLA compile (`zoo.layers.islands.whole_step_xla`), take a float32 `reduce_sum`: XLA
    fuses the cast into the reduction, and its dot of a [1, N] ones row is slow on CPUs (benchmarks/RESULTS.md,
    "Kernel notes moved from docstrings").
    """
    if in_whole_step_xla() or t.dtype.size >= 4:
        axes = list(range(len(t.shape) - 1))
        return tf.cast(tf.reduce_sum(tf.cast(t, tf.float32 if t.dtype.size < 4 else t.dtype), axis=axes), t.dtype)
    rows = tf.reshape(t, [-1, t.shape[-1]])
    return tf.reshape(tf.matmul(tf.ones([1, tf.shape(rows)[0]], t.dtype), rows), [-1])
