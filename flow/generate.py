"""``ternpe generate``: an export -> Verilog of its accelerator, with the cycle model and the memory plan."""

from __future__ import annotations

import json
import pathlib

from amaranth.back import verilog

from ternpe.contract import ArrayGeometry
from ternpe.devices import DEVICES
from ternpe.hw.accelerator import Accelerator, GenerateError, cycle_model
from ternpe.image import densified, load_export, widen
from .resources import auto_geometry, check_fit, format_plan

__all__ = ["prepare", "build_accelerator", "generate"]


def prepare(export_dir, *, pe: str | None = None, device: str | None = None, check_logic: bool = True):
    """Load an export, put it on the array ``pe`` (``P'xG``, ``auto`` or None: as trained) and
    check it fits ``device``. Returns ``(export, fit or None)``; every command that turns an
    export into hardware starts here, so generate, sim and build agree."""
    ex = load_export(export_dir)
    if device is not None and device not in DEVICES:
        raise GenerateError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if pe == "auto":
        if device is None:
            raise GenerateError("--pe auto picks the widest array that fits a device: give --device (or --board)")
        ex = widen(ex, auto_geometry(ex, device))
    elif pe is not None:
        ex = widen(ex, ArrayGeometry.parse(pe))
    fit = check_fit(ex, device, logic=check_logic) if device is not None else None
    return ex, fit


def build_accelerator(export_dir, *, pe: str | None = None, device: str | None = None) -> Accelerator:
    ex, fit = prepare(export_dir, pe=pe, device=device)
    return Accelerator(ex, **(fit["options"] if fit else {}))


def generate(export_dir, out_dir, *, pe: str | None = None, device: str | None = None, log=print) -> pathlib.Path:
    ex, fit = prepare(export_dir, pe=pe, device=device)
    acc = Accelerator(ex, **(fit["options"] if fit else {}))
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} is a file: give a directory for the Verilog")
    out.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(acc, name="ternpe_top", emit_src=False)
    (out / "ternpe_top.v").write_text(text)
    model = acc.cycle_model()
    dense = cycle_model(densified(ex))["total"]
    report = {"dense_cycles": dense, "speedup_vs_dense": dense / model["total"],"geometry": str(ex.geometry), "trained_geometry": ex.manifest.get("trained_geometry"),
              "cycles": model, "memory_bits": acc.memory_bits(),
              "acc_bits": acc.acc_bits, "out_bits": acc.out_bits, "classes": acc.classes,
              "device": device, "fit": {k: v for k, v in fit.items() if k != "plan"} if fit else None,
              "ports": {"clk": "clk", "rst": "rst", "input": "input__payload/valid/ready",
                        "output": "output__payload/valid/ready (logits, then the class)", "cycles": "cycles"}}
    (out / "ternpe_top.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"ternpe generate: {out / 'ternpe_top.v'} ({len(text.splitlines())} lines), PE {ex.geometry}, "
        f"{model['total']} cycles per inference ({dense / model['total']:.2f}x fewer than dense: {dense}; latency "
        f"{model['latency']}, throughput {model['throughput']} with the next image loading meanwhile)")
    if fit:
        log(f"memory plan on {device} (logic: ~{fit['lut']} of {DEVICES[device].lut} cells, "
            f"{fit['dsp']} of {DEVICES[device].dsp} multipliers):")
        log(format_plan(fit["plan"], device))
    return out
