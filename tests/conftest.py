"""Shared fixtures: tiny configs, a small real vocabulary, quiet TensorFlow."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import pytest  # noqa: E402

TINY = dict(vocabulary_size=120, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=64)


@pytest.fixture(scope="session")
def tiny_config():
    from zoo.bert import BertConfig

    return BertConfig(**TINY)


@pytest.fixture(scope="session")
def real_vocabulary():
    """A 600-token WordPiece vocabulary learned from 300 real IMDB reviews (the demo corpus)."""
    from zoo.data.corpus import imdb_documents
    from zoo.text.wordpiece import learn_vocabulary

    docs = imdb_documents()[:300]
    return learn_vocabulary((s for d in docs for s in d), 600)


@pytest.fixture(params=["xla", "native", "plain"])
def training_kernels(request, monkeypatch):
    """Runs a test in each tier of zoo/layers' training kernels (zoo/layers/tiers.py, chosen by ZOO_KERNELS):
    the XLA islands, the native kernels and plain TF ops. The native run skips only where no g++ exists (or a GPU
    is visible); with one, a failed build fails."""
    import shutil

    monkeypatch.setenv("ZOO_KERNELS", request.param)
    if request.param != "native":
        return request.param
    import tensorflow as tf

    from zoo import kernels
    from zoo.layers import tiers

    if shutil.which("g++") is None:
        pytest.skip("no g++ on this machine: zoo/kernels/layer_ops.cc cannot build; the other tiers are tested alone")
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is visible: the native CPU kernels stand aside (zoo/layers/tiers.py)")
    assert kernels.load("layer_ops") is not None, "g++ is here but zoo/kernels/layer_ops.cc did not build (see the log)"
    assert tiers.select("layer_norm", tf.float32) == "native"
    return request.param
