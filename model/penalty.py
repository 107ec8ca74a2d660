"""PE-wise group lasso and Weight Penalty Clipping (WPC).

Groups are the contract's tiles (:func:`ternpe.contract.tile_ids`): group norms are one
scatter-add per layer. WPC clips each group's penalty at a threshold ``tau`` recomputed from
the current norms every step (the self-adapting threshold): ``R = sum_i min(a_i, tau)``. Groups
under ``tau`` are pulled to zero; groups over it contribute a constant and no gradient.

Training minimizes ``loss + lambda * R`` with a proximal step: SGD on the loss, then every
group the penalty pulls is shrunk by ``lr * lambda * weight * the mean norm of its layer's live
groups`` in norm (:func:`shrink_factors`, the proximal operator of the group lasso, applied only
under ``tau`` for WPC; the step, and the pruning of a group that reaches zero, are in
``model.train``). Plain gradient
steps on ``R`` only circle around zero (the ternarizer's straight-through gradient keeps
pushing every latent weight), so whole tiles rarely became all-zero; the proximal step puts a
group at exactly zero unless the loss gradient on it is stronger than ``lambda * weight``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["group_norms", "rank_index", "wpc_tau", "group_lasso", "wpc_penalty", "shrink_factors", "TAU_VARIANTS"]

from .config import TAU_VARIANTS
_EPS = 1e-12


def group_norms(w: torch.Tensor, ids: torch.Tensor, n_groups: int) -> torch.Tensor:
    sq = torch.zeros(n_groups, dtype=w.dtype, device=w.device).index_add_(0, ids.reshape(-1), (w * w).reshape(-1))
    return torch.sqrt(sq + _EPS)


def rank_index(n: int, r: float) -> int:
    """The 0-based rank of the ``rank`` threshold among ``n`` ascending group norms:
    ``floor(floor(16 r) * n / 16)``, at most ``n - 1``. For ``n`` a multiple of 16 it is the
    paper's ``floor(16 r) * floor(n / 16)``; unlike that, it does not collapse to 0 (the smallest
    norm, so no group penalized) when a layer has fewer than 16 groups."""
    return min(n - 1, (math.floor(16 * r) * n) // 16)


def wpc_tau(norms: torch.Tensor, variant: str, r: float) -> torch.Tensor:
    """The self-adapting threshold, recomputed from the current norms at every step (no gradient
    flows through it). ``mean``: ``r`` x the mean norm; ``rank``: the norm at
    :func:`rank_index`; ``mix``: the smaller of the mean norm and the ``rank`` threshold (both
    follow ``r`` through the rank)."""
    a = norms.detach()
    if variant == "mean":
        return r * a.mean()
    if variant not in ("rank", "mix"):
        raise ValueError(f"WPC threshold variant must be one of {TAU_VARIANTS}, not {variant!r}")
    sorted_a, _ = torch.sort(a)
    ranked = sorted_a[rank_index(a.numel(), r)]
    return ranked if variant == "rank" else torch.minimum(a.mean(), ranked)


def group_lasso(norms: torch.Tensor) -> torch.Tensor:
    return norms.sum()


def wpc_penalty(norms: torch.Tensor, variant: str = "mean", r: float = 0.7) -> torch.Tensor:
    tau = wpc_tau(norms, variant, r)
    # a group at exactly tau is still pulled (<=): the threshold group is the last one penalized
    return torch.where(norms <= tau, norms, tau).sum()


def shrink_factors(norms: torch.Tensor, kind: str, step: float, variant: str = "rank", r: float = 0.7) -> torch.Tensor:
    """Per group, the factor of one proximal step of ``step * R``: ``max(0, 1 - step / a_i)``
    for the groups the penalty pulls (every group for the lasso, ``a_i <= tau`` for WPC), 1 for
    the others."""
    a = norms.detach()
    f = torch.clamp(1 - step / a.clamp_min(_EPS), min=0.0)
    if kind == "lasso":
        return f
    return torch.where(a <= wpc_tau(a, variant, r), f, torch.ones_like(f))
