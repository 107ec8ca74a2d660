"""Ternary weight layers (the paper's ternarizer) and activation quantization.

Ternarizer, per layer, over the unpruned weights only:
``delta = t * max|W|``, ``alpha = mean(|w| for |w| >= delta)``,
``w_t = alpha * sign(w) * [|w| > delta]``; backward is a straight-through estimator with the
gradient zeroed where ``|w| >= 1`` and on pruned weights.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .distributed import all_max

__all__ = ["ternarize", "ternary_codes", "TernaryConv2d", "TernaryLinear", "ActQuant", "weight_layers"]


def ternary_codes(w: torch.Tensor, mask: torch.Tensor, t: float):
    """Return ``(codes in {-1,0,1}, alpha, delta)`` of the masked weight ``w``."""
    live = mask > 0
    a = w.detach().abs()
    if not bool(live.any()):
        z = torch.zeros_like(w)
        return z, w.new_tensor(0.0), w.new_tensor(0.0)
    delta = t * a[live].max()
    sel = (a >= delta) & live
    alpha = a[sel].mean()
    codes = torch.sign(w.detach()) * ((a > delta) & live).to(w.dtype)
    return codes, alpha, delta


class _Ternarize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, mask, t):
        codes, alpha, _ = ternary_codes(w, mask, t)
        ctx.save_for_backward(w, mask)
        return alpha * codes

    @staticmethod
    def backward(ctx, grad):
        w, mask = ctx.saved_tensors
        return grad * (w.abs() < 1).to(grad.dtype) * mask, None, None


def ternarize(w: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    return _Ternarize.apply(w, mask, t)


class _WeightMixin:
    """Shared state of a weight layer: a kept-weight ``mask`` and the weight ``mode``.

    ``mode`` is ``"float"`` (masked latent weights), ``"ternary"`` (the ternarizer) or
    ``"int8"`` (full-precision layer; folded to 8-bit integers for the integer model).
    """

    def _init_mixin(self, t: float):
        self.register_buffer("mask", torch.ones_like(self.weight))
        self.mode = "float"
        self.t = float(t)
        self.penalized = False

    def effective_weight(self) -> torch.Tensor:
        if self.mode == "ternary":
            return ternarize(self.weight, self.mask, self.t)
        return self.weight * self.mask


class TernaryConv2d(nn.Conv2d, _WeightMixin):
    def __init__(self, *args, t: float = 0.05, **kw):
        super().__init__(*args, **kw)
        self._init_mixin(t)

    def forward(self, x):
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding)


class TernaryLinear(nn.Linear, _WeightMixin):
    def __init__(self, *args, t: float = 0.05, **kw):
        super().__init__(*args, **kw)
        self._init_mixin(t)

    def forward(self, x):
        return F.linear(x, self.effective_weight(), self.bias)


def weight_layers(net: nn.Module) -> list:
    return [m for m in net.modules() if isinstance(m, (TernaryConv2d, TernaryLinear))]


class ActQuant(nn.Module):
    """Unsigned ``bits``-bit fake quantization of a post-ReLU activation.

    The clip value is an exponential moving average of the batch maximum while training and
    frozen in eval; the step is ``clip / (2**bits - 1)`` and rounding is half-up, as the
    hardware's requantizer does. Disabled (identity) until ``enabled`` is set, so float
    pretraining is plain float.
    """

    def __init__(self, bits: int, momentum: float = 0.1):
        super().__init__()
        self.bits = bits
        self.momentum = momentum
        self.enabled = False
        self.register_buffer("clip", torch.tensor(0.0))

    @property
    def step(self) -> float:
        return float(self.clip) / ((1 << self.bits) - 1)

    def forward(self, x):
        if not self.enabled:
            return x
        if self.training:
            with torch.no_grad():
                m = all_max(x.detach().max())      # one clip across the ranks of a multi-process run
                if float(self.clip) == 0.0:
                    self.clip.copy_(m)
                else:
                    self.clip.mul_(1 - self.momentum).add_(self.momentum * m)
        s = self.clip.clamp_min(1e-8) / ((1 << self.bits) - 1)
        q = torch.clamp(torch.floor(x / s + 0.5), 0, (1 << self.bits) - 1) * s
        return x + (q - x).detach()
