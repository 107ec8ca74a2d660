"""A ternary CNN defined and trained with Brevitas on scikit-learn's 8x8 digits, exported to QONNX.

Bring your Brevitas model to a $50 board:

    .venv/bin/python examples/brevitas_digits.py --out runs/brevitas.onnx
    ternpe import runs/brevitas.onnx --dataset digits --out runs/brevitas
    ternpe export runs/brevitas --out exports/brevitas
    ternpe sim exports/brevitas --simulator verilator --samples 8

The weights are 2-bit signed narrow quantizers ({-1, 0, +1} x a scale per channel), the
activations 8-bit unsigned quantizers with learned scales, and the input quantizer's scale is
fixed at 1/255, so the byte the hardware reads is the value the network saw.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import torch
from torch import nn

__all__ = ["TernaryDigitsNet", "train", "export"]


def _quantizers():
    from brevitas.quant import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat

    class TernaryWeight(Int8WeightPerChannelFloat):
        """{-1, 0, +1} x a scale per output channel: a 2-bit signed narrow-range quantizer."""
        bit_width = 2
        narrow_range = True

    class PixelInput(Uint8ActPerTensorFloat):
        """The input as the board reads it: pixel / 255 on an 8-bit grid of step 1/255."""
        scaling_impl_type = "const"
        scaling_init = 1.0

    return TernaryWeight, PixelInput


class TernaryDigitsNet(nn.Module):
    """conv 3x3 (8) - BN - ReLU - pool - conv 3x3 (16) - BN - ReLU - pool - fc 10, ternary weights."""

    def __init__(self, width: int = 8):
        import brevitas.nn as qnn
        super().__init__()
        weight, pixel = _quantizers()
        self.inp = qnn.QuantIdentity(act_quant=pixel, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, width, 3, padding=1, bias=False, weight_quant=weight)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = qnn.QuantReLU(bit_width=8, return_quant_tensor=True)
        self.conv2 = qnn.QuantConv2d(width, 2 * width, 3, padding=1, bias=False, weight_quant=weight)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = qnn.QuantReLU(bit_width=8, return_quant_tensor=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = qnn.QuantLinear(2 * width * 2 * 2, 10, bias=True, weight_quant=weight)

    def forward(self, x):
        x = self.inp(x)
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x.value if hasattr(x, "value") else x, 1))


def _digits():
    from ternpe.model.data import load_dataset
    ds = load_dataset("digits")

    def t(x):
        return torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    return t(ds.x_train), torch.from_numpy(ds.y_train), t(ds.x_test), torch.from_numpy(ds.y_test)


def train(epochs: int = 8, seed: int = 0, log=print) -> TernaryDigitsNet:
    """Train the net on the digits' training split (about a second an epoch on two cores)."""
    torch.manual_seed(seed)
    x, y, xt, yt = _digits()
    net = TernaryDigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = float((net(xt).argmax(1) == yt).float().mean())
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {acc:.3f}")
    return net


def export(net: TernaryDigitsNet, out) -> pathlib.Path:
    """Export ``net`` as QONNX (Brevitas' ``export_qonnx``) to ``out``."""
    from brevitas.export import export_qonnx
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.eval()
    export_qonnx(net, torch.zeros(1, 1, 8, 8), str(out))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/brevitas.onnx", help="QONNX file to write (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(f"wrote {export(train(a.epochs, a.seed), a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
