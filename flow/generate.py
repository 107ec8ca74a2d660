"""``ternpe generate``: an export -> Verilog of its accelerator, with the cycle model and the memory plan."""

from __future__ import annotations

import json
import pathlib

from amaranth.back import verilog

from ternpe.contract import ArrayGeometry
from ternpe.devices import DEVICES
from ternpe.hw.accelerator import Accelerator
from ternpe.hw.plan import AcceleratorPlan, GenerateError, plan_accelerator
from ternpe.image import Export, load_export, widen
from ternpe.outdir import claim, write_whole
from .resources import auto_plan, check_fit, format_plan, plan_for_device, with_images

__all__ = ["prepare", "generate", "write_verilog"]


def prepare(export, *, pe: str | None = None, device: str | None = None, images: int | None = None,
            check_logic: bool = True, log=None) -> tuple[AcceleratorPlan, dict | None]:
    """The plan of an export's accelerator on the array ``pe`` (``P'xG``, ``auto`` or None: as
    trained) with ``images`` image lanes (None: 1, or ``--pe auto``'s choice) and ``device``'s
    options, checked to fit ``device``. ``export`` is a directory or a loaded
    :class:`~ternpe.image.Export`. Returns ``(plan, fit or None)``; every command that turns an
    export into hardware starts here, so generate, sim and build agree. ``log``: where ``--pe
    auto`` says which array it chose and what limited it."""
    ex = export if isinstance(export, Export) else load_export(export)
    if device is not None and device not in DEVICES:
        raise GenerateError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if pe == "auto":
        if device is None:
            raise GenerateError("--pe auto picks the array and image lanes that fit a device: give --device "
                                "(or --board)")
        plan, limit = auto_plan(ex, device, images=images)
        if log:
            log(f"--pe auto on {device}: {plan.geometry} x {plan.images} image lane(s), "
                f"{plan.cycles['per_image']:.0f} cycles per image ({plan.speedup:.2f}x fewer than dense on that "
                f"array); limited by {limit}")
    else:
        if pe is not None:
            ex = widen(ex, ArrayGeometry.parse(pe))
        plan = plan_for_device(ex, device) if device is not None else plan_accelerator(ex)
        if images is not None:
            plan = with_images(plan, images)
    fit = check_fit(plan, device, logic=check_logic) if device is not None else None
    return plan, fit


def write_verilog(plan: AcceleratorPlan, out_dir, *, name: str = "ternpe_top", force: bool = False,
                  log=print) -> pathlib.Path:
    """The Verilog of ``plan``'s accelerator as ``<out_dir>/<name>.v``. ``out_dir`` must be new,
    empty or generated Verilog (:mod:`ternpe.outdir`); ``force``: anything else there is moved aside."""
    out = claim(out_dir, "rtl", force=force, error=GenerateError, log=log)
    path = out / f"{name}.v"
    return write_whole(path, verilog.convert(Accelerator(plan), name=name, emit_src=False))


def generate(export, out_dir, *, pe: str | None = None, device: str | None = None, images: int | None = None,
             log=print, plan: AcceleratorPlan | None = None, force: bool = False) -> pathlib.Path:
    """Write ``ternpe_top.v`` and ``ternpe_top.json`` (cycles, memories, fit) into ``out_dir``;
    ``plan`` (from :func:`prepare`) when the caller has one already; ``force``: move aside what
    is in ``out_dir`` when it is not generated Verilog."""
    fit = None
    if plan is None:
        plan, fit = prepare(export, pe=pe, device=device, images=images, log=log)
    elif device is not None:
        fit = check_fit(plan, device)
    path = write_verilog(plan, out_dir, force=force, log=log)
    out = path.parent
    model, dense = plan.cycles, plan.dense_cycles
    report = {"dense_cycles": dense, "speedup_vs_dense": plan.speedup, "geometry": str(plan.geometry),
              "trained_geometry": plan.export.manifest.get("trained_geometry"), "plan": plan.summary(),
              "cycles": model, "memory_bits": plan.memory_bits(),
              "acc_bits": plan.acc_bits, "out_bits": plan.out_bits, "classes": plan.classes,
              "device": device, "fit": {k: v for k, v in fit.items() if k != "plan"} if fit else None,
              "ports": {"clk": "clk", "rst": "rst", "input": "input__payload/valid/ready",
                        "output": "output__payload/valid/ready (logits, then the class)", "cycles": "cycles"}}
    write_whole(out / "ternpe_top.json", json.dumps(report, indent=2) + "\n")
    lines = len(path.read_text().splitlines())
    if plan.images == 1:
        log(f"ternpe generate: {path} ({lines} lines), PE {plan.geometry}, "
            f"{model['total']} cycles per inference ({plan.speedup:.2f}x fewer than dense: {dense}; latency "
            f"{model['latency']}, throughput {model['throughput']} with the next image loading meanwhile)")
    else:
        log(f"ternpe generate: {path} ({lines} lines), PE {plan.geometry} x {plan.images} image lanes, "
            f"{model['per_image']:.0f} cycles per image ({plan.speedup:.2f}x fewer than dense: a batch of "
            f"{plan.images} in {model['total']} against {dense}; latency {model['latency']}, a batch every "
            f"{model['throughput']} with the next loading meanwhile)")
    if fit:
        log(f"memory plan on {device} (logic: ~{fit['lut']} of {DEVICES[device].lut} cells, "
            f"{fit['dsp']} of {DEVICES[device].dsp} multipliers):")
        log(format_plan(fit["plan"], device, plan.images))
    return out
