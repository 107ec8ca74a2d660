"""Multi-process training (torch DDP on gloo, 2 CPU processes) against the single-process run."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ternpe.model.distributed import DistributedError, SyncBatchNorm2d, check_in_step, sync_batchnorm

pytestmark = pytest.mark.xdist_group("distributed")      # two processes of their own: keep them on one worker


def _train(out, *extra, workers=1):
    cmd = [sys.executable, "-m", "ternpe.cli", "train", "--dataset", "digits", "--out", str(out), *extra]
    if workers > 1:
        cmd[4:4] = ["--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text()), torch.load(out / "model.pt", weights_only=False)


@pytest.mark.parametrize("augment", [False, True])
def test_one_step_on_two_processes_is_the_single_process_step(tmp_path, augment):
    """One global batch of the whole training set: the DDP step (each rank half the batch, batch
    norm statistics summed over both; with --augment, each image shifted and flipped as the
    single process does it) equals the single-process step to float rounding."""
    args = ("--method", "float", "--epochs-float", "1", "--batch", "4096", *(["--augment"] if augment else []))
    m1, a = _train(tmp_path / "one", *args)
    m2, b = _train(tmp_path / "two", *args, workers=2)
    assert m2["processes"] == 2 and "processes" not in m1
    for k, v in a["state_dict"].items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, b["state_dict"][k], atol=1e-5, rtol=1e-4), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]       # rank 0 wrote one run, nothing else


def test_two_processes_train_wpc_to_the_same_band(tmp_path):
    args = ("--lam", "0.3", "--epochs-float", "6", "--epochs-ternary", "4", "--epochs-finetune", "2", "--seed", "1")
    m1, _ = _train(tmp_path / "one", *args)
    m2, _ = _train(tmp_path / "two", *args, workers=2)
    assert m2["processes"] == 2
    assert abs(m1["float_accuracy"] - m2["float_accuracy"]) <= 0.02, (m1["float_accuracy"], m2["float_accuracy"])
    assert abs(m1["integer_accuracy"] - m2["integer_accuracy"]) <= 0.03, (m1["integer_accuracy"], m2["integer_accuracy"])
    assert m2["integer_accuracy"] > 0.9


def _worker(r, store, results):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=r, world_size=2)
    try:
        torch.manual_seed(0)
        x = torch.randn(8, 3, 5, 5)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        sync_batchnorm(net)
        assert type(net[1]) is SyncBatchNorm2d
        y = net(x[r * 4:(r + 1) * 4])
        (y * torch.arange(y.numel()).view_as(y)).sum().backward()
        grad = net[0].weight.grad.clone()
        dist.all_reduce(grad)
        check_in_step(net)                                  # equal weights: no error
        drift = None
        if r == 1:
            with torch.no_grad():
                net[0].weight[0, 0, 0, 0] += 1e-3
        try:
            check_in_step(net)
        except DistributedError as e:
            drift = str(e)
        results[r] = (y.detach(), grad, net[1].running_mean.clone(), drift)
    finally:
        dist.destroy_process_group()


def test_synced_batch_norm_is_the_whole_batch_and_drift_is_caught(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "store"), results), nprocs=2)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    y = net(x)
    (y * torch.cat([torch.arange(y.numel() // 2)] * 2).view_as(y)).sum().backward()
    for r in (0, 1):
        yr, grad, running, drift = results[r]
        assert torch.allclose(yr, y[r * 4:(r + 1) * 4].detach(), atol=1e-5)
        assert torch.allclose(grad, net[0].weight.grad, atol=1e-4, rtol=1e-4)
        assert torch.allclose(running, net[1].running_mean, atol=1e-6)
        assert drift is not None and "drifted apart" in drift
