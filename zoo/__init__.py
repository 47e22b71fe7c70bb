"""A Keras 3 / TensorFlow model zoo for language-model pretraining: BERT, GPT and ELMo on the same layers.

`FAMILIES` names every model family's package in one literal dict: adding a family is one folder and one line.
Each package holds `FAMILY`, its side of the contract in `zoo.contract` (what the trainers, the export and the
converters call). Families are imported lazily (`family("bert")`), so importing `zoo` has no side effects.

  >>> import zoo
  >>> backbone, preprocessor = zoo.load_pretrained("runs/bert_tiny")   # any family's model dir or export
"""

import importlib

FAMILIES = {
    "bert": "zoo.bert",
    "gpt": "zoo.gpt",
    "elmo": "zoo.elmo",
}


def family(name):
    """The `zoo.contract.Family` of `name` (e.g. "bert"), or ValueError listing the known families."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; choose one of {', '.join(FAMILIES)}.")
    return importlib.import_module(FAMILIES[name]).FAMILY


def family_of(path):
    """The family of the model in a zoo model dir or export (from its zoo_config.json)."""
    from zoo import model_dir

    return family(model_dir.read_config(path).get("family"))


def load_pretrained(path, sequence_length=None, trim=False, restore=True):
    """(backbone with trained weights, preprocessor) of any family's model dir or export."""
    return family_of(path).load_pretrained(path, sequence_length=sequence_length, trim=trim, restore=restore)


def load_task(path, trim=False, restore=True):
    """The fine-tuned task model (raw strings in) of any family's model dir (`trainers.finetune` output)."""
    return family_of(path).load_task(path, trim=trim, restore=restore)
