"""The zoo's absl apps (`python -m trainers.<app>`): the only place flags live.

Importing this package imports TensorFlow with its start-up chatter filtered out: on a CPU machine TF's C++ code
prints, before any log setting applies, that oneDNN is on and that no CUDA driver was found (twice), then an
error that cuInit failed. Those lines are dropped; anything else TF prints then is passed through. Set
ZOO_TF_STARTUP_LOGS=1 to see everything.
"""

import os
import re
import sys
import tempfile

_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cudart_stub\.cc|"
    r"Could not find cuda drivers|failed call to cuInit|cuda_platform\.cc|cuda_executor\.cc|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"TF-TRT Warning|This TensorFlow binary is optimized to use available CPU instructions|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags")


def _import_tensorflow_quietly():
    if os.environ.get("ZOO_TF_STARTUP_LOGS") == "1" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe, now rather than at the first op
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not _STARTUP_NOISE.search(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")


_import_tensorflow_quietly()
