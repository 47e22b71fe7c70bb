"""Atomic sharded TFRecord writer, ``tf.train.Example`` building and parsing from a ``zoo.data.schema`` spec.

Shard naming: an output pattern with one ``*`` in its file name, e.g. ``out/train-*.tfrecord``, gets shards
``out/train-00000-of-00004.tfrecord`` ...; so the *same* pattern is the file pattern the reader globs
(``zoo.data.pipeline.pretraining_dataset_from_records``). A folder gets ``<folder>/examples-*.tfrecord``, and a
pattern without ``*`` gets ``-*`` appended.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Any, Iterable, Mapping, Union

import numpy as np
import tensorflow as tf

from zoo.data import schema

logger = logging.getLogger(__name__)

SpecLike = Mapping[str, Union[schema.FeatureSpec, tf.io.FixedLenFeature]]


def shard_paths(output_pattern_or_dir: str, num_shards: int) -> list[str]:
    """The final shard file names for ``output_pattern_or_dir`` (see the module docstring)."""
    if num_shards <= 0:
        raise ValueError(f"num_shards must be positive, got {num_shards}.")
    pattern = _shard_pattern(output_pattern_or_dir)
    return [pattern.replace("*", f"{i:05d}-of-{num_shards:05d}") for i in range(num_shards)]


def _shard_pattern(output: str) -> str:
    output = os.fspath(output)
    if output.endswith(("/", os.sep)) or tf.io.gfile.isdir(output):
        return os.path.join(output, "examples-*.tfrecord")
    folder, name = os.path.split(output)
    if "*" in folder or name.count("*") > 1:
        raise ValueError(f"Output pattern {output!r} may hold one '*', in the file name only.")
    return output if "*" in name else output + "-*"


class ShardedRecordWriter:
    """Writes serialized records round-robin into ``num_shards`` TFRecord files, atomically.

    Records go to hidden temp files next to the outputs; only a clean exit of the ``with`` block renames them
    into place, so an exception (or a killed job) never leaves a partial shard a later glob would train on.
    Stale shards of the same pattern with another shard count are removed on success for the same reason.

    Example:
        >>> import os
        >>> import numpy as np
        >>> from zoo.data.records import ShardedRecordWriter
        >>> with ShardedRecordWriter("out/train-*.tfrecord", num_shards=4) as writer:
        ...     writer.write_example({"token_ids": np.array([2, 7, 3], np.int32)})
        >>> [os.path.basename(p) for p in writer.paths]
        ['train-00000-of-00004.tfrecord', 'train-00001-of-00004.tfrecord', 'train-00002-of-00004.tfrecord', 'train-00003-of-00004.tfrecord']

    Args:
        output_pattern_or_dir: a pattern with one ``*`` in the file name, a folder, or a path prefix.
        num_shards: number of output files (several, so readers can interleave and shard across hosts).
    """

    def __init__(self, output_pattern_or_dir: str, num_shards: int):
        self.paths = shard_paths(output_pattern_or_dir, num_shards)
        self._pattern = _shard_pattern(output_pattern_or_dir)
        self._tmp_paths = [os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.tmp-{uuid.uuid4().hex}")
                           for p in self.paths]
        self._writers: list[tf.io.TFRecordWriter] = []
        self._next = 0
        self.num_written = 0

    def __enter__(self) -> "ShardedRecordWriter":
        folder = os.path.dirname(self.paths[0])
        if folder:
            tf.io.gfile.makedirs(folder)
        self._writers = [tf.io.TFRecordWriter(p) for p in self._tmp_paths]
        return self

    def write(self, record: bytes) -> None:
        """Appends one serialized record to the next shard (round-robin keeps shards equal in size)."""
        if not self._writers:
            raise RuntimeError("ShardedRecordWriter.write called outside its `with` block.")
        self._writers[self._next].write(record)
        self._next = (self._next + 1) % len(self._writers)
        self.num_written += 1

    def write_example(self, features: Mapping[str, Any], spec: SpecLike | None = None) -> None:
        """Serializes ``features`` with ``make_example`` and writes it."""
        self.write(make_example(features, spec).SerializeToString(deterministic=True))

    def __exit__(self, exc_type, exc, tb) -> bool:
        for writer in self._writers:
            writer.close()
        self._writers = []
        if exc_type is None:
            for tmp, final in zip(self._tmp_paths, self.paths):
                tf.io.gfile.rename(tmp, final, overwrite=True)
            self._remove_stale_shards()
            logger.info("Wrote %d records into %d shards %s", self.num_written, len(self.paths), self._pattern)
        else:
            for tmp in self._tmp_paths:
                if tf.io.gfile.exists(tmp):
                    tf.io.gfile.remove(tmp)
        return False  # never swallow the exception

    def _remove_stale_shards(self) -> None:
        prefix, suffix = self._pattern.split("*")
        ours = re.compile(re.escape(os.path.basename(prefix)) + r"\d{5}-of-\d{5}" + re.escape(suffix) + "$")
        for path in tf.io.gfile.glob(self._pattern):
            if path not in self.paths and ours.match(os.path.basename(path)):
                logger.info("Removing stale shard %s from an earlier run with another shard count.", path)
                tf.io.gfile.remove(path)


def _record_dtype(spec_entry) -> tf.DType:
    if isinstance(spec_entry, schema.FeatureSpec):
        return spec_entry.record_dtype
    return tf.as_dtype(spec_entry.dtype)


def make_example(features: Mapping[str, Any], spec: SpecLike | None = None) -> tf.train.Example:
    """Builds a ``tf.train.Example`` from numpy arrays / python values.

    Args:
        features: name -> array-like (any shape; stored flattened, as ``FixedLenFeature`` expects).
        spec: ``schema`` spec (or FixedLenFeatures) giving each feature's dtype and shape, e.g.
            ``schema.bert_pretraining_spec(T, P)``; it must name exactly the features given, and sizes are
            checked, so a wrong-length example fails here rather than at parse time. None infers the dtype from
            the array (integers -> int64 list, floats -> float list, str/bytes -> bytes list).

    Returns:
        The Example proto.
    """
    if spec is not None and set(spec) != set(features):
        raise ValueError(f"Features {sorted(features)} do not match the schema {sorted(spec)}.")
    out = {}
    for name, value in features.items():
        array = np.asarray(value)
        if spec is not None:
            dtype = _record_dtype(spec[name])
            expected = int(np.prod(spec[name].shape, dtype=np.int64))
            if array.size != expected:
                raise ValueError(f"Feature {name!r} has {array.size} values, the schema expects shape "
                                 f"{tuple(spec[name].shape)}.")
        elif array.dtype.kind in "biu":
            dtype = tf.int64
        elif array.dtype.kind == "f":
            dtype = tf.float32
        else:
            dtype = tf.string
        flat = array.reshape(-1)
        if dtype == tf.int64:
            out[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64)))
        elif dtype == tf.float32:
            out[name] = tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32)))
        else:
            out[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in flat.tolist()]))
    return tf.train.Example(features=tf.train.Features(feature=out))


def write_examples(examples: Iterable[Mapping[str, Any]], path_prefix: str, num_shards: int,
                   spec: SpecLike | None = None) -> list[str]:
    """Writes examples into sharded TFRecords, atomically.

    Args:
        examples: dicts name -> numpy array (e.g. from ``zoo.data.instances``).
        path_prefix: output pattern, folder or prefix, as ``ShardedRecordWriter``.
        num_shards: number of shards.
        spec: optional schema to check and type features with (see ``make_example``).

    Returns:
        The shard paths.
    """
    with ShardedRecordWriter(path_prefix, num_shards) as writer:
        for example in examples:
            writer.write_example(example, spec)
    return writer.paths


def write_counted(examples: Iterable[Mapping[str, Any]], path_prefix: str, num_shards: int,
                  spec: SpecLike | None = None) -> tuple[list[str], int]:
    """`write_examples` that also returns how many examples were written: (shard paths, count)."""
    count = 0

    def counted():
        nonlocal count
        for example in examples:
            count += 1
            yield example

    return write_examples(counted(), path_prefix, num_shards, spec), count


def parse_fn(features_spec: SpecLike):
    """Makes a parser of serialized ``tf.train.Example``s.

    Args:
        features_spec: name -> ``tf.io.FixedLenFeature`` (e.g. ``schema.bert_pretraining_features(T, P)``) or
            name -> ``schema.FeatureSpec``.

    Returns:
        ``parse(serialized)``: string [] or [B] -> dict of tensors [...] or [B, ...]. int64 features come back
        as int32 (the naming contract: ids, masks and labels are int32), floats as float32.
    """
    parsing = {name: (schema.parsing_features({name: s})[name] if isinstance(s, schema.FeatureSpec) else s)
               for name, s in features_spec.items()}
    target = {name: (s.dtype if isinstance(s, schema.FeatureSpec) else
                     tf.int32 if tf.as_dtype(s.dtype) == tf.int64 else tf.as_dtype(s.dtype))
              for name, s in features_spec.items()}

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, parsing)
        return {name: tf.cast(t, target[name]) if t.dtype != target[name] else t for name, t in parsed.items()}

    return parse
