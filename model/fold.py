"""Fold a trained network (:class:`~ternpe.model.nets.SeqNet`, :class:`~ternpe.model.nets.ResNet20`) into the
integer model the hardware computes.

Per block, with ``s_in`` the step of the incoming activations (1/255 for the input pixels):

* weights become integers: ternary codes with the layer scale ``alpha``, or (full-precision
  first/last layers, float baselines) 8-bit integers with a per-channel scale;
* conv/fc is an integer accumulation (additions only for ternary weights);
* batch-norm, the weight scale and the activation steps fold into one per-channel requantizer,
  ``clamp((acc * mult + bias) >> shift, 0, 2**act_bits - 1)`` (ReLU and rounding included);
* the last layer keeps signed logits in units of ``logit_scale``;
* a residual layer's shortcut (the unsigned input of an earlier layer, at that layer's input
  step) enters its requantizer at ``res_mult = step_shortcut / step_out``;
* an average pool before the classifier becomes the classifier repeated at every pixel, with
  the 1/HW in its requantizer.

Everything after folding is :func:`ternpe.contract.run_integer_network`; nothing here is used
at inference time.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from ternpe.contract import ContractError, gap_fc_weights, requant_params, run_integer_network
from .ternary import ActQuant, ternary_codes

__all__ = ["IntegerModel", "fold", "INPUT_SCALE", "LOGIT_RESOLUTION"]

#: Real value of one step of an input pixel: the float model sees ``pixel / 255``.
INPUT_SCALE = 1.0 / 255
#: Logit units per unit of ``weight scale * input step`` of the last layer.
LOGIT_RESOLUTION = 256


@dataclasses.dataclass
class IntegerModel:
    specs: list
    weights: list          # int64 arrays, torch layout
    requants: list         # RequantParams
    act_bits: int
    logit_scale: float     # real value of one logit unit

    def run(self, x_uint8: np.ndarray) -> list:
        return run_integer_network(x_uint8, self.specs, self.weights, self.requants, act_bits=self.act_bits)

    def predict(self, x_uint8: np.ndarray, batch: int = 512) -> np.ndarray:
        out = [np.argmax(self.run(x_uint8[i:i + batch])[-1], axis=1) for i in range(0, len(x_uint8), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    @property
    def ternary(self) -> bool:
        return all(s.ternary for s in self.specs)


def calibrate_activations(net: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    """Set the clip of every not-yet-calibrated activation quantizer from data (BN frozen)."""
    acts = [a for a in net.modules() if isinstance(a, ActQuant) and float(a.clip) == 0.0]
    if not acts:
        return
    net.eval()
    for a in acts:
        a.enabled, a.momentum = True, 1.0
        a.train()
    with torch.no_grad():
        # Track the maximum over all of x, one batch at a time.
        best = {id(a): 0.0 for a in acts}
        for i in range(0, len(x), batch):
            net(x[i:i + batch])
            for a in acts:
                best[id(a)] = max(best[id(a)], float(a.clip))
    for a in acts:
        a.clip.fill_(best[id(a)])
        a.momentum = 0.1
        a.eval()


def _requant(spec, m_real, b_real, res_real=None):
    try:
        return requant_params(m_real, b_real, res_real=res_real)
    except ContractError as e:
        raise ContractError(f"layer {spec.name}: {e}") from None


def fold(net: nn.Module) -> IntegerModel:
    """The integer model of a network that lists its layers (:meth:`SeqNet.units`,
    :meth:`ResNet20.units`)."""
    if not net.folds:
        raise ContractError(f"{type(net).__name__} does not fold into the integer model")
    specs, weights, requants = [], [], []
    s_in = INPUT_SCALE
    steps = []                 # the step of every layer's input (a shortcut's scale)
    logit_scale = 1.0
    for spec, lin, bn, act, positions in net.units():
        steps.append(s_in)
        w = lin.weight.detach().double() * lin.mask.double()
        if lin.mode == "ternary":
            codes, alpha, _ = ternary_codes(lin.weight.detach().double(), lin.mask.double(), lin.t)
            w_int = codes.long().numpy()
            w_scale = np.full(spec.cout, float(alpha))
            spec = dataclasses.replace(spec, weight_bits=2)
        else:
            per_ch = w.reshape(spec.cout, -1).abs().max(dim=1).values.numpy()
            w_scale = np.where(per_ch > 0, per_ch / 127.0, 1.0)
            shape = (-1,) + (1,) * (w.dim() - 1)
            w_int = np.round(w.numpy() / w_scale.reshape(shape)).astype(np.int64)
            spec = dataclasses.replace(spec, weight_bits=8)
        dead = ~np.asarray(w_int).reshape(spec.cout, -1).any(axis=1)
        if positions > 1:           # average pool + fc: the fc repeated at every pixel, 1/HW in the scale
            w_int = gap_fc_weights(w_int, positions)
        if spec.relu:
            k = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
            c = (bn.bias.detach().double() - bn.running_mean.double() * torch.from_numpy(k)).numpy()
            s_out = act.step
            # a layer whose calibrated range is 0 (collapsed: every output was 0, the quantizer's
            # step is 1e-8 / levels) folds to a requantizer that emits 0; its step is moot
            collapsed = s_out <= 0
            if collapsed:
                s_out = 1.0
                dead = np.ones_like(dead)
                c = np.zeros_like(c)
            res = None if spec.residual is None else (0.0 if collapsed else steps[spec.residual] / s_out)
            # a pruned-away filter's accumulator is always 0: its multiplier is moot, and its
            # batch norm (no variance left) would make it huge
            m_real = np.where(dead, 0.0, k * w_scale * s_in / s_out)
            rq = _requant(spec, m_real, c / s_out, res)
            s_in = s_out
        else:
            bias = lin.bias.detach().double().numpy() if lin.bias is not None else np.zeros(spec.cout)
            logit_scale = float(w_scale.max()) * s_in / LOGIT_RESOLUTION
            if logit_scale == 0:
                logit_scale = 1.0
            rq = _requant(spec, np.where(dead, 0.0, w_scale * s_in / (positions * logit_scale)), bias / logit_scale)
        specs.append(spec)
        weights.append(w_int)
        requants.append(rq)
    return IntegerModel(specs, weights, requants, net.act_bits, logit_scale)
