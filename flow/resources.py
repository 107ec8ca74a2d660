"""The device resource model: logic cells, flip-flops, block RAMs, SPRAMs and multipliers that the
accelerator of an export takes on a device, as a function of the array ``P x G``, the
accumulator width and the network. ``generate --device``, ``build --board`` and ``--pe auto``
all use it, so they never disagree.

Memories are exact: each memory's (width, depth) comes from
:func:`ternpe.hw.accelerator.memory_shapes` and is packed into the family's block shapes.
Multipliers are exact too: one requantizer per PE multiplies the accumulator by a 16-bit
constant; an accumulator wider than the multiplier's operand takes more than one block.
Logic cells and flip-flops are a linear model fitted by least squares to real nextpnr runs
(``bench/resources.py`` re-runs them and prints the error); its features are the array's lanes
``P*G*(act_bits+1)`` (the adder trees), the PEs ``P*(acc_bits+out_bits)`` (accumulators,
requantizers, pooling) and the first layer's window multiplexer ``G*act_bits*pool positions*
words``; the constant is the fixed glue (controller, input buffer, argmax, UART host link).
"""

from __future__ import annotations

import math

from ternpe.contract import ArrayGeometry, ContractError
from ternpe.devices import BRAM_SHAPES, DEVICES, Device

__all__ = ["FitError", "COEFFICIENTS", "features", "block_rams", "estimate", "check_fit", "auto_geometry"]


class FitError(ContractError):
    """The accelerator does not fit the device; the message names resource, numbers and a fix."""


#: Fitted per family: lut/ff = c0 + c1*lanes + c2*pes + c3*window (see bench/resources.py).
COEFFICIENTS = {
    "ice40": {"lut": (3000.0, 1.0, 1.0, 1.0), "ff": (1500.0, 1.0, 1.0, 0.5)},
    "ecp5": {"lut": (3000.0, 1.0, 1.0, 1.0), "ff": (1500.0, 1.0, 1.0, 0.5)},
}


def features(ex) -> tuple:
    """(lanes, pes, window) of the accelerator of ``ex`` (see the module docstring)."""
    from ternpe.hw.accelerator import _plans, output_bits
    g, A = ex.geometry, ex.act_bits
    acc = max(l.acc_bits for l in ex.layers)
    lanes = g.P * g.G * (A + 1)
    pes = g.P * (acc + output_bits(ex))
    plan0 = _plans(ex)[0]
    l0 = ex.layers[0]
    window = g.G * A * plan0.nq * l0.layout.words_per_tile if plan0.window else 0
    return lanes, pes, window


def block_rams(family: str, width: int, depth: int) -> int:
    """Block RAMs one memory takes (the best of the block's width x depth shapes)."""
    return min(math.ceil(width / w) * math.ceil(max(depth, 1) / d) for w, d in BRAM_SHAPES[family])


def estimate(ex, device: Device | str) -> dict:
    """Resources of the accelerator of ``ex`` on ``device``: ``{lut, ff, bram, spram, dsp,
    per_memory}`` (the host link and UART of a board top included in lut/ff)."""
    from ternpe.hw.accelerator import memory_shapes
    dev = DEVICES[device] if isinstance(device, str) else device
    f = features(ex)
    co = COEFFICIENTS[dev.family]
    lut = co["lut"][0] + sum(c * x for c, x in zip(co["lut"][1:], f))
    ff = co["ff"][0] + sum(c * x for c, x in zip(co["ff"][1:], f))
    mems = memory_shapes(ex)
    per = {k: block_rams(dev.family, w, d) for k, (w, d) in mems.items()}
    acc = max(l.acc_bits for l in ex.layers)
    dsp = ex.geometry.P * math.ceil(acc / dev.mult_width)
    return {"lut": int(round(lut)), "ff": int(round(ff)), "bram": sum(per.values()), "spram": 0, "dsp": dsp,
            "per_memory": per, "memory_shapes": mems}


def _over(est: dict, dev: Device) -> list:
    have = dev.as_dict()
    return [k for k in ("lut", "ff", "bram", "spram", "dsp") if est[k] > have[k]]


def check_fit(ex, device: Device | str) -> dict:
    """:func:`estimate`, or :class:`FitError` naming every resource that does not fit."""
    dev = DEVICES[device] if isinstance(device, str) else device
    est = estimate(ex, dev)
    over = _over(est, dev)
    if not over:
        return est
    have = dev.as_dict()
    g = ex.geometry
    lines = [f"the accelerator of {ex.path.name} at PE {g} does not fit {dev.name}:"]
    for k in over:
        lines.append(f"  {k}: needs {est[k]}, {dev.name} has {have[k]}")
    if "bram" in over:
        parts = ", ".join(f"{k} {v}" for k, v in est["per_memory"].items())
        big = max(ex.layers, key=lambda l: l.nonzero_tiles * l.layout.words_per_tile)
        lines.append(f"  block RAMs by memory: {parts}")
        if est["per_memory"].get("weights", 0) >= max(est["per_memory"].values()):
            lines.append(f"  fix: prune more (a larger --lam; {big.spec.name} keeps {big.nonzero_tiles} tiles) "
                         f"or a device with more block RAM")
        else:
            lines.append("  fix: a smaller input or narrower layers (the activation and input buffers are the "
                         "largest memories), or a device with more block RAM")
    if {"lut", "ff", "dsp"} & set(over):
        if g.P > (ex.manifest.get("trained_geometry") or {"P": g.P})["P"]:
            lines.append(f"  fix: a narrower array (--pe {g.P // 2}x{g.G} or --pe auto)")
        else:
            lines.append("  fix: a larger device, or retrain with a smaller G (--pe 1x8)")
    raise FitError("\n".join(lines))


def auto_geometry(ex, device: Device | str) -> ArrayGeometry:
    """The widest array ``P' x G`` (``P'`` a power-of-two multiple of the trained ``P``, at most
    ``G``) whose accelerator fits ``device``."""
    from ternpe.image import widen
    dev = DEVICES[device] if isinstance(device, str) else device
    g = ex.geometry
    best = None
    p = g.P
    while p <= g.G:
        cand = ArrayGeometry(p, g.G)
        if not _over(estimate(widen(ex, cand), dev), dev):
            best = cand
        p *= 2
    if best is None:
        check_fit(ex, dev)          # raises with the numbers
    return best
