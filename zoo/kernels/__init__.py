"""Native CPU kernels: C++ TensorFlow ops built from this folder's sources on first use, cached, optional.

`load(name)` compiles `<name>.cc` with g++ against the installed TensorFlow's headers (`tf.sysconfig`) into
`$ZOO_KERNEL_CACHE` (default `~/.cache/zoo/kernels`), keyed by the source, the TF version and the compiler
flags (the vector ISA ones picked from the CPU's features), and loads it with `tf.load_op_library`. Without a compiler,
or when the build fails, it logs one warning and returns None: callers keep their TF-ops path. They are
training-time CPU kernels only: exports never contain them (zoo.export's op check refuses any op named Zoo*), and
XLA-compiled steps (TPUs, --jit_compile) and GPUs do not use them.

The environment variable ZOO_KERNELS picks the kernels' tier (`setting()`; zoo/layers/tiers.py applies it to the
layers' training ops): `auto` (the default: native kernels where they can run, else XLA islands, plain ops on
GPUs), `native`, `xla` (the islands) or `plain` (plain TF ops, the reference). Only `auto` and `native` load native
kernels: with `xla` or `plain`, `load` returns None (so the fused AdamW update takes TF ops too).
"""

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import threading

from absl import logging

_HERE = os.path.dirname(os.path.abspath(__file__))
_LOCK = threading.Lock()  # replica threads of a MirroredStrategy trace concurrently: build and load once
# No FMA contraction (TF's rounding). The vector ISA is chosen from the CPU's flags: -march=native would also
# enable AVX512-FP16, whose Eigen headers fail to compile with Debian's g++ 12.
_FLAGS = ["-shared", "-fPIC", "-O3", "-w", "-ffp-contract=off", "-fno-math-errno"]  # errno-free sqrt vectorizes
_ISA_FLAGS = (("avx512f avx512dq avx512bw avx512vl avx2 fma", ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"]),
              ("avx2 fma", ["-mavx2", "-mfma"]))


def _isa_flags():
    """The widest vector ISA flags this CPU supports, of those above (none: the x86-64 baseline)."""
    have = set(_cpu_flags().split())
    return next((flags for names, flags in _ISA_FLAGS if set(names.split()) <= have), [])


ENV = "ZOO_KERNELS"
SETTINGS = ("auto", "native", "xla", "plain")
_RETIRED_ENV = "ZOO_NATIVE_KERNELS"
_warned_retired = []


def setting():
    """The value of ZOO_KERNELS (one of SETTINGS; unset or empty: "auto"), read on every call.

    Raises:
      ValueError: for any other value, naming the accepted ones.
    """
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in SETTINGS:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(SETTINGS)} "
                         "(auto: native kernels where they can run, else XLA islands; plain: plain TF ops).")
    if os.environ.get(_RETIRED_ENV) is not None and not _warned_retired:
        _warned_retired.append(True)
        logging.warning("%s is no longer read: set %s=xla for the XLA islands (the old %s=0), %s=plain for plain "
                        "TF ops; %s=%s is in effect.", _RETIRED_ENV, ENV, _RETIRED_ENV, ENV, ENV, value)
    return value


def enabled():
    """True when ZOO_KERNELS allows native kernels (auto or native)."""
    return setting() in ("auto", "native")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _library_path(name, source, compile_flags, link_flags):
    import tensorflow as tf

    key = hashlib.sha256("\0".join([source, tf.__version__, sys.platform, *_FLAGS, *_isa_flags(), *compile_flags,
                                    *link_flags]).encode()).hexdigest()[:16]
    cache = os.environ.get("ZOO_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "zoo", "kernels")
    return os.path.join(cache, f"{name}-{key}.so")


def _build(source_path, library_path, compile_flags, link_flags):
    """Compiles to a temporary file and renames it into place (concurrent processes may build at once)."""
    os.makedirs(os.path.dirname(library_path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(library_path))
    os.close(fd)
    try:
        command = ["g++", *_FLAGS, *_isa_flags(), *compile_flags, source_path, "-o", tmp, *link_flags]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "error" in line] or [result.stderr[-2000:]]
            raise RuntimeError(f"{' '.join(command)} failed:\n" + "\n".join(errors[:10]))
        os.replace(tmp, library_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(name):
    """The op library built from `zoo/kernels/<name>.cc` (a module of op functions), or None if unavailable or
    when ZOO_KERNELS is xla or plain."""
    return _cached_load(name) if enabled() else None


@functools.lru_cache(maxsize=None)
def _cached_load(name):
    with _LOCK:
        return _load(name)


def _load(name):
    import tensorflow as tf

    source_path = os.path.join(_HERE, f"{name}.cc")
    with open(source_path) as f:
        source = f.read()
    compile_flags, link_flags = tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()
    library_path = _library_path(name, source, compile_flags, link_flags)
    try:
        if not os.path.exists(library_path):
            logging.info("Building the native kernel %s into %s (once per machine and TF version).", name, library_path)
            _build(source_path, library_path, compile_flags, link_flags)
        return tf.load_op_library(library_path)
    except Exception as error:  # noqa: BLE001 (no compiler, a failed build or load: the TF-ops path still works)
        logging.warning("Native kernel %s unavailable, using TF ops instead (slower on CPUs): %s", name, error)
        return None
