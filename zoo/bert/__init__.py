"""BERT (Devlin et al. 2018): WordPiece, post-LN encoder, masked LM + next-sentence prediction.

The family contract used by the trainers: `Config`, `PRESETS`, `get_preset`, `Backbone`, `pretrainer`,
`Preprocessor`, `Classifier`, `serving_endpoints`, `load_pretrained`, `write_model_dir`.
"""

from zoo.bert.backbone import BertBackbone
from zoo.bert.classifier import BertClassifier
from zoo.bert.config import PRESETS, BertConfig, get_preset
from zoo.bert.preprocessor import BertPreprocessor
from zoo.bert.pretrained import load_classifier, load_pretrained, write_model_dir
from zoo.bert.pretrainer import BertPretrainer
from zoo.bert.serving import serving_endpoints

Config = BertConfig
Backbone = BertBackbone
Preprocessor = BertPreprocessor
Classifier = BertClassifier


def pretrainer(config):
    """A `BertPretrainer` (MLM + NSP, computes its own losses) for a `BertConfig`, built."""
    model = BertPretrainer(BertBackbone(**config.to_dict()))
    model.build()
    return model


__all__ = [
    "PRESETS",
    "BertBackbone",
    "BertClassifier",
    "BertConfig",
    "BertPreprocessor",
    "BertPretrainer",
    "Backbone",
    "Classifier",
    "Config",
    "Preprocessor",
    "get_preset",
    "load_classifier",
    "load_pretrained",
    "pretrainer",
    "serving_endpoints",
    "write_model_dir",
]
