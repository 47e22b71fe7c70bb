"""Activations with hand-written gradients: fewer elementwise passes than autodiff of their formulas.

On CPUs the non-matmul work of a Transformer step is memory-bound; autodiff of 0.5 * x * erfc(-x / sqrt(2))
makes about eight full passes over the [B, T, F] feed-forward activations. Here the backward is one expression
(`gelu` keeps Phi(x) from the forward; `gelu_for_training` recomputes it inside one XLA loop).
"""

import tensorflow as tf

from zoo.layers import native
from zoo.layers.islands import xla_island
from zoo.layers.reductions import column_sum

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@tf.custom_gradient
def gelu(x):
    """The exact (erf) GELU of BERT's and GPT's original code, x * Phi(x), computed in float32.

    Args:
      x: float tensor of any shape (bfloat16 under mixed precision).

    Returns:
      x * Phi(x), same shape and dtype; its gradient is Phi(x) + x * phi(x).
    """
    xf = tf.cast(x, tf.float32)
    cdf = 0.5 * tf.math.erfc(-xf * _SQRT_HALF)  # Phi(x)

    def grad(dy):
        pdf = tf.exp(-0.5 * tf.square(xf)) * _INV_SQRT_2PI  # phi(x)
        return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), x.dtype)

    return tf.cast(xf * cdf, x.dtype), grad


# XLA islands (zoo/layers/islands.py): each is one fused loop over x, erf, exp and the casts included. On a CPU
# the compiled forward + backward took 0.4-0.6x the time of `gelu`'s plain ops at [2048, 3072] and [4096, 1024]
# in bf16 (ad hoc, one machine).
def _phi(xf, dtype):
    """Phi(x) of float32 xf for results in `dtype`.

    For 16-bit results 0.5 + 0.5 * erf(x / sqrt(2)): XLA:CPU's erf is one polynomial, its erfc an exp and a
    rational function; at [2048, 3072] bf16 out of cache the forward took 3.65 ms against 5.43 and the backward
    4.10 against 6.01 (ad hoc, AMX Xeon). The cost is in the far negative tail: 1 + erf cancels, so Phi carries an
    absolute error of ~3e-8 (x * Phi(x) within ~1e-6 absolute, exactly 0 below about -5.3, where the true value is
    under 1e-7): far below bf16's rounding of the O(1) activations around it. float32 keeps erfc, exact to TF's gelu.
    """
    if dtype == tf.float32 or dtype == tf.float64:
        return 0.5 * tf.math.erfc(-xf * _SQRT_HALF)
    return 0.5 + 0.5 * tf.math.erf(xf * _SQRT_HALF)


@xla_island
def _gelu_forward_xla(x, bias):
    xf = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    return tf.cast(xf * _phi(xf, x.dtype), x.dtype)


@xla_island
def _gelu_backward_xla(x, bias, dy):
    xf = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    cdf = _phi(xf, x.dtype)
    pdf = tf.exp(-0.5 * tf.square(xf)) * _INV_SQRT_2PI
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), x.dtype)


def gelu_for_training(x, bias=None):
    """`gelu(x + bias)` (same maths, float32 inside, same gradient) as two XLA islands, for training steps.

    The bias of the matmul before it is added inside the islands: one pass less over [B*T, F] each way, and
    the matmul stays a plain MatMul (see `zoo.layers.dense.bias_add_for_training` for why that matters).
    Keep it out of exported graphs: TF Serving runs XLA clusters only when started with XLA enabled (the
    Transformer block uses `gelu_for_inference` whenever training is False).

    Args:
      x: float tensor [..., F].
      bias: None or float [F] (any float dtype; added in float32).

    Returns:
      (x + bias) * Phi(x + bias), x's shape and dtype; the gradient Phi + (x + bias) * phi is recomputed from x
      and bias in one pass; the bias gradient is its float32-accumulated column sum (`column_sum`), in bias's dtype.

    On a CPU-only machine the native kernels run instead (`zoo.layers.native`; same maths, the bias gradient
    summed inside the backward kernel).
    """
    library = native.layer_ops(x.dtype)
    if library is not None:
        return _gelu_native(library, x, bias)
    if bias is None:
        return _gelu_no_bias(x)
    return _gelu_with_bias(x, bias)


@tf.custom_gradient
def _gelu_no_bias(x):
    zero = tf.zeros([], x.dtype)  # a scalar: broadcasts to any x, no [F] tensor to read
    return _gelu_forward_xla(x, zero), lambda dy: _gelu_backward_xla(x, zero, dy)


@tf.custom_gradient
def _gelu_with_bias(x, bias):
    def grad(dy):
        dx = _gelu_backward_xla(x, bias, dy)
        return dx, tf.cast(column_sum(dx), bias.dtype)

    return _gelu_forward_xla(x, bias), grad


def _gelu_native(library, x, bias):
    """`gelu_for_training` as ZooBiasGelu / ZooBiasGeluGrad (zoo/kernels/layer_ops.cc); bias None adds zeros."""
    features = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
    bias = tf.zeros([features], tf.float32) if bias is None else tf.cast(bias, tf.float32)

    @tf.custom_gradient
    def gelu_with_bias(x, bias):
        def grad(dy):
            return library.zoo_bias_gelu_grad(x, bias, tf.cast(dy, x.dtype))  # dx, dbias (float32)

        return library.zoo_bias_gelu(x, bias), grad

    return gelu_with_bias(x, bias)


def gelu_for_inference(x):
    """The same exact GELU as `tf.nn.gelu(approximate=False)`, for forward passes that need no gradient.

    Written as TensorFlow's own op pattern right after a 2-D MatMul + BiasAdd, oneDNN's graph rewriter fuses all
    three into one kernel (GELU computed in float32 inside it): at [8192, 384] x [384, 1536] in bf16 the fused
    matmul + bias + GELU took 0.58x the time of matmul + bias + `gelu` (one ad hoc measurement). Where no such
    fusion happens (XLA, TF_ENABLE_ONEDNN_OPTS=0, accelerators) its ops run in x's dtype, bf16 included, unlike
    `gelu`.

    Args:
      x: float tensor of any shape.

    Returns:
      x * Phi(x), same shape and dtype.
    """
    return tf.nn.gelu(x, approximate=False)
