"""The one place that picks how the Transformer's memory-bound training passes run: native kernel, XLA island or
plain TF ops.

Layer norm, dropout + residual add + layer norm, bias + GELU, the Dense bias add, dropout and the attention softmax
are each a `TieredOp`: one op written in three forms with the same maths and the same dropout masks, registered
side by side, and one hand-written gradient wrapper around whichever form `select` picks at trace time:

  native  the C++ kernels of zoo/kernels/layer_ops.cc (one multithreaded pass per direction, float32 maths,
          column sums accumulated inside); CPU-only machines with g++, float32 / bfloat16, outside any XLA
          compilation.
  xla     "XLA islands" (zoo/layers/islands.py): the plain form's row-wise maths compiled by XLA into one loop
          each way, inside an otherwise non-XLA step.
  plain   the same functions as plain TF ops (no XLA, no native op): the reference the other tiers are tested
          against, and what runs on GPUs.

The environment variable ZOO_KERNELS (read by `zoo.kernels.setting()` at trace time) selects the tier:
  auto    (default) native where it can run, else the islands; plain ops when a GPU is visible. Inside a
          whole-step XLA compile (--jit_compile, TPUs, `jit_compile=True` functions) the islands are inlined
          into the surrounding program (plain ops on GPUs).
  native  the native kernels; where they cannot run (no g++, a dtype or shape they do not take, a visible GPU
          or TPU, inside an XLA compilation) the islands, with one logged warning per reason.
  xla     the islands everywhere.
  plain   plain TF ops everywhere.
Any other value raises a ValueError naming these. Inference never calls these ops (the layers take their
inference forms when training is False), so exports contain neither islands nor Zoo* ops.
"""

import dataclasses
from typing import Callable, Optional

import tensorflow as tf
from absl import logging
from tensorflow.python.ops import control_flow_util

from zoo import kernels
from zoo.layers.islands import in_whole_step_xla

TIERS = ("native", "xla", "plain")
NATIVE_DTYPES = (tf.float32, tf.bfloat16)
_warned = set()


def requested():
    """ZOO_KERNELS: "auto", "native", "xla" or "plain" (ValueError for anything else)."""
    return kernels.setting()


def in_xla_compilation():
    """True while tracing inside any XLA compilation: a whole-step compile or a `jit_compile=True` function."""
    return in_whole_step_xla() or control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _accelerator_visible():
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _why_not_native(dtype, applies):
    """None when the native kernel can run for this call, else the reason it cannot."""
    if not applies:
        return "the native kernel does not take this configuration"
    if dtype is not None and tf.as_dtype(dtype) not in NATIVE_DTYPES:
        return f"the native kernels take float32 and bfloat16, not {tf.as_dtype(dtype).name}"
    if in_xla_compilation():
        return "inside an XLA compilation, which has no kernel for Zoo* ops"
    if _accelerator_visible():
        return "a GPU or TPU is visible (the native kernels are CPU kernels)"
    if native_library() is None:
        return "zoo/kernels/layer_ops.cc did not build (is g++ installed?)"
    return None


def select(name, dtype=None, native_applies=True):
    """The tier ("native", "xla" or "plain") op `name` runs in for the call being traced now (see the docstring).

    Args:
      name: the op's name, for the fallback warning.
      dtype: the dtype of the tensors the native kernel would read and write (None: any).
      native_applies: False where the call's configuration has no native form (e.g. a probability dtype other
        than the scores'); the native tier then falls back as if it could not run.
    """
    wanted = requested()
    if wanted in ("xla", "plain"):
        return wanted
    reason = _why_not_native(dtype, native_applies)
    if reason is None:
        return "native"
    fallback = "plain" if wanted == "auto" and tf.config.list_logical_devices("GPU") else "xla"
    if wanted == "native" and reason not in _warned:
        _warned.add(reason)
        logging.warning("%s=native, but %s cannot run its native kernel: %s; using the XLA islands instead "
                        "(logged once).", kernels.ENV, name, reason)
    return fallback


def native_library():
    """The `layer_ops` op library (zoo/kernels/layer_ops.cc), or None where it is unavailable or ZOO_KERNELS
    rules native kernels out."""
    return kernels.load("layer_ops")


@dataclasses.dataclass(frozen=True)
class Form:
    """One tier's form of an op.

    forward(*inputs, **attrs) -> (output, saved): saved is whatever backward needs.
    backward(saved, dy, **attrs) -> the gradients of the inputs, a tuple in their order.
    prepare(*inputs, **attrs) -> inputs: optional, run before the gradient wrapper (autodiff sees it), e.g. the
      casts a native kernel needs.
    """

    forward: Callable
    backward: Callable
    prepare: Optional[Callable] = None


class TieredOp:
    """A training op in its native, xla and plain forms, with one hand-written gradient wrapper.

    Calling it runs the form `select` picks for the first input's dtype; the output keeps that input's static
    shape (XLA's outputs lose static dims).
    """

    def __init__(self, name, *, native, xla, plain):
        self.name = name
        self.forms = {"native": native, "xla": xla, "plain": plain}

    def tier(self, dtype=None, native_applies=True):
        return select(self.name, dtype, native_applies)

    def __call__(self, *inputs, native_applies=True, **attrs):
        return self.call_form(self.tier(inputs[0].dtype, native_applies), *inputs, **attrs)

    def call_form(self, tier, *inputs, **attrs):
        """The op in the given tier's form (tests and benchmarks; layers call the op itself)."""
        form = self.forms[tier]
        shape = inputs[0].shape
        if form.prepare is not None:
            inputs = form.prepare(*inputs, **attrs)

        @tf.custom_gradient
        def op(*inputs):
            output, saved = form.forward(*inputs, **attrs)
            return output, lambda dy: form.backward(saved, dy, **attrs)

        output = op(*inputs)
        if shape.rank is not None and (output.shape.rank is None or output.shape.as_list() != shape.as_list()):
            output = tf.ensure_shape(output, shape)
        return output
