"""GELU, x * Phi(x), exact (erf: BERT) or in its tanh form (GPT-1), with hand-written gradients in one expression.

Autodiff of 0.5 * x * erfc(-x / sqrt(2)) makes about eight full passes over the [B, T, F] feed-forward
activations; here the backward is one expression (`gelu` keeps Phi(x) from the forward; `gelu_for_training`
recomputes it from x and the bias in one kernel, zoo/layers/tiers.py).
"""

import tensorflow as tf

from zoo.layers import tiers
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


def _phi(xf, dtype):
    """Phi(x), the standard normal CDF, of float32 xf for results in `dtype`.

    float32 (and wider) results: 0.5 * erfc(-x / sqrt(2)), exact to TF's gelu. 16-bit results:
    0.5 + 0.5 * erf(x / sqrt(2)), which XLA:CPU computes faster; 1 + erf cancels in the far negative tail, so Phi
    carries an absolute error of ~3e-8 there (x * Phi(x) within ~1e-6 absolute, exactly 0 below about -5.3, where
    the true value is under 1e-7): far below bf16's rounding of the O(1) activations around it.
    """
    if dtype == tf.float32 or dtype == tf.float64:
        return 0.5 * tf.math.erfc(-xf * _SQRT_HALF)
    return 0.5 + 0.5 * tf.math.erf(xf * _SQRT_HALF)


def _bias_gelu(x, bias):
    """(x + bias) * Phi(x + bias) in float32, in x's dtype."""
    xf = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    return tf.cast(xf * _phi(xf, x.dtype), x.dtype)


def _bias_gelu_grad(x, bias, dy):
    """dy * (Phi(z) + z * phi(z)), z = x + bias, in float32, in x's dtype."""
    xf = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    cdf = _phi(xf, x.dtype)
    pdf = tf.exp(-0.5 * tf.square(xf)) * _INV_SQRT_2PI
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), x.dtype)


_SQRT_2_OVER_PI = 0.7978845608028654
_TANH_CUBIC = 0.044715


def _tanh_phi(xf):
    """GPT-1's approximation of Phi: 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))), float32."""
    return 0.5 + 0.5 * tf.tanh(_SQRT_2_OVER_PI * (xf + _TANH_CUBIC * xf * xf * xf))


def _bias_gelu_tanh(x, bias):
    """The tanh GELU of x + bias, float32 inside, in x's dtype (`tf.nn.gelu(approximate=True)`)."""
    xf = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    return tf.cast(xf * _tanh_phi(xf), x.dtype)


def _bias_gelu_tanh_grad(x, bias, dy):
    """dy * d/dz [z * c(z)], c = the tanh Phi: c + z * 2 c (1 - c) * sqrt(2/pi) * (1 + 3 * 0.044715 z^2)."""
    xf = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    cdf = _tanh_phi(xf)
    slope = 2.0 * cdf * (1.0 - cdf) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * xf * xf)
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * slope), x.dtype)


_gelu_forward_xla = xla_island(_bias_gelu)
_gelu_backward_xla = xla_island(_bias_gelu_grad)
_gelu_tanh_forward_xla = xla_island(_bias_gelu_tanh)
_gelu_tanh_backward_xla = xla_island(_bias_gelu_tanh_grad)


def _gelu_form(forward_fn, backward_fn):
    """The op's plain or island form: bias None adds a scalar zero (no [F] tensor to read) and gets no gradient;
    the bias gradient is the float32-accumulated column sum of dx."""

    def forward(x, bias=None):
        added = tf.zeros([], x.dtype) if bias is None else bias
        return forward_fn(x, added), (x, added, bias is not None)

    def backward(saved, dy):
        x, added, has_bias = saved
        dx = backward_fn(x, added, dy)
        return (dx, tf.cast(column_sum(dx), added.dtype)) if has_bias else dx

    return tiers.Form(forward, backward)


def _native_prepare(x, bias=None):
    """The native kernel reads a float32 [F] bias: zeros when there is none."""
    features = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
    return x, tf.zeros([features], tf.float32) if bias is None else tf.cast(bias, tf.float32)


def _native_gelu(approximate):
    """ZooBiasGelu / ZooBiasGeluGrad; the gradient kernel returns dx and the float32 bias gradient."""
    return tiers.Form(
        forward=lambda x, bias: (tiers.native_library().zoo_bias_gelu(x, bias, approximate=approximate), (x, bias)),
        backward=lambda saved, dy: tiers.native_library().zoo_bias_gelu_grad(
            *saved, tf.cast(dy, saved[0].dtype), approximate=approximate),
        prepare=_native_prepare)


bias_gelu = tiers.TieredOp(
    "bias_gelu",
    native=_native_gelu(False),
    xla=_gelu_form(_gelu_forward_xla, _gelu_backward_xla),
    plain=_gelu_form(_bias_gelu, _bias_gelu_grad),
)

bias_gelu_tanh = tiers.TieredOp(
    "bias_gelu_tanh",
    native=_native_gelu(True),
    xla=_gelu_form(_gelu_tanh_forward_xla, _gelu_tanh_backward_xla),
    plain=_gelu_form(_bias_gelu_tanh, _bias_gelu_tanh_grad),
)


def gelu_tanh_for_training(x, bias=None):
    """GPT-1's tanh GELU of x + bias, as `gelu_for_training` computes the exact one (same kernels, tanh form)."""
    return bias_gelu_tanh(x) if bias is None else bias_gelu_tanh(x, bias)


def gelu_tanh_for_inference(x):
    """The tanh GELU as TensorFlow's own op, `tf.nn.gelu(approximate=True)` (what any TF Serving runs)."""
    return tf.nn.gelu(x, approximate=True)


def gelu_for_training(x, bias=None):
    """gelu(x + bias), float32 inside, with a hand-written gradient recomputed from x and bias in one pass.

    The bias of the matmul before it is added inside the kernel: one pass less over [B*T, F] each way, and the
    matmul stays a plain MatMul (see `zoo.layers.dense.bias_add_for_training`). Training only: the Transformer
    block uses `gelu_for_inference` whenever training is False, so exports never contain these kernels.

    Args:
      x: float tensor [..., F].
      bias: None or float [F] (any float dtype; added in float32).

    Returns:
      (x + bias) * Phi(x + bias), x's shape and dtype. Gradients: dx = dy * (Phi + (x + bias) * phi); dbias = the
      float32-accumulated column sum of dx, in bias's dtype.
    """
    return bias_gelu(x) if bias is None else bias_gelu(x, bias)


def gelu_for_inference(x):
    """The exact GELU x * Phi(x), as `tf.nn.gelu(approximate=False)`, for forward passes that need no gradient.

    Written as TensorFlow's own op, which oneDNN's graph rewriter fuses with a 2-D MatMul + BiasAdd right before
    it into one kernel (GELU computed in float32 inside it). Where no such fusion happens (XLA,
    TF_ENABLE_ONEDNN_OPTS=0, accelerators) its ops run in x's dtype, bf16 included, unlike `gelu`.

    Args:
      x: float tensor of any shape.

    Returns:
      x * Phi(x), same shape and dtype.
    """
    return tf.nn.gelu(x, approximate=False)
