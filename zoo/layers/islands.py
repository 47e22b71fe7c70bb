"""XLA "islands": small XLA-compiled kernels inside an otherwise non-XLA training step, and the whole-step XLA flag.

An island is one function of plain TF ops compiled by XLA into one loop (`xla_island`): on CPUs the elementwise
passes around the oneDNN matmuls are memory-bound, and XLA fuses a chain of them (erf, exp, casts, random bits,
compares) into one pass. Whole-step XLA is no substitute there, as XLA's CPU bf16 dots are slower than oneDNN's.
Inside an XLA-compiled step (TPUs, --jit_compile) an island is inlined like any other function. Which ops run as
islands, native kernels or plain ops is decided in one place, zoo/layers/tiers.py (ZOO_KERNELS).
"""
import contextlib
import threading

import tensorflow as tf

_state = threading.local()


@contextlib.contextmanager
def whole_step_xla(enabled=True):
    """Marks what is traced inside as part of a whole-step XLA compile (--jit_compile, TPUs).

    The training loop enters it around the forward and backward pass it compiles; kernels that are best written
    one way for TF's own op kernels and another way for XLA (`zoo.layers.reductions.column_sum`) ask
    `in_whole_step_xla()` while they are traced. Nesting only adds: `whole_step_xla(False)` inside an enabled
    region leaves it enabled (the outer compile still inlines everything).
    """
    previous = getattr(_state, "whole_step_xla", False)
    _state.whole_step_xla = previous or bool(enabled)
    try:
        yield
    finally:
        _state.whole_step_xla = previous


def in_whole_step_xla():
    """True while tracing inside `whole_step_xla()`."""
    return getattr(_state, "whole_step_xla", False)


class WholeStepXlaTrainStep:
    """Mixin for `keras.Model` task models: Keras' `train_step` traced under `whole_step_xla(self.jit_compile)`.

    So `model.compile(jit_compile=True)` + `fit` picks the same XLA formulations as the zoo's training loop.
    List it before `keras.Model`: `class BertClassifier(WholeStepXlaTrainStep, keras.Model)`.
    """

    def train_step(self, data):
        with whole_step_xla(bool(getattr(self, "jit_compile", False))):
            return super().train_step(data)


def xla_island(fn):
    """fn(*tensors) -> tensors, XLA-compiled (one program per input shape); name and docstring kept.

    Keep islands out of exported graphs: TF Serving runs XLA clusters only when started with XLA enabled.
    """
    compiled = tf.function(fn, jit_compile=True, autograph=False)

    def call(*args):
        return compiled(*args)

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call
