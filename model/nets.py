"""Networks: an MLP, a small CNN sized for an iCE40 UP5K, a network of your own from a layer
spec (``c16,p,c32,p,c32,fc10``), and the CIFAR-10 ResNet-20.

The MLP, the CNN and layer-spec networks are sequences of blocks the hardware runs one after the other; each block
is described by a :class:`ternpe.contract.LayerSpec`, so the integer model and the export come
straight from :meth:`SeqNet.specs`. ResNet-20's residual adds and average pool are in the
contract and the integer model too (:meth:`ResNet20.specs`); the hardware does not run them yet.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn
import torch.nn.functional as F

from ternpe.contract import ContractError, LayerSpec, parse_layers
from .ternary import ActQuant, TernaryConv2d, TernaryLinear

__all__ = ["ARCHS", "build_net", "TernaryNet", "SeqNet", "ResNet20", "cnn_specs", "mlp_specs", "spec_specs"]

from .config import ARCHS


def _wb(i: int, n: int, first_last: str) -> int:
    return 8 if first_last == "fp" and i in (0, n - 1) else 2


def cnn_specs(shape, classes: int, first_last: str = "ternary", width: int = 16) -> list:
    """conv3x3(c->w) BN ReLU pool2 -> conv3x3(w->2w) BN ReLU pool2 -> fc(-> classes)."""
    h, w, c = shape
    if h % 4 or w % 4:
        raise ContractError(f"the cnn pools twice by 2: input height and width must be multiples "
                            f"of 4, got {h}x{w}")
    specs = [
        LayerSpec("conv1", "conv", c, width, in_h=h, in_w=w, k=3, pad=1, pool=2),
        LayerSpec("conv2", "conv", width, 2 * width, in_h=h // 2, in_w=w // 2, k=3, pad=1, pool=2),
        LayerSpec("fc", "fc", (h // 4) * (w // 4) * 2 * width, classes, relu=False),
    ]
    return [LayerSpec(**{**s.to_dict(), "weight_bits": _wb(i, 3, first_last)}) for i, s in enumerate(specs)]


def spec_specs(text: str, shape, classes: int, first_last: str = "ternary") -> list:
    """A network from a layer spec (:data:`ternpe.contract.LAYER_SPEC_HELP`)."""
    specs = parse_layers(text, shape, classes)
    n = len(specs)
    return [LayerSpec(**{**s.to_dict(), "weight_bits": _wb(i, n, first_last)}) for i, s in enumerate(specs)]


def mlp_specs(shape, classes: int, first_last: str = "ternary", hidden=(64, 32)) -> list:
    h, w, c = shape
    dims = [h * w * c, *hidden, classes]
    n = len(dims) - 1
    return [LayerSpec(f"fc{i + 1}", "fc", dims[i], dims[i + 1], relu=i < n - 1,
                      weight_bits=_wb(i, n, first_last)) for i in range(n)]


class TernaryNet(nn.Module):
    """A network :func:`build_net` makes.

    ``folds``: the network lists its layers as the integer model runs them (``units()``: ``(spec,
    weight layer, batch norm, activation quantizer, positions)`` each, and ``specs()``), so it
    folds into the integer model, the accelerator's cycle model counts it and it exports.
    """

    folds: ClassVar[bool] = False


class SeqNet(TernaryNet):
    """A sequence of (conv | fc) -> [BN -> ReLU -> ActQuant -> maxpool] blocks."""

    folds = True

    def __init__(self, specs, act_bits: int, t: float):
        super().__init__()
        self._specs = list(specs)
        self.act_bits = act_bits
        self.blocks = nn.ModuleList()
        for i, s in enumerate(self._specs):
            if s.kind == "conv":
                lin = TernaryConv2d(s.cin, s.cout, s.k, stride=s.stride, padding=s.pad, bias=not s.relu, t=t)
                bn = nn.BatchNorm2d(s.cout) if s.relu else nn.Identity()
            else:
                lin = TernaryLinear(s.cin, s.cout, bias=not s.relu, t=t)
                bn = nn.BatchNorm1d(s.cout) if s.relu else nn.Identity()
            lin.penalized = i > 0 and s.ternary
            lin.spec = s
            block = nn.Module()
            block.lin, block.bn = lin, bn
            block.act = ActQuant(act_bits) if s.relu else nn.Identity()
            self.blocks.append(block)

    def specs(self) -> list:
        return list(self._specs)

    def units(self) -> list:
        """``(spec, weight layer, batch norm, activation quantizer, positions)`` per block."""
        return [(s, b.lin, b.bn if s.relu else None, b.act if s.relu else None, 1)
                for s, b in zip(self._specs, self.blocks)]

    def block_forward(self, i: int, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        """Block ``i`` alone (fc blocks flatten a 4-d input in ``(h, w, c)`` order); a residual
        block adds ``shortcut`` (the input of the layer its spec names) before the ReLU."""
        s, b = self._specs[i], self.blocks[i]
        if s.kind == "fc" and x.dim() == 4:
            x = x.permute(0, 2, 3, 1).flatten(1)       # (h, w, c) order, as the contract says
        if not s.relu:
            return b.lin(x)
        y = b.bn(b.lin(x))
        if s.residual is not None:
            if shortcut is None:
                raise ValueError(f"layer {s.name} adds a shortcut: pass the input of layer {s.residual}")
            y = y + shortcut_tensor(shortcut, s.cout, s.shortcut == "pad")
        x = b.act(F.relu(y))
        return F.max_pool2d(x, 2) if s.pool else x

    def forward(self, x, taps: list | None = None):
        inputs = []
        for i, s in enumerate(self._specs):
            inputs.append(x)
            x = self.block_forward(i, x, None if s.residual is None else inputs[s.residual])
            if taps is not None:
                taps.append(x)
        return x


def shortcut_tensor(x: torch.Tensor, cout: int, pad: bool) -> torch.Tensor:
    """A residual block's shortcut in NCHW: ``x`` as is, or ResNet option A (every second row and
    column, the channels zero-padded equally before and after up to ``cout``), as
    :func:`ternpe.contract.shortcut_map` defines it."""
    if not pad:
        return x
    extra = cout - x.shape[1]
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, extra // 2, extra - extra // 2))


class _Block(nn.Module):
    """A basic block: conv-BN-ReLU, conv-BN, + shortcut, ReLU, each ReLU output quantized as the
    integer model holds it. ``source`` is the index (in :meth:`ResNet20.specs`) of the layer
    whose input is the shortcut: this block's first conv."""

    def __init__(self, name, cin, cout, stride, t, h, w, act_bits, source):
        super().__init__()
        self.c1 = TernaryConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, t=t)
        self.b1 = nn.BatchNorm2d(cout)
        self.a1 = ActQuant(act_bits)
        self.c2 = TernaryConv2d(cout, cout, 3, stride=1, padding=1, bias=False, t=t)
        self.b2 = nn.BatchNorm2d(cout)
        self.a2 = ActQuant(act_bits)
        self.pad = cout - cin if stride != 1 or cin != cout else 0
        self.c1.spec = LayerSpec(f"{name}c1", "conv", cin, cout, in_h=h, in_w=w, k=3, stride=stride, pad=1)
        self.c2.spec = LayerSpec(f"{name}c2", "conv", cout, cout, in_h=self.c1.spec.conv_h,
                                 in_w=self.c1.spec.conv_w, k=3, pad=1, residual=source,
                                 shortcut="pad" if self.pad else "identity")

    def forward(self, x):
        y = self.a1(F.relu(self.b1(self.c1(x))))
        y = self.b2(self.c2(y))
        return self.a2(F.relu(y + shortcut_tensor(x, self.c2.spec.cout, bool(self.pad))))


class ResNet20(TernaryNet):
    """He et al.'s CIFAR-10 ResNet-20 (3 stages x 3 basic blocks, option A shortcuts: the
    zero-padded identity of the paper's CIFAR code), global average pool, fc.

    :meth:`specs` is the integer model's layer list: conv1, then two convs per block (the second
    with ``residual`` naming the first, whose input is the shortcut), then the classifier as an
    fc over the flattened last map with its weights repeated at every pixel
    (:func:`ternpe.contract.gap_fc_weights`: the average pool's 1/HW folds into its requantizer).
    """

    folds = True

    def __init__(self, shape, classes: int, t: float, first_last: str = "ternary", act_bits: int = 8):
        super().__init__()
        h, w, c = shape
        if h % 4 or w % 4:
            raise ContractError(f"resnet20 halves the map twice: input height and width must be multiples of 4, "
                                f"got {h}x{w}")
        self.act_bits = act_bits
        self.conv1 = TernaryConv2d(c, 16, 3, padding=1, bias=False, t=t)
        self.conv1.spec = LayerSpec("conv1", "conv", c, 16, in_h=h, in_w=w, k=3, pad=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.a0 = ActQuant(act_bits)
        blocks, cin, hh, ww = [], 16, h, w
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(3):
                stride = 2 if stage > 0 and i == 0 else 1
                blk = _Block(f"s{stage + 1}b{i + 1}", cin, cout, stride, t, hh, ww, act_bits, source=1 + 2 * len(blocks))
                blocks.append(blk)
                hh, ww = blk.c2.spec.out_h, blk.c2.spec.out_w
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.positions = hh * ww
        self.fc = TernaryLinear(64, classes, t=t)
        self.fc.spec = LayerSpec("fc", "fc", 64, classes, relu=False)
        self.fc.repeats = self.positions          # the hardware runs it at every pixel of the last map
        for i, m in enumerate([mod for mod in self.modules() if hasattr(mod, "spec")]):
            m.penalized = i > 0 and m is not self.fc
        self.fc.penalized = first_last == "ternary"
        if first_last == "fp":
            for m in (self.conv1, self.fc):
                m.spec = dataclasses.replace(m.spec, weight_bits=8)

    def units(self) -> list:
        """``(spec, weight layer, batch norm, activation quantizer, positions)`` per layer of the
        integer model; ``positions`` > 1 for the classifier behind the average pool."""
        out = [(self.conv1.spec, self.conv1, self.bn1, self.a0, 1)]
        for b in self.layers:
            out += [(b.c1.spec, b.c1, b.b1, b.a1, 1), (b.c2.spec, b.c2, b.b2, b.a2, 1)]
        fc = dataclasses.replace(self.fc.spec, cin=self.positions * self.fc.spec.cin)
        return out + [(fc, self.fc, None, None, self.positions)]

    def specs(self) -> list:
        return [u[0] for u in self.units()]

    def forward(self, x, taps=None):
        x = self.a0(F.relu(self.bn1(self.conv1(x))))
        if taps is not None:
            taps.append(x)
        for b in self.layers:
            x = b(x)
            if taps is not None:
                taps.append(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def build_net(arch: str, shape, classes: int, *, act_bits: int, t: float, first_last: str,
              width: int | None = None) -> TernaryNet:
    """``arch``: ``cnn`` (``width`` filters in its first conv, default 16), ``mlp`` (``width``
    units in its first hidden layer, default 64; the second has half), ``resnet20``, or a layer
    spec."""
    if arch == "cnn":
        return SeqNet(cnn_specs(shape, classes, first_last, width=width or 16), act_bits, t)
    if arch == "mlp":
        w = width or 64
        return SeqNet(mlp_specs(shape, classes, first_last, hidden=(w, max(1, w // 2))), act_bits, t)
    if arch == "resnet20":
        if width is not None:
            raise ContractError("--width applies to --arch cnn and mlp, not resnet20")
        return ResNet20(shape, classes, t, first_last, act_bits=act_bits)
    if width is not None:
        raise ContractError("--width applies to --arch cnn and mlp; a layer spec gives every width itself")
    return SeqNet(spec_specs(arch, shape, classes, first_last), act_bits, t)
