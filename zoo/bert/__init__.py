"""BERT (Devlin et al. 2018): WordPiece, post-LN encoder, masked LM + next-sentence prediction.

`FAMILY` is BERT's side of the family contract (zoo.contract.Family) that the trainers drive. The classes and a few
conveniences for notebooks and tests are exported too.
"""

from zoo.bert.backbone import BertBackbone
from zoo.bert.classifier import BertClassifier
from zoo.bert.config import PRESETS, BertConfig, get_preset
from zoo.bert.family import BertFamily
from zoo.bert.preprocessor import BertPreprocessor
from zoo.bert.pretrainer import BertPretrainer

FAMILY = BertFamily()
Config = BertConfig
pretrainer = FAMILY.pretrainer
load_pretrained = FAMILY.load_pretrained
load_classifier = FAMILY.load_task


def write_model_dir(model_dir, config, vocabulary, lowercase=True, sequence_length=128, **extra):
    """zoo_config.json + vocab.txt for a BERT with a WordPiece `vocabulary` (list of tokens)."""
    from zoo.text.wordpiece import WordPieceTokenizer

    return FAMILY.write_model_dir(model_dir, config, WordPieceTokenizer(vocabulary, lowercase=lowercase), sequence_length, **extra)


__all__ = [
    "FAMILY",
    "PRESETS",
    "BertBackbone",
    "BertClassifier",
    "BertConfig",
    "BertFamily",
    "BertPreprocessor",
    "BertPretrainer",
    "Config",
    "get_preset",
    "load_classifier",
    "load_pretrained",
    "pretrainer",
    "write_model_dir",
]
