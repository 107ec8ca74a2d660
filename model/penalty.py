"""PE-wise group lasso and Weight Penalty Clipping (WPC).

Groups are the contract's tiles (:func:`ternpe.contract.tile_ids`): group norms are one
scatter-add per layer. WPC clips each group's penalty at a threshold ``tau`` recomputed from
the current norms every step (the self-adapting threshold): ``R = sum_i min(a_i, tau)``. Groups
under ``tau`` are pulled to zero; groups over it contribute a constant and no gradient; a group
at exactly ``tau`` gets half the pull, as ``torch.minimum`` splits its gradient at a tie.
The threshold rules (:class:`Threshold`) and their formulas are in docs/method.md.

Training minimizes ``loss + lambda * R`` with a proximal step: SGD on the loss, then every
group the penalty pulls is shrunk by ``lr * lambda * weight * the mean norm of its layer's live
groups`` in norm, times its pull (:func:`shrink_factors`, the proximal operator of the group
lasso, applied only where ``min(a_i, tau)`` has a slope for WPC; the step, and the pruning of a
group that reaches zero, are in ``model.train``). Plain gradient steps on ``R`` only circle
around zero (the ternarizer's straight-through gradient keeps pushing every latent weight), so
whole tiles rarely became all-zero; the proximal step puts a group at exactly zero unless the
loss gradient on it is stronger than ``lambda * weight``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = ["group_norms", "rank_index", "wpc_tau", "wpc_pull", "group_lasso", "wpc_penalty", "shrink_factors",
           "Threshold", "TAU_VARIANTS", "TAU_OVER", "RANK_BASES", "MIX_FRACTION"]

from .config import RANK_BASES, TAU_OVER, TAU_VARIANTS
_EPS = 1e-12

#: The quantile of the authors' ``mix`` threshold: ``tau = min(mean, the 5/16 quantile)``, whatever r is.
MIX_FRACTION = 5 / 16


def group_norms(w: torch.Tensor, ids: torch.Tensor, n_groups: int) -> torch.Tensor:
    sq = torch.zeros(n_groups, dtype=w.dtype, device=w.device).index_add_(0, ids.reshape(-1), (w * w).reshape(-1))
    return torch.sqrt(sq + _EPS)


def rank_index(n: int, r: float, base: int = 0) -> int:
    """The 0-based position, among ``n`` ascending group norms, of the rank threshold at ``r``.

    The rank is ``k = floor(floor(16 r) * n / 16)``: for ``n`` a multiple of 16 it is the
    paper's ``floor(16 r) * floor(n / 16)``; unlike that, it does not collapse to 0 when a layer
    has fewer than 16 groups. The source does not say whether ``k`` counts from 0 or 1:
    ``base=0`` takes sorted norm ``k`` (the (k+1)-th smallest; a Python index, as the authors'
    code would use it), ``base=1`` the k-th smallest (``k - 1``). Clamped to ``[0, n - 1]``."""
    if base not in RANK_BASES:
        raise ValueError(f"the rank threshold's base must be one of {RANK_BASES}, not {base!r}")
    k = (math.floor(16 * r) * n) // 16
    return max(0, min(n - 1, k - base))


def wpc_tau(norms: torch.Tensor, variant: str, r: float, *, rank_base: int = 0,
            live: torch.Tensor | None = None) -> torch.Tensor:
    """The self-adapting threshold, recomputed from the current norms at every step (no gradient
    flows through it). ``mean``: ``r`` x the mean norm; ``rank``: the sorted norm at
    :func:`rank_index`; ``mix`` (the authors'): the smaller of the mean norm and the 5/16
    quantile (at ``rank_index(n, 5/16)``; ``r`` plays no part); ``mix-r``: the smaller of the mean
    norm and the ``rank`` threshold at ``r``. ``live`` (a bool per group): take the statistics
    over those groups only; with none live, tau is 0 and nothing is pulled."""
    if variant not in TAU_VARIANTS:
        raise ValueError(f"WPC threshold variant must be one of {TAU_VARIANTS}, not {variant!r}")
    a = norms.detach()
    if live is not None:
        a = a[live]
        if a.numel() == 0:
            return norms.new_zeros(())
    if variant == "mean":
        return r * a.mean()
    sorted_a, _ = torch.sort(a)
    ranked = sorted_a[rank_index(a.numel(), MIX_FRACTION if variant == "mix" else r, rank_base)]
    return ranked if variant == "rank" else torch.minimum(a.mean(), ranked)


def wpc_pull(norms: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Per group, the slope of ``min(a_i, tau)`` in ``a_i`` as ``torch.minimum``'s gradient takes
    it: 1 under tau, 1/2 at exactly tau, 0 over it."""
    a = norms.detach()
    return (a < tau).to(a.dtype) + 0.5 * (a == tau).to(a.dtype)


def group_lasso(norms: torch.Tensor) -> torch.Tensor:
    return norms.sum()


def wpc_penalty(norms: torch.Tensor, variant: str = "mean", r: float = 0.7, *, rank_base: int = 0,
                live: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i min(a_i, tau)``; a group at exactly tau gets half the gradient (``torch.minimum``)."""
    tau = wpc_tau(norms, variant, r, rank_base=rank_base, live=live)
    return torch.minimum(norms, tau.to(norms.dtype)).sum()


def shrink_factors(norms: torch.Tensor, kind: str, step: float, variant: str = "rank", r: float = 0.7, *,
                   rank_base: int = 0, live: torch.Tensor | None = None) -> torch.Tensor:
    """Per group, the factor of one proximal step of ``step * R``: ``max(0, 1 - step * p_i / a_i)``
    with ``p_i`` the group's pull (1 for every group under the lasso; :func:`wpc_pull` for WPC),
    1 for a group not pulled."""
    a = norms.detach()
    pull = torch.ones_like(a) if kind == "lasso" else wpc_pull(a, wpc_tau(a, variant, r, rank_base=rank_base,
                                                                           live=live))
    return torch.clamp(1 - step * pull / a.clamp_min(_EPS), min=0.0)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One WPC threshold rule: ``variant`` (``--tau``), ``r``, ``rank_base`` (0 or 1: how the
    rank index counts) and ``over`` (``all`` groups, or the ``live`` ones only)."""
    variant: str = "rank"
    r: float = 0.7
    rank_base: int = 0
    over: str = "all"

    def __post_init__(self):
        if self.variant not in TAU_VARIANTS:
            raise ValueError(f"WPC threshold variant must be one of {TAU_VARIANTS}, not {self.variant!r}")
        if self.rank_base not in RANK_BASES:
            raise ValueError(f"the rank threshold's base must be one of {RANK_BASES}, not {self.rank_base!r}")
        if self.over not in TAU_OVER:
            raise ValueError(f"tau is taken over {' or '.join(TAU_OVER)} groups, not {self.over!r}")

    def kwargs(self, live: torch.Tensor | None) -> dict:
        """The keyword arguments of :func:`wpc_tau` for a layer whose live groups are ``live``."""
        return {"rank_base": self.rank_base, "live": live if self.over == "live" else None}

    def cap(self, n: int) -> int | None:
        """The most of a layer's ``n`` groups the penalty can pull to zero, or None when the rule
        sets no such limit. Over all groups, a ranked tau (``rank``, ``mix``, ``mix-r``) is a
        pruned group's norm once ``rank_index + 1`` groups are zero, and no live group is under it."""
        if self.over == "live" or self.variant == "mean":
            return None
        return rank_index(n, MIX_FRACTION if self.variant == "mix" else self.r, self.rank_base) + 1
