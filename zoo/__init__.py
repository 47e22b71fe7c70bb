"""A Keras 3 / TensorFlow model zoo for language-model pretraining: BERT now, GPT and ELMo on the same layers.

`FAMILIES` names every model family's package in one literal dict: adding a family is one folder and one line.
Families are imported lazily (`family("bert")`) so importing `zoo` has no side effects.
"""

import importlib

FAMILIES = {
    "bert": "zoo.bert",
}


def family(name):
    """The family package for `name` (e.g. zoo.bert), or ValueError listing the known families."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; choose one of {', '.join(FAMILIES)}.")
    return importlib.import_module(FAMILIES[name])
