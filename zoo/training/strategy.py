"""The only place that touches devices: builds a tf.distribute strategy from a name."""

import json
import os
import socket

import tensorflow as tf
from absl import logging

STRATEGIES = ("cpu", "mirrored", "multi_worker", "tpu")
TPU_LOOKUP_TIMEOUT_S = 20  # seconds per metadata-server / Cloud TPU API request


class StrategyError(ValueError):
    """A strategy cannot be built as asked; the message says what to do."""


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices (so MirroredStrategy really runs on a laptop).

    Must run before TensorFlow initialises its devices, i.e. before any op runs.
    """
    if num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        raise StrategyError(f"--num_cpu_devices={num_devices} must be set before TensorFlow runs any op ({e}).") from e


def make_strategy(name, *, tpu=None, num_cpu_devices=1):
    """Returns a tf.distribute.Strategy.

    Args:
      name: "cpu" (default strategy, one device), "mirrored" (all local GPUs, else all logical CPUs),
        "multi_worker" (MultiWorkerMirroredStrategy from TF_CONFIG), "tpu" (TPUStrategy for `tpu`).
      tpu: TPU name or grpc:// address for "tpu" ("local" on a TPU VM).
      num_cpu_devices: logical CPU devices to split the host into (for "mirrored"/"multi_worker" on CPU).
    """
    if name not in STRATEGIES:
        raise StrategyError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    split_cpu(num_cpu_devices)
    if name == "cpu":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        logging.info("MirroredStrategy over %s", devices)
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StrategyError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable describing the cluster, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise StrategyError(f"TF_CONFIG is not valid JSON: {e}.") from e
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def _tpu_strategy(tpu):
    if not tpu:
        raise StrategyError("--strategy=tpu needs --tpu=<name or grpc://address> (or --tpu=local on a TPU VM).")
    # TPUClusterResolver asks the GCE metadata server and the Cloud TPU API with urllib's default (no) timeout, so
    # off Google Cloud it could hang; bound every lookup. Any failure there means "no such TPU from here".
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TPU_LOOKUP_TIMEOUT_S)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)  # "local": TF's TPU-VM mode
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # urllib/socket OSErrors, googleapiclient HttpError, ValueError, tf OpErrors...
        raise StrategyError(
            f"No TPU reachable at --tpu={tpu!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Check the TPU name and zone, that this VM can reach it, or use --strategy=cpu|mirrored."
        ) from e
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True on the worker that writes checkpoints and summaries (always true outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())
