"""Load a BERT backbone + preprocessor from a zoo model dir or export; write the model-dir config."""

import os

from zoo import model_dir as md
from zoo.bert.backbone import BertBackbone
from zoo.bert.config import BertConfig
from zoo.bert.preprocessor import BertPreprocessor
from zoo.text.wordpiece import WordPieceTokenizer, load_vocabulary, save_vocabulary

VOCAB_FILE = "vocab.txt"


def write_model_dir(model_dir, config, vocabulary, lowercase=True, sequence_length=128, **extra):
    """Writes zoo_config.json and vocab.txt describing a BERT model into `model_dir`."""
    os.makedirs(model_dir, exist_ok=True)
    save_vocabulary(vocabulary, os.path.join(model_dir, VOCAB_FILE))
    md.write_config(
        model_dir,
        {
            "family": "bert",
            "backbone": config.to_dict(),
            "preprocessor": {"lowercase": bool(lowercase), "sequence_length": int(sequence_length), "vocabulary": VOCAB_FILE},
            **extra,
        },
    )


def load_pretrained(path, sequence_length=None, trim=False, restore=True):
    """Returns (BertBackbone with trained weights, BertPreprocessor) from a model dir or an export."""
    config = md.read_config(path)
    if config.get("family") != "bert":
        raise md.ModelDirError(f"{path!r} holds a {config.get('family')!r} model, not BERT.")
    backbone = BertBackbone(**BertConfig.from_dict(config["backbone"]).to_dict())
    backbone.build()
    if restore:
        md.restore_backbone(backbone, path)
    pre = config["preprocessor"]
    vocabulary = load_vocabulary(os.path.join(md.config_dir(path), pre["vocabulary"]))
    tokenizer = WordPieceTokenizer(vocabulary, lowercase=pre["lowercase"])
    preprocessor = BertPreprocessor(tokenizer, sequence_length or pre["sequence_length"], trim=trim)
    return backbone, preprocessor


def load_classifier(path, trim=False, restore=True):
    """A fine-tuned `BertClassifier` (with its preprocessor) from a model dir written by trainers.finetune.

    restore=False builds it from the config only (e.g. a bfloat16 twin that weights are then cast into).
    """
    from zoo.bert.classifier import BertClassifier

    config = md.read_config(path)
    if "classifier" not in config:
        raise md.ModelDirError(f"{path!r} holds a pretrained BERT, not a fine-tuned classifier.")
    backbone, preprocessor = load_pretrained(path, trim=trim, restore=False)
    classifier = BertClassifier(backbone, preprocessor=preprocessor, **config["classifier"])
    classifier.build()
    if restore:
        md.restore(path, backbone=classifier.backbone, head=classifier.head)
    return classifier
