"""--strategy=multi_worker: two worker processes on loopback ports (TF_CONFIG) behave like one process.

Same first losses as a single process at the same global batch and seed (records sharded by batch), only the
chief writes checkpoints and summaries, and killing a worker mid-run then restarting both resumes from the last
checkpoint with nothing lost.
"""

import json
import os
import socket

import numpy as np
import pytest

from tests import cli_utils as cli


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder, _ = cli.pretraining_records(tmp_path_factory)
    configs = tmp_path_factory.mktemp("mw_configs")
    return cli.records_glob(folder), cli.write_model_json(configs / "tiny_no_dropout.json", dropout=0.0)


def _start_workers(tmp_path, model_dir, flags, tag):
    ports = _free_ports(2)
    procs = []
    for index in range(2):
        env = cli.env(TF_CONFIG=_tf_config(ports, index))
        procs.append(cli.start_trainer("pretrain", *flags, log_path=tmp_path / f"{tag}_worker{index}.log", extra_env=env))
    return procs


def _wait_all(procs, timeout=240):
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        except Exception:
            cli.kill(p)
            codes.append(None)
    return codes


def test_two_workers_match_one_process_and_resume(tmp_path, setup):
    records, config_json = setup
    common = dict(global_batch_size=16, warmup_steps=2, learning_rate=1e-3, input_sharding="batch", log_every=1)

    single = tmp_path / "single"
    code, output = cli.run_trainer("pretrain", *cli.pretrain_flags(str(single), config_json, records, train_steps=6, **common))
    assert code == 0, cli.tail(output)
    expected = [cli.read_history(single)[s]["loss"] for s in range(1, 7)]

    # Two workers, 6 steps, checkpoint every 3.
    multi = tmp_path / "multi"
    flags = cli.pretrain_flags(str(multi), config_json, records, train_steps=6, checkpoint_every=3, strategy="multi_worker", **common)
    codes = _wait_all(_start_workers(tmp_path, multi, flags, "run1"))
    logs = [(tmp_path / f"run1_worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], cli.tail(logs[0]) + cli.tail(logs[1])
    got = [cli.read_history(multi)[s]["loss"] for s in range(1, 7)]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Only the chief (worker 0) leaves checkpoints and summaries; the other's temporary copies are removed.
    assert sorted(f for f in os.listdir(multi) if f.startswith("ckpt-") and f.endswith(".index")) == ["ckpt-3.index", "ckpt-6.index"]
    assert os.listdir(multi / "train") and len(os.listdir(multi / "train")) == 1
    assert not [f for f in os.listdir(multi) if f.startswith(".worker_tmp")]

    # Kill worker 1 after the step-3 checkpoint of a 12-step run, then restart both: resume from step 6 or later
    # checkpoint written before the kill, with the same losses as an uninterrupted run.
    resumed = tmp_path / "resumed"
    flags = cli.pretrain_flags(str(resumed), config_json, records, train_steps=9, checkpoint_every=3, strategy="multi_worker", **common)
    procs = _start_workers(tmp_path, resumed, flags, "run2")
    saved = cli.wait_for(lambda: (resumed / "checkpoint").exists() and "ckpt-3" in (resumed / "checkpoint").read_text(), timeout=240, proc=procs[0])
    cli.kill(procs[1])
    _wait_all([procs[0]], timeout=120)  # the chief fails or hangs without its peer: stop it too
    cli.kill(procs[0])
    assert saved, cli.tail((tmp_path / "run2_worker0.log").read_text())
    codes = _wait_all(_start_workers(tmp_path, resumed, flags, "run3"))
    logs = [(tmp_path / f"run3_worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], cli.tail(logs[0]) + cli.tail(logs[1])
    assert "Resumed from" in logs[0]
    reference = tmp_path / "reference"
    code, output = cli.run_trainer("pretrain", *cli.pretrain_flags(str(reference), config_json, records, train_steps=9, **common))
    assert code == 0, cli.tail(output)
    history = cli.read_history(resumed)
    steps = sorted(s for s in history if s > 6)
    assert steps and steps[-1] == 9
    np.testing.assert_allclose([history[s]["loss"] for s in steps], [cli.read_history(reference)[s]["loss"] for s in steps], rtol=1e-4)
