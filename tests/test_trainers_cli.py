"""The trainers' command lines: bad input gives one clear log line (no traceback, non-zero exit) and leaves no
partial output; odd but valid corpora work; create_pretraining_data is deterministic and feeds pretrain; every
flagfile in tpu_configs/ parses against its app's flags (~1.5 min: each subprocess pays TensorFlow's start-up).
"""

import functools
import glob
import importlib.util
import json
import os
import socket
import threading

import pytest
from absl import flags as absl_flags

from tests import cli_utils as cli

TPU_CONFIGS = os.path.join(cli.REPO, "tpu_configs")


@pytest.fixture(scope="module")
def model_json(tmp_path_factory):
    return cli.write_model_json(tmp_path_factory.mktemp("configs") / "tiny.json")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder, _ = cli.pretraining_records(tmp_path_factory)
    return folder


def _leftovers(path):
    """`path` itself if it exists, and any `path.tmp-*` sibling a failed create_pretraining_data could leave."""
    return [p for p in [str(path)] + glob.glob(f"{path}.tmp-*") if os.path.exists(p)]


def _model_dir_content(model_dir):
    return sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []


# ---- bad corpora ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty", "missing"])
@pytest.mark.parametrize("app", ["create_pretraining_data", "pretrain"])
def test_bad_corpus_path_is_one_clear_error_and_leaves_nothing(tmp_path, model_json, app, case):
    corpus = tmp_path / f"{case}.txt"
    if case == "empty":
        corpus.write_text("\n  \n\n")  # whitespace only: no text
    out = tmp_path / "out"
    if app == "create_pretraining_data":
        flags = [f"--corpus={corpus}", f"--output_dir={out}", "--vocab_size=500"]
    else:
        flags = cli.pretrain_flags(str(out), model_json) + [f"--corpus={corpus}", "--vocab_size=500"]
    message = cli.assert_clean_failure(*cli.run_trainer(app, *flags), str(corpus))
    assert ("no text" if case == "empty" else "does not exist") in message
    assert not _leftovers(out), f"{app} left {_leftovers(out)} behind"


def test_failure_after_the_temp_folder_exists_removes_it(tmp_path):
    # masked_lm_prob is checked when instance creation starts, after the temp output folder was created: this
    # checks the clean-up of a late failure, not only the early argument checks.
    out = tmp_path / "out"
    returncode, output = cli.run_trainer("create_pretraining_data", "--default_corpus", "--max_documents=20",
                                         "--vocab_size=200", f"--output_dir={out}", "--masked_lm_prob=1.5")
    cli.assert_clean_failure(returncode, output, "masked_lm_prob", "1.5")
    assert not _leftovers(out), f"left {_leftovers(out)} behind"


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    lines = "\n\n".join("\n".join(d) for d in cli.demo_documents(12)).encode("utf-8").split(b"\n")
    for i in (0, 7, 20):  # three invalid bytes in three sentences
        lines[i] = lines[i][:5] + b"\xff" + lines[i][5:]
    corpus = tmp_path / "latin1_mixed.txt"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    returncode, output = cli.run_trainer("create_pretraining_data", f"--corpus={corpus}", f"--output_dir={out}",
                                         "--vocab_size=300", "--dupe_factor=1", "--num_shards=1")
    assert returncode == 0, cli.tail(output)
    warnings = [m for level, _, m in cli.python_log_lines(output, "W") if "UTF-8" in m]
    assert len(warnings) == 1 and str(corpus) in warnings[0], warnings
    assert "replaced 3 invalid UTF-8 byte sequence(s)" in warnings[0]
    assert json.loads((out / "data_config.json").read_text())["num_examples"] > 0
    assert "\ufffd" not in (out / "vocab.txt").read_text(encoding="utf-8")  # cleaning drops U+FFFD, as BERT's


def test_one_megabyte_line(tmp_path):
    documents = cli.demo_documents(4)
    # One 1 MB "sentence": ~0.9 MB of words, then a 100 kB run without spaces (one huge word -> [UNK]).
    words = "This film is wonderful and the acting is superb , but the ending drags . "
    documents[0].insert(1, (words * (900_000 // len(words) + 1))[:900_000] + "x" * 100_000)
    corpus = cli.write_corpus(tmp_path / "long_line.txt", documents)
    assert os.path.getsize(corpus) > 1_000_000
    out = tmp_path / "out"
    returncode, output = cli.run_trainer("create_pretraining_data", f"--corpus={corpus}", f"--output_dir={out}",
                                         "--vocab_size=300", "--dupe_factor=1", "--num_shards=2",
                                         f"--sequence_length={cli.SEQUENCE_LENGTH}",
                                         f"--max_predictions={cli.MAX_PREDICTIONS}", timeout=180)
    assert returncode == 0, cli.tail(output)
    examples = _parsed_records(out)
    assert len(examples) == json.loads((out / "data_config.json").read_text())["num_examples"]
    assert all(len(e["token_ids"]) == cli.SEQUENCE_LENGTH for e in examples)


def _parsed_records(folder, shard=None):
    """Every record of a create_pretraining_data output (or of one shard), parsed with the pretraining schema,
    as a list of {feature: list} dicts."""
    import tensorflow as tf

    from zoo.data import records, schema

    folder = str(folder)
    config = json.loads(open(os.path.join(folder, "data_config.json")).read())
    files = sorted(glob.glob(cli.records_glob(folder)))
    assert [os.path.basename(f) for f in files] == config["shards"]
    if shard:
        files = [os.path.join(folder, shard)]
    parse = records.parse_fn(schema.bert_pretraining_spec(config["sequence_length"], config["max_predictions"]))
    parsed = []
    for batch in tf.data.TFRecordDataset(files).batch(256).map(parse):
        batch = {k: v.numpy().tolist() for k, v in batch.items()}
        parsed.extend({k: batch[k][i] for k in batch} for i in range(len(batch["token_ids"])))
    return parsed


# ---- bad flags ----------------------------------------------------------------------------------------------------

def test_unknown_preset_lists_the_presets(tmp_path, model_json):
    model_dir = tmp_path / "model"
    flags = cli.pretrain_flags(str(model_dir), model_json, preset="gigantic") + ["--default_corpus"]
    message = cli.assert_clean_failure(*cli.run_trainer("pretrain", *flags), "gigantic")
    from zoo.bert import PRESETS

    assert all(name in message for name in PRESETS), message
    assert not _model_dir_content(model_dir)


def test_missing_flagfile_names_it(tmp_path):
    path = str(tmp_path / "no_such_config.cfg")
    returncode, output = cli.run_trainer("pretrain", f"--flagfile={path}")
    assert returncode == 2, cli.tail(output)
    assert "Traceback" not in output, cli.tail(output, 80)
    assert [line for line in output.splitlines() if path in line and "does not exist" in line], cli.tail(output)


def test_bad_strategy_value_is_absl_enum_error(tmp_path):
    returncode, output = cli.run_trainer("pretrain", "--strategy=gpu_please", f"--model_dir={tmp_path / 'm'}")
    assert returncode != 0
    assert "Traceback" not in output, cli.tail(output, 80)
    assert "--strategy=gpu_please" in output and "<cpu|mirrored|multi_worker|tpu>" in output, cli.tail(output)


def test_multi_worker_needs_tf_config(tmp_path, model_json):
    model_dir = tmp_path / "model"
    flags = cli.pretrain_flags(str(model_dir), model_json, strategy="multi_worker") + ["--default_corpus"]
    cli.assert_clean_failure(*cli.run_trainer("pretrain", *flags), "TF_CONFIG")  # cli.env() unsets TF_CONFIG
    assert not _model_dir_content(model_dir)


def test_unreachable_tpu_fails_fast_and_clearly(tmp_path, model_json):
    model_dir = tmp_path / "model"
    flags = cli.pretrain_flags(str(model_dir), model_json, strategy="tpu", tpu="nonexistent-tpu-xyz")
    returncode, output = cli.run_trainer("pretrain", *flags, "--default_corpus", timeout=90)
    cli.assert_clean_failure(returncode, output, "No TPU reachable", "nonexistent-tpu-xyz")
    assert not _model_dir_content(model_dir)


def test_tpu_lookup_against_a_silent_metadata_server_times_out(monkeypatch):
    """A metadata server that accepts connections but never answers (what a hang looks like) is bounded too."""
    from zoo.training import strategy as strategy_lib

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # never accepts: connections complete in the backlog, then reads wait forever
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(strategy_lib, "TPU_LOOKUP_TIMEOUT_S", 1)
    result = {}

    def build():
        try:
            strategy_lib.make_strategy("tpu", tpu="nonexistent-tpu-xyz")
        except Exception as e:  # noqa: BLE001 - the type is asserted below
            result["error"] = e

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    thread.join(timeout=30)
    server.close()
    assert not thread.is_alive(), "make_strategy('tpu') hung on a silent metadata server"
    assert isinstance(result.get("error"), strategy_lib.StrategyError), result
    assert "No TPU reachable" in str(result["error"])


# ---- create_pretraining_data -> pretrain ------------------------------------------------------------------------

def test_create_pretraining_data_output_is_complete_and_trains(tmp_path, records, model_json):
    shards = sorted(glob.glob(cli.records_glob(records)))
    config = json.loads(open(os.path.join(records, "data_config.json")).read())
    assert len(shards) == 2 and [os.path.basename(s) for s in shards] == config["shards"]
    assert config["num_examples"] > 100 and config["tokenizer"]["assets"] == {"vocabulary": "vocab.txt"}
    assert (config["sequence_length"], config["max_predictions"]) == (cli.SEQUENCE_LENGTH, cli.MAX_PREDICTIONS)
    assert 100 < len(open(os.path.join(records, "vocab.txt")).read().split("\n")) <= 501
    assert not glob.glob(f"{records}.tmp-*") and not [f for f in os.listdir(records) if ".tmp-" in f]
    assert len(_parsed_records(records)) == config["num_examples"]

    model_dir = tmp_path / "model"
    returncode, output = cli.run_trainer(
        "pretrain", *cli.pretrain_flags(str(model_dir), model_json, cli.records_glob(records), train_steps=2))
    assert returncode == 0, cli.tail(output)
    assert sorted(cli.read_history(model_dir)) == [1, 2]
    with open(model_dir / "vocab.txt") as a, open(os.path.join(records, "vocab.txt")) as b:
        assert a.read() == b.read(), "pretrain should train with the records' vocabulary"


def test_same_seed_gives_byte_identical_output(tmp_path, records):
    again = tmp_path / "again"
    returncode, output = cli.run_trainer("create_pretraining_data", *cli.data_flags(again))
    assert returncode == 0, cli.tail(output)
    config = json.loads(open(os.path.join(records, "data_config.json")).read())
    assert json.loads((again / "data_config.json").read_text()) == config
    for name in ["vocab.txt"] + config["shards"]:
        with open(os.path.join(records, name), "rb") as a, open(again / name, "rb") as b:
            first, second = a.read(), b.read()
        if first != second and name != "vocab.txt":
            same_content = _parsed_records(records, name) == _parsed_records(str(again), name)
            pytest.fail(f"{name} differs between two runs with the same --seed" + (
                " although every record holds the same features: tf.train.Example's feature map is serialized in a "
                "per-process order (zoo/data/records.py needs SerializeToString(deterministic=True))"
                if same_content else " and so do the records' features"))
        assert first == second, f"{name} differs between two runs with the same --seed"


# ---- flagfiles ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _app_flags(app):
    """A fresh FlagValues holding exactly the flags trainers/<app>.py defines (the global FLAGS is untouched)."""
    fv = absl_flags.FlagValues()
    definers = {name: getattr(absl_flags, name) for name in dir(absl_flags) if name.startswith("DEFINE")}
    try:
        for name, define in definers.items():
            setattr(absl_flags, name, functools.partial(define, flag_values=fv))
        spec = importlib.util.spec_from_file_location(f"_flag_check_{app}", os.path.join(cli.REPO, "trainers", f"{app}.py"))
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        for name, define in definers.items():
            setattr(absl_flags, name, define)
    return fv


def _app_of(flagfile):
    """The trainer a flagfile is for, by its name (a flagfile for another trainer: add its pattern here)."""
    name = os.path.basename(flagfile)
    if "finetune" in name:
        return "finetune"
    if "_data_" in name:
        return "create_pretraining_data"
    return "pretrain"


def _parsed(flagfile):
    fv = _app_flags(_app_of(flagfile))
    fv.unparse_flags()
    fv(["prog", f"--flagfile={flagfile}"])  # unknown names, bad values and bad enums raise here
    return {name: fv[name].value for name in fv if fv[name].present}


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(TPU_CONFIGS, "*.cfg"))), ids=os.path.basename)
def test_flagfile_parses(flagfile):
    values = _parsed(flagfile)
    assert values, f"{flagfile} sets no flags"
    if "preset" in values:
        import zoo

        # The preset must be one of the family's own (the flagfile's --model, else the flag default).
        family = zoo.family(values.get("model", "bert"))
        assert values["preset"] in family.PRESETS, (values["preset"], family.name, sorted(family.PRESETS))


def test_flagfile_check_catches_a_typo(tmp_path):
    bad = tmp_path / "bert_tiny_typo.cfg"
    bad.write_text(open(os.path.join(TPU_CONFIGS, "bert_tiny_cpu.cfg")).read() + "--learning_rat=1e-3\n")
    with pytest.raises(absl_flags.UnrecognizedFlagError, match="learning_rat"):
        _parsed(str(bad))


def test_flagfiles_agree_with_each_other():
    cfg = {os.path.basename(p)[:-4]: _parsed(p) for p in glob.glob(os.path.join(TPU_CONFIGS, "*.cfg"))}
    # The demo chain: data -> records pretraining, and pretraining -> fine-tuning.
    assert cfg["bert_tiny_records_cpu"]["input_files"] == os.path.join(cfg["bert_data_cpu"]["output_dir"], "train-*.tfrecord")
    assert cfg["bert_tiny_finetune_cpu"]["init"] == cfg["bert_tiny_cpu"]["model_dir"]
    # TPU phase 2 (seq 512) continues phase 1 (seq 128): same model dir and schedule, more steps.
    for name in [n for n in cfg if n.endswith("_tpu_seq512")]:
        phase1, phase2 = cfg[name.replace("seq512", "seq128")], cfg[name]
        for key in ("model_dir", "preset", "schedule_steps", "global_batch_size", "learning_rate", "warmup_steps"):
            assert phase1[key] == phase2[key], (name, key)
        assert phase1["train_steps"] < phase2["train_steps"] == phase2["schedule_steps"], name
