"""The pretraining-value benchmarks run at smoke size, and the fine-tuning split is fixed across seeds."""

import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rotten_tomatoes_split_is_fixed_and_dev_is_carved_out_of_train():
    from zoo.data.corpus import rotten_tomatoes_task

    plain, more_dev = rotten_tomatoes_task(seed=0), rotten_tomatoes_task(seed=0, dev_fraction=0.15)
    assert sorted(plain["test"]) == sorted(more_dev["test"])  # test never moves
    assert sorted(plain["train"] + plain["dev"]) == sorted(more_dev["train"] + more_dev["dev"])
    assert not set(plain["dev"]) & set(plain["train"]) and not set(plain["test"]) & set(plain["train"] + plain["dev"])
    labels = [label for _, label in plain["dev"]]
    assert abs(sum(labels) - len(labels) / 2) <= 1  # stratified
    assert len(plain["dev"]) == 852 and len(plain["test"]) == 1706


def test_flag_args():
    from benchmarks.finetune_seeds import flag_args, summarize

    assert flag_args({"a": 1, "b": True, "c": False, "d": None, "e": ["dev", "test"]}) == ["--a=1", "--b", "--noc", "--e=dev,test"]
    s = summarize([0.5, 0.7])
    assert s["n"] == 2 and abs(s["mean"] - 0.6) < 1e-9 and abs(s["std"] - 0.1414) < 1e-3


def test_pretraining_crossover_tiny(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    out, png = tmp_path / "crossover.json", tmp_path / "crossover.png"
    command = [sys.executable, "-m", "benchmarks.pretraining_crossover", "--tiny", "--minutes=0,0.05", "--seeds=0,1",
               "--eval_splits=dev", f"--runs_dir={tmp_path / 'runs'}", f"--json_out={out}", f"--plot_out={png}"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    payload = json.loads(out.read_text())
    assert [p["minutes"] for p in payload["points"]] == [0.0, 0.05]
    assert payload["points"][0]["init"] == "random" and payload["points"][1]["steps"] >= payload["probe_steps"]
    for point in payload["points"]:
        assert point["dev"]["n"] == 2 and 0.0 <= point["dev"]["mean"] <= 1.0
    meta = payload["meta"]
    assert meta["commit"] and meta["machine"] and meta["versions"]["tensorflow"]
    assert png.stat().st_size > 1000


def test_show_results_sets_pretrained_against_random_init_over_seeds(tmp_path):
    # scripts/show_results.py reads one run per seed (seed<N>/eval_results.json, as scripts/demo.sh writes them) and
    # prints mean ± std per split, and whether the gap exceeds the larger seed std.
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import show_results

    def write(run_dir, seed, dev, test):
        os.makedirs(run_dir / f"seed{seed}")
        splits = {"dev": {"accuracy": dev, "majority_class_accuracy": 0.5}, "test": {"accuracy": test, "majority_class_accuracy": 0.5}}
        (run_dir / f"seed{seed}" / "eval_results.json").write_text(json.dumps({**splits["dev"], "splits": splits, "train_examples": 10}))

    for seed, (dev, test) in enumerate([(0.80, 0.70), (0.82, 0.71), (0.81, 0.69)]):
        write(tmp_path / "pre", seed, dev, test)
    for seed, (dev, test) in enumerate([(0.70, 0.70), (0.71, 0.72), (0.72, 0.68)]):
        write(tmp_path / "rnd", seed, dev, test)
    pretrained, random_init = show_results.finetune_results(str(tmp_path / "pre")), show_results.finetune_results(str(tmp_path / "rnd"))
    assert len(pretrained) == 3 and len(random_init) == 3
    dev_line, dev_gap, test_line, test_gap = show_results.compare(pretrained, random_init)
    assert "dev" in dev_line and "0.810 ± 0.010" in dev_line and "0.710 ± 0.010" in dev_line
    assert "+0.100: more than" in dev_gap
    assert "test" in test_line and "0.000: not more than" in test_gap
