"""Column sums of bf16 gradients, accumulated in float32, for hand-written gradients (bias, LayerNorm gain/offset).

Shape legend: N rows (all leading axes), F columns.

TF's bf16 `BiasAddGrad` and `reduce_sum` accumulate in bf16 (off by several units on sums of ~45 at 2,048 rows);
XLA:CPU's column reductions are exact but slow (a separate pass per reduction, with a float32 copy). A
ones[1, N] @ t[N, F] matmul is both: the matmul kernels (oneDNN, Eigen) accumulate bf16 products in float32 and
round once, and it reads t once.
"""

import tensorflow as tf


def column_sum(t):
    """t [..., F] -> [F] in t's dtype: the sum over every leading axis, accumulated in float32."""
    rows = tf.reshape(t, [-1, t.shape[-1]])
    return tf.reshape(tf.matmul(tf.ones([1, tf.shape(rows)[0]], t.dtype), rows), [-1])
