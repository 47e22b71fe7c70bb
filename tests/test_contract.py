"""The family contract (zoo/contract.py): every family in zoo.FAMILIES fills it, and its shared pieces work."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo import optim
from zoo.backbone import Backbone
from zoo.config import FamilyConfig
from zoo.contract import Family
from zoo.data import objectives
from zoo.text.tokenizer import Tokenizer

TEXTS = ["The movie was great!", "naïve café — 東京 🙂", "a b c d e f g", "another line of text", "great movie"] * 4


@pytest.mark.parametrize("name", sorted(zoo.FAMILIES))
def test_family_fills_the_contract(name):
    family = zoo.family(name)
    assert isinstance(family, Family) and family.name == name
    assert issubclass(family.Config, FamilyConfig) and issubclass(family.Backbone, Backbone)
    assert issubclass(family.Tokenizer, Tokenizer)
    assert family.objective in objectives.OBJECTIVES and family.optimizer in optim.RECIPES
    assert family.PRESETS and all(isinstance(c, family.Config) for c in family.PRESETS.values())
    assert "zoo" in family.convert_formats["from"] and "zoo" in family.convert_formats["to"]
    for method in ("pretrainer", "preprocessor", "task", "serving_endpoints", "samples", "convert"):
        assert getattr(type(family), method) is not getattr(Family, method), f"{name} does not implement {method}"
    with pytest.raises(ValueError, match="choose one of"):
        family.get_preset("no-such-preset")


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of bert"):
        zoo.family("t5")


@pytest.mark.parametrize("name", sorted(zoo.FAMILIES))
def test_tokenizer_learn_save_load_round_trip(name, tmp_path):
    family = zoo.family(name)
    tokenizer = family.Tokenizer.learn(TEXTS, 200, lowercase=True)
    assets = tokenizer.save(str(tmp_path))
    assert assets and all((tmp_path / f).exists() for f in assets.values())
    loaded = family.Tokenizer.load(str(tmp_path), {"assets": assets, **json.loads(json.dumps(tokenizer.config()))})
    ids = tokenizer.tokenize(tf.constant(TEXTS))
    assert loaded.tokenize(tf.constant(TEXTS)).to_list() == ids.to_list()
    assert loaded.vocabulary_size == tokenizer.vocabulary_size and loaded.special_ids == tokenizer.special_ids
    assert tokenizer.detokenize(ids).shape == [len(TEXTS)]
    from_files = family.Tokenizer.from_files(str(tmp_path), lowercase=True)  # a folder, as --vocab_file takes it
    assert from_files.tokenize(tf.constant(TEXTS)).to_list() == ids.to_list()


def test_model_dir_of_the_layout_before_the_contract_still_loads(tmp_path, tiny_config, real_vocabulary):
    from zoo import model_dir as md
    from zoo.bert import write_model_dir

    write_model_dir(str(tmp_path), tiny_config.replace(vocabulary_size=len(real_vocabulary)), real_vocabulary, sequence_length=16,
                    task={"num_classes": 2})
    path = tmp_path / md.CONFIG_FILE
    config = json.loads(path.read_text())
    old = {k: v for k, v in config.items() if k not in ("tokenizer", "task")}
    old["preprocessor"] = {"lowercase": True, "sequence_length": 16, "vocabulary": "vocab.txt"}
    old["classifier"] = {"num_classes": 2}
    path.write_text(json.dumps(old))
    upgraded = md.read_config(str(tmp_path))
    assert upgraded["tokenizer"] == {"assets": {"vocabulary": "vocab.txt"}, "lowercase": True}
    assert upgraded["task"] == {"num_classes": 2} and upgraded["preprocessor"] == {"sequence_length": 16}
    _, preprocessor = zoo.load_pretrained(str(tmp_path), restore=False)
    assert preprocessor.tokenizer.vocabulary == real_vocabulary


def test_cosine_schedule_warms_up_then_anneals_to_end():
    schedule = optim.WarmupCosineDecay(2.0, 10, 110, end=0.0)
    values = [float(schedule(s)) for s in (0, 5, 10, 60, 110, 200)]
    assert values[0] == 0.0 and math.isclose(values[1], 1.0) and math.isclose(values[2], 2.0)
    assert math.isclose(values[3], 1.0, rel_tol=1e-6) and abs(values[4]) < 1e-6 and abs(values[5]) < 1e-6


@pytest.mark.parametrize("recipe", sorted(optim.RECIPES))
def test_every_optimizer_recipe_trains_a_variable(recipe):
    w = tf.Variable(np.ones([4, 3], np.float32))
    b = tf.Variable(np.ones([3], np.float32))
    decay = 0.0 if recipe == "adagrad" else 0.01
    optimizer = optim.make_optimizer(recipe, learning_rate=0.1, warmup_steps=1, total_steps=20, weight_decay=decay, variables=[w, b])
    losses = []
    for _ in range(10):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(w)) + tf.reduce_sum(tf.square(b))
        optimizer.apply(tape.gradient(loss, [w, b]), [w, b])
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="choose one of"):
        optim.make_optimizer("sgd", learning_rate=0.1, warmup_steps=0, total_steps=1)


def test_adagrad_recipe_refuses_weight_decay():
    with pytest.raises(ValueError, match="weight_decay"):
        optim.make_optimizer("adagrad", learning_rate=0.2, warmup_steps=0, total_steps=1, weight_decay=0.01)


def test_objective_settings_take_only_their_fields():
    objective = objectives.get("masked_lm_nsp")
    settings = objectives.settings_from(objective, {"sequence_length": 64, "max_predictions": 5, "train_steps": 9, "dupe_factor": None})
    assert settings.sequence_length == 64 and settings.max_predictions == 5 and settings.dupe_factor == 10
    with pytest.raises(ValueError, match="known: masked_lm_nsp"):
        objectives.get("span_corruption")


def test_bert_convert_formats_are_the_converters_own():
    # The family states its formats without importing the converter; they must be the converter's readers/writers.
    from zoo.bert import convert_io

    family = zoo.family("bert")
    assert set(family.convert_formats["from"]) == set(convert_io.READERS)
    assert set(family.convert_formats["to"]) == set(convert_io.WRITERS)
    with pytest.raises(ValueError, match="may lack only pooler"):
        family.convert("hf", "zoo", "in", "out", allow_missing=["heads"])
