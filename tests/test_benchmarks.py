"""The benchmark scripts run at their --tiny size and report every expected row with positive numbers.

Each script runs once per module (a few worker processes of ~5 s each: about 40 s apiece, 2 minutes in all), so
they cannot rot; the numbers themselves mean nothing at this size.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, out_dir, *flags):
    out = os.path.join(str(out_dir), module.split(".")[-1] + ".json")
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # One compute thread per library: on a busy shared machine, torch's OpenMP threads otherwise stall for
    # scheduler ticks (tiny HF steps then take 100x longer); the default-threads path is the same code.
    command = [sys.executable, "-m", module, "--tiny", "--repeats=1", "--threads=1", f"--json_out={out}", *flags]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(out) as f:
        return proc.stdout, json.load(f), out


META_KEYS = {"date", "commit", "machine", "cores", "versions", "command"}


def _check_meta(data, module):
    """The run's "meta" (benchmarks.common.run_metadata): when, which code, which machine, which libraries, how."""
    meta = data["meta"]
    assert META_KEYS <= set(meta), meta
    assert re.fullmatch(r"[0-9a-f]{4,40}(-dirty)?", meta["commit"]), meta  # `git rev-parse --short HEAD` of the run
    assert meta["date"].endswith("+00:00") and meta["cores"] == os.cpu_count() and meta["machine"]
    assert meta["command"].startswith(f"python -m {module} --tiny"), meta
    assert {"tensorflow", "keras"} <= set(meta["versions"]), meta


def _positive(row, *keys):
    for key in keys:
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (key, row)


@pytest.fixture(scope="module")
def pretrain(tmp_path_factory):
    # XLA off keeps the run near 40 s; the zoo's XLA step is compiled in tests/test_xla.py.
    return _run("benchmarks.pretrain_throughput", tmp_path_factory.mktemp("pretrain"), "--xla=off")


@pytest.fixture(scope="module")
def data_pipeline(tmp_path_factory):
    return _run("benchmarks.data_pipeline", tmp_path_factory.mktemp("data_pipeline"))


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    return _run("benchmarks.serving", tmp_path_factory.mktemp("serving"))


def test_pretrain_throughput_tiny(pretrain):
    stdout, data, _ = pretrain
    settings = {(r["contender"], r["precision"], r["xla"]) for r in data["rows"]}
    assert settings == {(c, p, "off") for c in ("zoo", "keras_hub") for p in ("float32", "bfloat16")} | {
        ("hf", p, "n/a") for p in ("float32", "bfloat16")
    }
    for row in data["rows"]:
        _positive(row, "tokens_per_s", "step_ms", "mfu_pct", "peak_rss_mb", "params", "model_tflops_per_step")
        assert math.isfinite(row["loss"])
        assert row["size"] == "tiny" and f"tiny  {row['contender']:>9}" in stdout
    _positive(data["peak_tflops"], "float32", "bfloat16")
    assert sorted(r["peer"] for r in data["ratios"]) == ["hf", "keras_hub"]
    for ratio in data["ratios"]:
        _positive(ratio, "ratio")
        assert f"zoo best ({ratio['zoo_setting']}) / {ratio['peer']} best" in stdout
    assert "matmul peak (tf.matmul): float32" in stdout
    _check_meta(data, "benchmarks.pretrain_throughput")


def test_model_flops_formula_counts_the_zoo_encoder_kernels():
    # The formula's 4H^2 + 2HI per layer is exactly the Transformer blocks' kernels (QKV, output, FFN).
    import numpy as np

    from benchmarks.pretrain_throughput import model_flops_per_step
    from zoo.bert import BertBackbone

    dims = dict(layers=2, hidden=32, heads=2, intermediate=64, vocab=50, seq=8, predictions=0, batch=1)
    backbone = BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64)
    backbone.build()
    kernels = sum(int(np.prod(w.shape)) for block in backbone.blocks for w in block.weights if len(w.shape) == 2)
    per_token = 6 * kernels + 12 * dims["layers"] * dims["seq"] * dims["hidden"]
    nsp = 6 * (32 * 32 + 2 * 32)
    assert model_flops_per_step(dims) == per_token * dims["seq"] + nsp


@pytest.fixture(scope="module")
def gpt_pretrain(tmp_path_factory):
    # bf16 only and XLA off keep it near a minute (5 workers); bf16 is the recorded paper-size setting, float32 and
    # the shared plumbing run in the BERT smoke test above, the zoo's XLA step in tests/test_xla.py.
    return _run("benchmarks.gpt_pretrain_throughput", tmp_path_factory.mktemp("gpt_pretrain"), "--xla=off",
                "--precisions=bfloat16")


def test_gpt_pretrain_throughput_tiny(gpt_pretrain):
    stdout, data, _ = gpt_pretrain
    settings = {(r["contender"], r["precision"], r["xla"], r["lm_loss"]) for r in data["rows"]}
    assert settings == {("zoo", "bfloat16", "off", "whole"), ("zoo", "bfloat16", "off", "chunked"),
                        ("keras_hub", "bfloat16", "off", "n/a"), ("hf", "bfloat16", "n/a", "n/a")}
    for row in data["rows"]:
        _positive(row, "tokens_per_s", "step_ms", "mfu_pct", "peak_rss_mb", "build_peak_rss_mb", "params",
                  "model_tflops_per_step")
        assert math.isfinite(row["loss"]) and row["rss_over_build_mb"] >= 0
        assert row["size"] == "tiny" and f"tiny  {row['contender']:>9}" in stdout
    zoo = {r["lm_loss"]: r for r in data["rows"] if r["contender"] == "zoo"}
    assert abs(zoo["whole"]["loss"] - zoo["chunked"]["loss"]) < 0.05  # the same model and batch, two loss paths
    assert zoo["whole"]["default_lm_loss_path"] == "whole"  # 2 x 15 x 105 logits: far below the chunking threshold
    assert sorted(r["peer"] for r in data["ratios"]) == ["hf", "keras_hub"]
    assert sorted((r["lm_loss"], r["peer"]) for r in data["ratios_by_lm_loss"]) == [
        ("chunked", "hf"), ("chunked", "keras_hub"), ("whole", "hf"), ("whole", "keras_hub")]
    for ratio in data["ratios"] + data["ratios_by_lm_loss"]:
        _positive(ratio, "ratio")
        assert f"/ {ratio['peer']} best ({ratio['peer_setting']}) = {ratio['ratio']:.2f}x" in stdout
    assert "matmul peak (tf.matmul): float32" in stdout
    _check_meta(data, "benchmarks.gpt_pretrain_throughput")


def test_gpt_model_flops_formula_counts_the_zoo_decoder_kernels():
    # 4H^2 + 2HI per layer is exactly the GPT blocks' kernels (QKV, output, FFN); the tied head adds H x V.
    import numpy as np

    from benchmarks.gpt_pretrain_throughput import model_flops_per_step
    from zoo.gpt import GPTBackbone

    dims = dict(layers=2, hidden=32, heads=2, intermediate=128, vocab=50, seq=8, batch=3)
    backbone = GPTBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=128,
                           max_sequence_length=8)
    backbone.build()
    kernels = sum(int(np.prod(w.shape)) for block in backbone.blocks for w in block.weights if len(w.shape) == 2)
    head = int(np.prod(backbone.token_embedding.embeddings.shape))
    per_token = 6 * (kernels + head) + 12 * dims["layers"] * dims["seq"] * dims["hidden"]
    assert model_flops_per_step(dims) == per_token * dims["seq"] * dims["batch"]


def test_data_pipeline_tiny(data_pipeline):
    stdout, data, _ = data_pipeline
    assert sorted(r["contender"] for r in data["rows"]) == ["hf", "reference", "zoo"]
    for row in data["rows"]:
        _positive(row, "examples", "examples_per_s", "tokens_per_s", "seconds", "peak_rss_mb")
        assert row["documents"] == 40
        assert row["contender"] in stdout
    keeps_up = data["keeps_up"]
    _positive(keeps_up, "real_step_ms", "synthetic_step_ms")
    assert math.isfinite(keeps_up["difference_pct"])
    assert "input pipeline keeps up: zoo step" in stdout
    _check_meta(data, "benchmarks.data_pipeline")


def test_serving_tiny(serving):
    stdout, data, _ = serving
    assert sorted(r["contender"] for r in data["rows"]) == ["hf", "keras_hub", "zoo", "zoo_bf16", "zoo_bf16_frozen", "zoo_xla"]
    for row in data["rows"]:
        _positive(row, "p50_ms", "p99_ms", "short_texts_per_s", "long_texts_per_s", "peak_rss_mb")
        assert row["p99_ms"] >= row["p50_ms"]
        assert row["contender"] in stdout
    assert data["dims"]["model"]["vocab"] == 30522
    _check_meta(data, "benchmarks.serving")


@pytest.fixture(scope="module")
def inference_kernels(tmp_path_factory):
    return _run("benchmarks.inference_kernels", tmp_path_factory.mktemp("kernels"))


def test_inference_kernels_tiny(inference_kernels):
    stdout, data, _ = inference_kernels
    kernels = {(r["kernel"], r["dtype"]) for r in data["rows"]}
    assert kernels == {(k, d) for k in ("transpose", "layer_norm", "attention") for d in ("bfloat16", "float32")}
    for row in data["rows"]:
        _positive(row, "before_us", "after_us", "ratio")
        assert abs(row["ratio"] - row["after_us"] / row["before_us"]) < 1e-9
    assert "after/before" in stdout
    _check_meta(data, "benchmarks.inference_kernels")


def test_training_kernels_tiny(tmp_path):
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("no g++: the native kernels cannot build, there is nothing to compare")
    from benchmarks import plot_results

    stdout, data, path = _run("benchmarks.training_kernels", tmp_path)
    kernels = {(r["kernel"], r["dtype"]) for r in data["rows"]}
    assert kernels == {(k, d) for k in ("layer_norm", "residual_layer_norm", "gelu", "dropout", "attention_softmax")
                       for d in ("bfloat16", "float32")}
    for row in data["rows"]:
        _positive(row, "islands_ms", "native_ms", "ratio")
    assert "native/islands" in stdout
    _check_meta(data, "benchmarks.training_kernels")
    assert plot_results.main([path, f"--out_dir={tmp_path / 'plots'}"]) == 0
    assert os.path.getsize(tmp_path / "plots" / "training_kernels.png") > 1000


def test_plot_results_writes_pngs(pretrain, data_pipeline, serving, inference_kernels, tmp_path):
    from benchmarks import plot_results

    assert plot_results.main([pretrain[2], data_pipeline[2], serving[2], inference_kernels[2], f"--out_dir={tmp_path}"]) == 0
    names = ("pretrain_tokens_per_s.png", "data_pipeline.png", "serving_latency.png", "serving_throughput.png",
             "inference_kernels.png")
    for name in names:
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 1000


def test_compare_revisions_tiny_runs_each_revision_from_its_own_checkout(tmp_path):
    stdout, data, _ = _run("benchmarks.compare_revisions", tmp_path, "--a=HEAD", "--b=HEAD", "--rounds=1")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert data["a"] == data["b"] == head
    assert [len(data["step_ms"][k]) for k in ("a", "b")] == [1, 1]
    _positive(data, "ratio_b_over_a")
    assert "round 1 A:" in stdout and "round 1 B:" in stdout and "B/A = " in stdout
    _check_meta(data, "benchmarks.compare_revisions")
    leftovers = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "zoo_rev_" not in leftovers  # the temporary checkouts are removed


def test_run_metadata_names_the_command_commit_and_versions():
    from benchmarks import common

    meta = common.run_metadata(common.command_line("benchmarks.serving", ["--tiny", "--json_out=a b.json"]))
    assert META_KEYS <= set(meta)
    assert meta["command"] == "python -m benchmarks.serving --tiny '--json_out=a b.json'"
    assert meta["machine"].endswith(f", {os.cpu_count()} cores")
    assert all(isinstance(v, str) and v for v in meta["versions"].values())


def test_recorded_results_carry_meta_one_file_per_benchmark_and_machine():
    results = os.path.join(ROOT, "benchmarks", "results")
    seen = {}
    for name in sorted(os.listdir(results)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(results, name)) as f:
            data = json.load(f)
        meta = data["meta"]
        assert META_KEYS <= set(meta), name
        assert {"tensorflow", "keras", "keras-hub", "torch", "transformers"} <= set(meta["versions"]), name
        assert meta["command"].startswith("PYTHONPATH=. python -m benchmarks." + data["benchmark"]), name
        # One per benchmark, machine and precision set (the float32 pretraining run is the bf16 run's companion).
        precisions = tuple(sorted({r.get("precision", "") for r in data.get("rows", [])}))
        key = (data["benchmark"], meta["machine"], precisions)
        assert key not in seen, (name, seen.get(key))
        seen[key] = name


def test_elmo_pretrain_throughput_tiny(tmp_path):
    # The zoo, PyTorch (nn.LSTM with proj_size) and stock Keras (keras.layers.LSTM + Dense) at a toy size, float32,
    # XLA off, one round: three persistent worker processes side by side (about 30 s on an idle machine).
    stdout, data, _ = _run("benchmarks.elmo_pretrain_throughput", tmp_path, "--contenders=zoo,torch,keras_lstm",
                           "--precisions=float32", "--keras_xla=off")
    assert sorted(r["contender"] for r in data["rows"]) == ["keras_lstm", "torch", "zoo"]
    for row in data["rows"]:
        assert "error" not in row, row
        _positive(row, "tokens_per_s", "step_ms", "cpu_ms", "mfu_pct", "peak_rss_mb", "params", "model_tflops_per_step")
        assert math.isfinite(row["loss"]) and row["size"] == "tiny" and len(row["round_tokens_per_s"]) == 1
    assert sorted(r["peer"] for r in data["ratios"]) == ["best_peer", "keras_lstm", "torch"]
    for ratio in data["ratios"]:
        _positive(ratio, "ratio")
        assert f"/ {ratio['peer']}" in stdout and f"= {ratio['ratio']:.2f}x" in stdout
    assert all(data["meta"][k]["uptime"] and len(data["meta"][k]["loadavg"]) == 3 for k in ("load_start", "load_end"))
    _check_meta(data, "benchmarks.elmo_pretrain_throughput")
