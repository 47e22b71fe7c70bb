"""XLA "islands": small XLA-compiled kernels inside an otherwise non-XLA training step.

On CPUs the elementwise passes around the oneDNN matmuls are memory-bound, and XLA fuses a chain of them (erf,
exp, casts, random bits, compares) into one loop; whole-step XLA is no substitute there, as XLA's CPU bf16 dots
are slower than oneDNN's. On GPUs the step runs the plain ops instead: an island would need the XLA GPU
toolchain (ptxas, libdevice) for a gain nobody has measured; inside an XLA-compiled step (TPUs, --jit_compile)
an island is inlined like any other function.
"""

import tensorflow as tf


def xla_island(fn):
    """Wraps fn(*tensors) -> tensors: XLA-compiled (one program per input shape) unless a GPU is visible.

    Keep islands out of exported graphs: TF Serving runs XLA clusters only when started with XLA enabled.
    """
    compiled = tf.function(fn, jit_compile=True, autograph=False)

    def call(*args):
        return fn(*args) if tf.config.list_logical_devices("GPU") else compiled(*args)

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call
