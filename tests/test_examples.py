"""Every `>>>` example in zoo's docstrings and every ```python block of README.md runs as written.

They run in a scratch folder that holds what the examples name, made at a tiny size: `runs/bert_tiny` (a
pretrained model dir), `exports/bert_tiny` (its export) and `vocab.txt`. Docstring examples are doctests (their
printed values are checked); README blocks run top to bottom in one namespace each.
"""

import doctest
import importlib
import os
import pkgutil
import re

import pytest
import tensorflow as tf

import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _zoo_modules():
    for info in pkgutil.walk_packages(zoo.__path__, "zoo."):
        yield importlib.import_module(info.name)
    yield zoo


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for module in _zoo_modules():
        tests += [t for t in finder.find(module) if t.examples and t.name.startswith(module.__name__)]
    return {t.name: t for t in tests}


DOCTESTS = _doctests()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, real_vocabulary):
    """A folder with what the examples name, at a tiny size."""
    import keras

    from trainers.common import export_model_dir
    from zoo.bert import BertConfig, pretrainer, write_model_dir
    from zoo.text.wordpiece import save_vocabulary

    folder = tmp_path_factory.mktemp("examples")
    keras.utils.set_random_seed(1)
    config = BertConfig(vocabulary_size=len(real_vocabulary), num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                        max_sequence_length=128)
    model_dir = str(folder / "runs" / "bert_tiny")
    write_model_dir(model_dir, config, real_vocabulary, sequence_length=32)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=pretrainer(config)), model_dir, max_to_keep=1).save()
    export_model_dir(model_dir, str(folder / "exports" / "bert_tiny"))
    save_vocabulary(real_vocabulary, str(folder / "vocab.txt"))
    return folder


def test_there_are_examples_to_run():
    # The collectors must find what they are meant to run (a broken finder would pass every test below).
    assert len(DOCTESTS) >= 6 and any("BertClassifier" in name for name in DOCTESTS)
    assert len(_readme_blocks()) >= 1


@pytest.mark.parametrize("name", sorted(DOCTESTS))
def test_docstring_example_runs(name, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    test = DOCTESTS[name]
    test.globs = {"__name__": "__example__"}  # as written: an example imports what it uses
    failures = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)



def _readme_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_readme_python_block_runs(index, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    exec(compile(_readme_blocks()[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
