"""PE-wise group lasso and Weight Penalty Clipping (WPC).

Groups are the contract's tiles (:func:`ternpe.contract.tile_ids`): group norms are one
scatter-add per layer. WPC clips each group's penalty at a threshold ``tau`` recomputed from
the current norms every step (the self-adapting threshold): ``R = sum_i min(a_i, tau)``. Groups
under ``tau`` are pulled to zero; groups over it contribute a constant and no gradient.
"""

from __future__ import annotations

import math

import torch

__all__ = ["group_norms", "wpc_tau", "group_lasso", "wpc_penalty", "TAU_VARIANTS"]

from .config import TAU_VARIANTS
_EPS = 1e-12


def group_norms(w: torch.Tensor, ids: torch.Tensor, n_groups: int) -> torch.Tensor:
    sq = torch.zeros(n_groups, dtype=w.dtype, device=w.device).index_add_(0, ids.reshape(-1), (w * w).reshape(-1))
    return torch.sqrt(sq + _EPS)


def wpc_tau(norms: torch.Tensor, variant: str, r: float) -> torch.Tensor:
    """The self-adapting threshold (no gradient flows through it)."""
    a = norms.detach()
    if variant == "mean":
        return r * a.mean()
    sorted_a, _ = torch.sort(a)
    n = a.numel()
    rank_idx = min(n - 1, math.floor(16 * r) * (n // 16))
    if variant == "rank":
        return sorted_a[rank_idx]
    if variant == "mix":
        return torch.minimum(a.mean(), torch.quantile(a, 5 / 16))
    raise ValueError(f"WPC threshold variant must be one of {TAU_VARIANTS}, not {variant!r}")


def group_lasso(norms: torch.Tensor) -> torch.Tensor:
    return norms.sum()


def wpc_penalty(norms: torch.Tensor, variant: str = "mean", r: float = 0.7) -> torch.Tensor:
    tau = wpc_tau(norms, variant, r)
    return torch.where(norms < tau, norms, tau).sum()
