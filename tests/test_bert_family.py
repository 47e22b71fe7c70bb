"""BERT through the shared harness (tests/harness.py) at tiny size: its layers' Keras contract, its backbone.

The harness's pretraining check runs in tests/test_pretrain_finetune.py (`pretrained`, on the real corpus) and its
export check in tests/test_export.py (`exported` and the fine-tuned exports), where the models they make are reused.
"""

import numpy as np
import pytest

import harness
import zoo
from test_bert_model import _features
from zoo.bert import BertBackbone, BertClassifier, BertPreprocessor, pretrainer

BACKBONE_INPUTS = ("token_ids", "segment_ids", "padding_mask")


@pytest.mark.parametrize("kind", ["pretrainer", "backbone", "classifier", "mean_pooling_classifier"])
def test_bert_models_keep_the_keras_contract(kind, tiny_config, tmp_path):
    f = _features()
    if kind == "pretrainer":
        model, inputs = pretrainer(tiny_config), f
    elif kind == "backbone":
        model, inputs = zoo.family("bert").backbone(tiny_config), {k: f[k] for k in BACKBONE_INPUTS}
    else:
        model = BertClassifier(BertBackbone(**tiny_config.to_dict()), num_classes=3, pooling="cls" if kind == "classifier" else "mean")
        model.build()
        inputs = f
    harness.check_layer_contract(model, inputs, tmp_dir=str(tmp_path))


def test_bert_classifier_on_raw_strings_keeps_the_keras_contract(real_vocabulary, tmp_path):
    from zoo.bert import BertConfig
    from zoo.text.wordpiece import WordPieceTokenizer

    config = BertConfig(vocabulary_size=len(real_vocabulary), num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    model = BertClassifier(BertBackbone(**config.to_dict()), 2, preprocessor=BertPreprocessor(WordPieceTokenizer(real_vocabulary), 16))
    model.build()
    harness.check_layer_contract(model, np.array(["a fine film", "", "naïve café 東京"], object), tmp_dir=str(tmp_path))


def test_bert_backbone(tiny_config):
    f = _features()
    features = {k: f[k] for k in BACKBONE_INPUTS}
    (b, t), h = f["token_ids"].shape, tiny_config.hidden_dim
    shapes = {"sequence_output": (b, t, h), "pooled_output": (b, h), "embedding_output": (b, t, h),
              **{f"encoder_outputs/{i}": (b, t, h) for i in range(tiny_config.num_layers)}}
    harness.check_backbone(zoo.family("bert"), tiny_config, features, shapes)
