"""Data-parallel training (colplugin.training.distributed): two processes reproduce one."""

from __future__ import annotations

import pytest
import torch

from colplugin.tasks.digits import Digits
from colplugin.training import train
from colplugin.training.distributed import ShardedTask, compare_states, shard_batch, train_distributed


def tiny_task() -> Digits:
    return Digits(columns=4, duration=0.02, batch_size=8, eval_size=20, lr=0.01)


def test_shard_batch_splits_trials_contiguously():
    task = tiny_task()
    batch = task.sample(7, torch.Generator().manual_seed(0))
    parts = [shard_batch(batch, r, 2) for r in range(2)]
    assert [p.target.shape[0] for p in parts] == [4, 3]
    assert torch.equal(torch.cat([p.target for p in parts]), batch.target)
    assert torch.equal(torch.cat([p.stimulus.rates for p in parts]), batch.stimulus.rates)
    assert torch.equal(torch.cat([p.info["index"] for p in parts]), batch.info["index"])
    with pytest.raises(ValueError, match="cannot be split"):
        shard_batch(task.sample(1, torch.Generator().manual_seed(0)), 0, 2)


def test_sharded_task_with_one_process_is_the_task():
    task = tiny_task()
    sharded = ShardedTask(task)
    assert sharded.name == "digits" and sharded.settings is task.settings and sharded.solver is task.solver
    net = sharded.build_network(seed=1)
    ref = task.build_network(seed=1)
    assert compare_states(net.state_dict(), ref.state_dict()) == 0.0


def test_two_processes_match_one_process():
    """Two gloo processes (4 trials each) vs one process (8 trials): losses and weights after 3 updates."""
    task = tiny_task()
    net = task.build_network(seed=3)
    single = train(net, task, updates=3, seed=3, progress=False)
    both = train_distributed(task, nproc=2, seed=3, updates=3, progress=False, threads=1)
    losses_1 = [r["loss"] for r in single.metrics if "loss" in r]
    losses_2 = [r["loss"] for r in both["metrics"] if "loss" in r]
    assert len(losses_1) == len(losses_2) == 3
    assert losses_2 == pytest.approx(losses_1, rel=1e-10, abs=0)
    test_1 = [r["test_loss"] for r in single.metrics]
    test_2 = [r["test_loss"] for r in both["metrics"]]
    assert test_2 == pytest.approx(test_1, rel=1e-10, abs=0)
    assert [r["test_accuracy"] for r in both["metrics"]] == pytest.approx([r["test_accuracy"] for r in single.metrics])
    assert compare_states(both["state_dict"], single.network.state_dict()) < 1e-10
    # and the weights did move
    assert compare_states(both["state_dict"], task.build_network(seed=3).state_dict()) > 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_process_on_cuda_matches_cpu():
    task = tiny_task()
    cpu = train_distributed(task, nproc=1, seed=0, updates=2, progress=False)
    gpu = train_distributed(task, nproc=1, seed=0, updates=2, progress=False, device="cuda")
    assert [r["loss"] for r in gpu["metrics"]] == pytest.approx([r["loss"] for r in cpu["metrics"]], rel=1e-8)
    assert compare_states(gpu["state_dict"], cpu["state_dict"]) < 1e-8


def test_cli_two_processes(tmp_path, monkeypatch):
    """``colplugin train digits --nproc 2`` trains, evaluates and writes metrics.json once (rank 0)."""
    import json

    import colplugin.tasks.digits as digits_mod
    from colplugin.cli import main

    monkeypatch.setattr(digits_mod, "mlp_baseline", lambda seed=0, test_size=0.2, hidden=100: {"accuracy": 0.97})
    out = tmp_path / "run"
    rc = main(["train", "digits", "--columns", "4", "--trial-duration", "0.01", "--batch-size", "4",
               "--eval-size", "10", "--updates", "2", "--nproc", "2", "--no-progress", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["updates"] == 2 and m["mlp_accuracy"] == 0.97 and 0 <= m["final_accuracy"] <= 1
    assert (out / "ranks" / "1" / "checkpoint.pt").is_file() and not (out / "ranks" / "0").exists()
