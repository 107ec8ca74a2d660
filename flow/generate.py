"""``ternpe generate``: an export -> Verilog of its accelerator, with the cycle model."""

from __future__ import annotations

import json
import pathlib

from amaranth.back import verilog

from ternpe.contract import ArrayGeometry
from ternpe.image import load_export
from ternpe.hw.accelerator import Accelerator, GenerateError, memory_bits

__all__ = ["DEVICES", "build_accelerator", "generate"]

#: Block-RAM bits per device (the fit check before any synthesis).
DEVICES = {"up5k": 30 * 4096, "ecp5-25f": 56 * 18432, "ecp5-85f": 208 * 18432}


def build_accelerator(export_dir, *, pe: str | None = None, device: str | None = None) -> Accelerator:
    ex = load_export(export_dir)
    if pe is not None:
        want = ArrayGeometry.parse(pe)
        if want != ex.geometry:
            raise GenerateError(f"--pe {want} does not match the export's array {ex.geometry}: the tiles were "
                                f"pruned for {ex.geometry}; retrain with --pe {want} or generate with --pe {ex.geometry}")
    if device is not None:
        if device not in DEVICES:
            raise GenerateError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
        bits = memory_bits(ex)
        have = DEVICES[device]
        if sum(bits.values()) > have:
            parts = ", ".join(f"{k} {v}" for k, v in bits.items())
            big = max(ex.layers, key=lambda l: l.nonzero_tiles * l.layout.words_per_tile)
            raise GenerateError(f"the network needs {sum(bits.values())} bits of block RAM ({parts}); {device} has "
                                f"{have}. The largest weight layer is {big.spec.name} ({big.nonzero_tiles} tiles): "
                                f"prune more (a larger --lam) or use a larger device")
    return Accelerator(ex)


def generate(export_dir, out_dir, *, pe: str | None = None, device: str | None = None, log=print) -> pathlib.Path:
    acc = build_accelerator(export_dir, pe=pe, device=device)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(acc, name="ternpe_top", emit_src=False)
    (out / "ternpe_top.v").write_text(text)
    model = acc.cycle_model()
    report = {"geometry": str(acc.export.geometry), "cycles": model, "memory_bits": acc.memory_bits(),
              "acc_bits": acc.acc_bits, "out_bits": acc.out_bits, "classes": acc.classes,
              "ports": {"clk": "clk", "rst": "rst", "input": "input__payload/valid/ready",
                        "output": "output__payload/valid/ready (logits, then the class)", "cycles": "cycles"}}
    (out / "ternpe_top.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"ternpe generate: {out / 'ternpe_top.v'} ({len(text.splitlines())} lines), "
        f"{model['total']} cycles per inference, memory {sum(acc.memory_bits().values())} bits")
    return out
