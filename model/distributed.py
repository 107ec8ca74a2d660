"""Training on several processes: torch DistributedDataParallel, gloo on CPU, nccl on CUDA.

``torchrun --nproc_per_node N -m ternpe.cli train ...`` (or ``ternpe train --workers N``, which
launches it) runs one process per rank. Every rank holds the whole network and the same data;
each takes its share of every global batch (``--batch`` stays the global batch), DDP averages the
gradients, and everything the method decides from the weights is one view across ranks:

- the batch norm statistics are summed over all ranks (:class:`SyncBatchNorm1d/2d`; torch's own
  SyncBatchNorm runs only on CUDA), so a step is the single-process step on the same batch;
- the activation quantizer's clip takes the all-rank batch maximum (:func:`all_max`);
- the WPC threshold, the group norms and the proximal step are computed from weights that are
  equal on every rank after each step; :func:`check_in_step` compares a checksum of the weights
  and masks across ranks after every epoch and stops with an error if they drifted.

Only rank 0 logs and writes the run.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["rank", "world_size", "is_main", "cuda_devices", "setup", "teardown", "SyncBatchNorm1d", "SyncBatchNorm2d",
           "sync_batchnorm", "all_max", "check_in_step", "DistributedError"]


class DistributedError(RuntimeError):
    """The ranks disagree, or the process group could not start."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def cuda_devices() -> int:
    """GPUs torch sees (0 on a CPU-only build or machine)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def setup(device: str) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); returns whether this is a
    multi-process run. Each rank gets an equal share of the cores."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend)
    except Exception as e:          # a missing rendezvous, a port in use: say so in one line
        raise DistributedError(f"could not join the {n}-process group ({backend}): {e}") from e
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", n))))
    return True


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, and the same for the gradient (every rank's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class _SyncMixin:
    """Batch norm whose training statistics are the sums over every rank's share of the batch
    (an autograd all-reduce, so the backward pass sees the whole batch too)."""

    def forward(self, x):
        if not (self.training and world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        n = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), n]))
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * count / (count - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


class SyncBatchNorm1d(_SyncMixin, nn.BatchNorm1d):
    pass


class SyncBatchNorm2d(_SyncMixin, nn.BatchNorm2d):
    pass


def sync_batchnorm(net: nn.Module) -> nn.Module:
    """Swap every BatchNorm1d/2d of ``net`` for its synced twin, keeping parameters and buffers
    (the state dict is unchanged, so a saved run loads into the plain network)."""
    for name, child in list(net.named_children()):
        for plain, synced in ((nn.BatchNorm1d, SyncBatchNorm1d), (nn.BatchNorm2d, SyncBatchNorm2d)):
            if type(child) is plain:
                new = synced(child.num_features, eps=child.eps, momentum=child.momentum)
                new.load_state_dict(child.state_dict())
                setattr(net, name, new)
                break
        else:
            sync_batchnorm(child)
    return net


def all_max(t: torch.Tensor) -> torch.Tensor:
    """``t``'s maximum over every rank (in place); ``t`` itself in a single process."""
    # (NCCL reduces CUDA tensors only: a CPU tensor after training, when the quantizers are
    # calibrated on the folded CPU model, stays this rank's own; every rank sees the same data)
    if world_size() > 1 and (t.is_cuda or dist.get_backend() != "nccl"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def check_in_step(net: nn.Module) -> None:
    """Raise :class:`DistributedError` unless every rank holds the same weights and masks."""
    if world_size() == 1:
        return
    with torch.no_grad():
        s = torch.stack([torch.stack([p.double().sum(), (p.double() ** 2).sum()])
                         for p in list(net.parameters()) + [b for n, b in net.named_buffers() if n.endswith("mask")]])
        lo, hi = s.clone(), s.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise DistributedError(f"the ranks' weights drifted apart (largest difference "
                               f"{float((hi - lo).abs().max()):.3g}); a rank computed a different step")


def cross_entropy_share(logits: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """This rank's share of the global batch's mean loss, scaled so that DDP's gradient average
    over ranks gives the gradient of the mean over the whole batch of ``batch`` samples."""
    return F.cross_entropy(logits, y, reduction="sum") * world_size() / batch
