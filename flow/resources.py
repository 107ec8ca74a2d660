"""The device resource model: logic cells, flip-flops, block RAMs, SPRAMs and multipliers that the
accelerator of an export takes on a device, as a function of the array ``P x G``, the
accumulator width and the network. ``generate --device``, ``build --board`` and ``--pe auto``
all use it, so they never disagree.

Everything is read from the accelerator's plan (:class:`ternpe.hw.plan.AcceleratorPlan`), built
once per array. Memories are exact: each memory's (width, depth) comes from
``plan.memory_shapes`` and is packed into the family's block shapes.
Multipliers are exact too: one requantizer per PE multiplies the accumulator by a 16-bit
constant, one hardware multiplier per 15 accumulator bits (a 20-bit accumulator takes two),
and a residual network one more for the shortcut.
Logic cells and flip-flops are a linear model fitted by least squares to real nextpnr runs
(``bench/resources.py`` re-runs them and prints the error); its features are the array's lanes
``P*G*(act_bits+1)`` (the adder trees) and the PEs ``P*(acc_bits+out_bits)`` (accumulators,
requantizers, pooling); the constant is the fixed glue (controller, input buffer and patch
registers, argmax, UART host link). Fitted (non-negative least squares) on 7 iCE40 and 7 ECP5
builds of the digits and MNIST CNNs and seeded random networks, arrays 1x8 to 16x16. The iCE40
was refitted with the logits and requantizer constants in block RAM: logic cells within 17.4%
(mean 10.3%; the fixed logic varies with the network more than these features say: a 3-channel
12x12 input takes 5,059 cells at 1x16 where the digits CNN takes 3,594). ECP5 LUTs within 3.8%
(mean 1.2%), flip-flops within 8.3% (mean 3.6%), fitted before the PE's terms went to one's
complement (it now overestimates the ECP5's PEs).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

from ternpe.contract import ArrayGeometry
from ternpe.devices import BRAM_SHAPES, DEVICES, Device
from ternpe.hw.plan import AcceleratorOptions, AcceleratorPlan, GenerateError, MemoryName, plan_accelerator
from ternpe.hw.requant import ACC_BITS_PER_MULTIPLIER
from ternpe.hw.spram import fits_spram
from ternpe.image import widen

__all__ = ["FitError", "COEFFICIENTS", "features", "block_rams", "memory_plan", "uses_spram", "accelerator_options",
           "plan_for_device", "estimate", "check_fit", "over_budget", "auto_geometry", "auto_plan", "array_for_device",
           "format_plan", "with_images", "LANE_COST", "AUTO_FILL", "auto_fill",
           "AUTO_BRAM_FILL", "auto_bram_fill", "auto_shares"]


class FitError(GenerateError):
    """The accelerator does not fit the device; the message names resource, numbers and a fix."""


#: Fitted per family (bench/resources.py): lut/ff = c0 + c1*lanes + c2*pes. An iCE40 logic cell is
#: a LUT and a flip-flop, and nextpnr counts cells: there is no separate FF figure there.
COEFFICIENTS = {
    "ice40": {"lut": (3459.91, 4.48, 0.0)},
    "ecp5": {"lut": (3474.86, 3.24, 4.63), "ff": (1868.67, 2.5, 4.41)},
}

#: What each image lane past the first adds besides its PE array and requantizers (its input
#: buffer, write-back, logit registers and operand registers), per family: measured as the
#: difference of Yosys ``synth_ecp5`` / ``synth_ice40`` runs of the MNIST accelerator at 1, 2
#: and 4 lanes (ECP5; 1 and 2 on the iCE40) less the lanes' share of the fitted terms
#: (``python bench/lanes.py EXPORT --device D --lanes 1,2,4`` re-measures it). ECP5 flip-flops
#: re-measured with each lane's copies kept apart (``KEEP_LANE_COPIES``): 2,181 a lane from 2 to
#: 4 lanes where the merged copies gave 1,680, so 499 more than before.
LANE_COST = {
    "ice40": {"lut": 1367.0},
    "ecp5": {"lut": 1191.0, "ff": 1610.0},
}

#: The share of a device's logic ``--pe auto`` fills (the trained array with one lane is taken
#: whatever its size, if it fits), by device and else by family. It is what has been measured to
#: route and meet the board's clock (the MNIST export, docs/accelerator.md "Image lanes"). On the
#: ECP5-85F at 100 MHz, with the hard blocks' registers (flow/hardregs.py): 2x16 x 6 lanes (22% of
#: its LUTs) closes at 105.67 MHz on placer seed 1; 4x16 x 5 lanes (29%) at 101.92 MHz on seed 1
#: (with the data registers without reset); before them 10 lanes (32%) did not route in an hour
#: and a 70% design never reached a legal placement. Other ECP5s keep the 16% measured before (a 4-lane ULX3S build); the
#: OrangeCrab's 25F at 124.8 MHz has not been tried wider. More lanes by hand: ``--image-lanes N``
#: (checked against the device). The UP5K: the MNIST CNN at 2x16 places at 4,849 logic cells (92%)
#: and closes 30.74 MHz on seed 1 (at 5,019, 95%, nextpnr found no legal placement); the digits
#: CNN at 2x16 takes 4,515 and closes 31.5 MHz. The model gives both 4,750. A network whose first
#: layer's patch is large (the model's known gap: a 3-channel input) can need more than it says.
AUTO_FILL = {"ice40": 0.92, "ecp5": 0.16, "ecp5-85f": 0.28}


def auto_fill(device) -> float:
    """The share of ``device``'s logic ``--pe auto`` fills (:data:`AUTO_FILL`)."""
    dev = _device(device)
    return AUTO_FILL.get(dev.name, AUTO_FILL[dev.family])

#: The share of a device's block RAMs ``--pe auto`` fills, by device (else all of them). On the
#: ECP5-85F at 100 MHz, placer seed 1 (ResNet-20, docs/accelerator.md "Image lanes"): 16x16 with
#: one lane, 75 of 208 DP16KD (36%), closed at 109.19 MHz; 8x16 with 2 lanes, 145 (70%), had
#: 63,181 connections left after 23 minutes of routing (stopped), and 158 (76%) routed in 36
#: minutes at 83.54 MHz; 3 lanes, 199 (96%), placed at an estimated 54 MHz and still had 130,870
#: of 147,542 arcs to route after 11 minutes (stopped). Past about 60% the block RAMs fill most
#: columns of the die, so each lane's memories lie far from its PEs.
AUTO_BRAM_FILL = {"ecp5-85f": 0.60}


def auto_bram_fill(device) -> float:
    """The share of ``device``'s block RAMs ``--pe auto`` fills (:data:`AUTO_BRAM_FILL`)."""
    return AUTO_BRAM_FILL.get(_device(device).name, 1.0)


def auto_shares(device) -> dict:
    """The share of each of ``device``'s resources ``--pe auto`` fills, by :func:`estimate` key
    (LUTs and flip-flops: :func:`auto_fill`; block RAMs: :func:`auto_bram_fill`; the rest in full)."""
    fill = auto_fill(device)
    return {"lut": fill, "ff": fill, "bram": auto_bram_fill(device)}

#: Words of one bank of the weight ROM and of the activation memory, each bank's output registered
#: before the banks are muxed: on ECP5 one block RAM deep at a wide word (DP16KD 512 x 36), so no
#: logic follows a block RAM's 5.6 ns clock-to-out. On the iCE40 UP5K one bank: at 30 MHz Yosys's
#: own cascade is fast enough, and a register per bank would cost logic cells the UP5K lacks.
RAM_BANK = {"ecp5": 512, "ice40": 1 << 20}


def features(plan: AcceleratorPlan) -> tuple:
    """(lanes, pes) of the accelerator of ``plan`` (see the module docstring), over its image lanes."""
    g, N = plan.geometry, plan.images
    return N * g.P * g.G * (plan.act_bits + 1), N * g.P * (plan.acc_bits + plan.out_bits)


def _device(device: Device | str) -> Device:
    return DEVICES[device] if isinstance(device, str) else device


def block_rams(family: str, width: int, depth: int) -> int:
    """Block RAMs one memory takes (the best of the block's width x depth shapes)."""
    return min(math.ceil(width / w) * math.ceil(max(depth, 1) / d) for w, d in BRAM_SHAPES[family])


def uses_spram(plan: AcceleratorPlan, device: Device | str) -> bool:
    """On a device with SPRAM (iCE40 UP5K), the input banks of a window-mode first layer go to one
    SPRAM each: they are written after configuration anyway, and the block RAMs stay free for
    the weights and activations, which need initial contents or 128-bit reads."""
    dev = _device(device)
    if not dev.spram or not plan.window:
        return False
    banks = [v for k, v in plan.memory_shapes.items() if MemoryName.is_input_bank(k)]
    return len(banks) <= dev.spram and all(fits_spram(w, d, plan.act_bits) for w, d in banks)


def accelerator_options(plan: AcceleratorPlan, device: Device | str) -> AcceleratorOptions:
    """The :class:`~ternpe.hw.plan.AcceleratorOptions` for ``device``: SPRAM input banks
    (UP5K), on ECP5 the tile list in LUTs (its block RAM's 5.6 ns clock-to-out sits in the
    controller's one-cycle loop), the weight ROM's bank depth, and on ECP5 two register stages on
    the activation write and a second register after each activation bank (its block RAMs lie
    far from the logic; three cycles more of drain per layer), and a wide requantizer-constant ROM
    split by channel with an address register each; on the iCE40 the logits and the
    requantizer constants in block RAM where the block RAMs are free (logic cells are what the
    UP5K lacks: 617 fewer for the MNIST CNN at 1x16, the same cycles)."""
    dev = _device(device)
    ecp5 = dev.family == "ecp5"
    opts = AcceleratorOptions(spram=uses_spram(plan, dev), index_in_logic=ecp5, ram_bank=RAM_BANK[dev.family],
                              write_reg=2 if ecp5 else 0, operand_reg=ecp5, images=plan.images,
                              requant_slices=ecp5)
    if ecp5:
        return opts
    # block RAM for logic cells only where the block RAMs are free: the requantizer constants
    # (fewer cells saved) go back to logic first, then the logits. The memory plan counts the
    # constants' blocks either way (Yosys may put a larger ROM in block RAM by itself)
    for more in ({"logit_ram": True, "requant_bram": True}, {"logit_ram": True}):
        cand = dataclasses.replace(opts, **more)
        if _brams(plan.with_options(cand), dev) <= dev.bram:
            return cand
    return opts


def _brams(plan: AcceleratorPlan, dev: Device) -> int:
    return sum(n for *_, kind, n in memory_plan(plan, dev).values() if kind == "bram")


def plan_for_device(export, device: Device | str) -> AcceleratorPlan:
    """The plan of ``export``'s accelerator (on the export's array) with ``device``'s options."""
    base = plan_accelerator(export)
    return base.with_options(accelerator_options(base, device))


def memory_plan(plan: AcceleratorPlan, device: Device | str) -> dict:
    """``{memory: (width, depth, kind, blocks)}``: which memory holds what, in how many blocks
    (``kind`` is ``"bram"``, ``"spram"`` or ``"lut"``), under the plan's options; a memory every
    image lane has its own copy of counts the blocks of all copies."""
    dev = _device(device)
    opts = plan.options
    out = {}
    for k, (w, d) in plan.memory_shapes.items():
        copies = plan.images if MemoryName.per_image(k) else 1
        if opts.spram and MemoryName.is_input_bank(k):
            out[k] = (w, d, "spram", copies)
        elif (opts.index_in_logic and k == MemoryName.TILE_LIST) or (k == MemoryName.REQUANT and plan.requant_sliced):
            out[k] = (w, d, "lut", 0)
        else:
            out[k] = (w, d, "bram", copies * block_rams(dev.family, w, d))
    return out


def format_plan(plan: dict, device: Device | str, images: int = 1) -> str:
    """The memory plan as a table (what ``ternpe generate`` prints); with ``images`` lanes, the
    memories each lane has its own copy of are marked ``x N`` (their blocks count every copy)."""
    dev = _device(device)
    lines = [f"  {'memory':<28}{'width x depth':>16}  {'in':<6}{'blocks':>6}"]
    for k, (w, d, kind, n) in plan.items():
        name = f"{k} x {images}" if images > 1 and MemoryName.per_image(k) else k
        lines.append(f"  {name:<28}{f'{w} x {d}':>16}  {kind:<6}{n:>6}")
    bram = sum(n for *_, kind, n in plan.values() if kind == "bram")
    spram = sum(n for *_, kind, n in plan.values() if kind == "spram")
    lines.append(f"  {'total':<28}{'':>16}  {'bram':<6}{bram:>6} of {dev.bram}"
                 + (f", spram {spram} of {dev.spram}" if dev.spram else ""))
    return "\n".join(lines)


def estimate(plan: AcceleratorPlan, device: Device | str) -> dict:
    """Resources of the accelerator of ``plan`` on ``device``: ``{lut, ff, bram, spram, dsp,
    per_memory}`` (the host link and UART of a board top included in lut/ff)."""
    dev = _device(device)
    f = features(plan)
    co, lane = COEFFICIENTS[dev.family], LANE_COST[dev.family]
    extra = plan.images - 1
    lut = co["lut"][0] + sum(c * x for c, x in zip(co["lut"][1:], f)) + extra * lane["lut"]
    # an iCE40 logic cell is a LUT and a flip-flop: nextpnr counts cells, so there is no FF figure
    ff = co["ff"][0] + sum(c * x for c, x in zip(co["ff"][1:], f)) + extra * lane["ff"] if "ff" in co else None
    mems = memory_plan(plan, dev)
    # one multiplier per 15 accumulator bits per requantizer, and one for a residual network's shortcut
    dsp = plan.images * plan.geometry.P * (math.ceil(plan.acc_bits / ACC_BITS_PER_MULTIPLIER) + plan.residual)
    return {"lut": int(round(lut)), "ff": None if ff is None else int(round(ff)),
            "bram": sum(n for *_, kind, n in mems.values() if kind == "bram"),
            "spram": sum(n for *_, kind, n in mems.values() if kind == "spram"), "dsp": dsp,
            "per_memory": {k: n for k, (w, d, kind, n) in mems.items()}, "plan": mems,
            "options": plan.options.as_dict()}


def over_budget(est: dict, device: Device | str, logic: bool = True, shares: dict | None = None) -> list:
    """The resources of an :func:`estimate` that ``device`` does not have enough of
    (``logic=False``: memories and multipliers only; ``shares``: the share of each resource the
    design may take, by key, the rest in full, e.g. :func:`auto_shares`)."""
    have = _device(device).as_dict()
    share = shares or {}
    keys = ("lut", "ff", "bram", "spram", "dsp") if logic else ("bram", "spram", "dsp")
    return [k for k in keys if est[k] is not None and est[k] > share.get(k, 1) * have[k]]


def check_fit(plan: AcceleratorPlan, device: Device | str, *, logic: bool = True) -> dict:
    """:func:`estimate`, or :class:`FitError` naming every resource that does not fit
    (``logic=False``: memories and multipliers only)."""
    dev = _device(device)
    est = estimate(plan, dev)
    over = over_budget(est, dev, logic)
    if not over:
        return est
    have = dev.as_dict()
    ex, g = plan.export, plan.geometry
    lines = [f"the accelerator of {ex.path.name} at PE {g} does not fit {dev.name}:"]
    for k in over:
        lines.append(f"  {k}: needs {est[k]}, {dev.name} has {have[k]}")
    if "bram" in over:
        parts = ", ".join(f"{k} {v}" for k, v in est["per_memory"].items())
        big = max(ex.layers, key=lambda l: l.nonzero_tiles * l.layout.words_per_tile)
        lines.append(f"  block RAMs by memory: {parts}")
        if est["per_memory"].get(MemoryName.WEIGHTS, 0) >= max(est["per_memory"].values()):
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


def auto_geometry(ex, device: Device | str) -> AcceleratorPlan:
    """The plan :func:`auto_plan` chooses (without its reason)."""
    return auto_plan(ex, device)[0]


def with_images(plan: AcceleratorPlan, images: int) -> AcceleratorPlan:
    """``plan`` with ``images`` image lanes."""
    return plan.with_options(dataclasses.replace(plan.options, images=images))


def _lack(est: dict, dev: Device, over: list) -> str:
    have, share = dev.as_dict(), auto_shares(dev)
    return ", ".join(f"{est[k]} {k.upper()} of {have[k]}" + (f" ({share[k]:.0%} filled at most)"
                                                             if share.get(k, 1) < 1 else "") for k in over)


def auto_plan(ex, device: Device | str, *, images: int | None = None) -> tuple:
    """``(plan, limit)``: the array and image lanes with the most inferences per second on
    ``device`` (the fewest cycles per image: ``cycles["per_image"]``), and in words what limited it.

    Candidates: every ``P' x G`` with ``P'`` a power-of-two multiple of the trained ``P`` up to
    ``G`` (a wider ``P'`` skips a tile only where all its trained parts are pruned), each with
    1, 2, ... image lanes (which keep the trained tile as the unit of skipping) while they fit:
    SPRAMs and multipliers in full, block RAMs to ``AUTO_BRAM_FILL`` and logic to ``AUTO_FILL`` of
    the device, and while the input stream still feeds them (past ``load_bound`` a lane adds nothing). Of equal speed the
    smaller design is taken. ``images`` fixes the lanes. The clock is the board's: the model
    does not predict timing, the build checks it."""
    dev = _device(device)
    g = ex.geometry
    best, best_limit = None, None
    p = g.P
    while p <= g.G:
        base = plan_for_device(widen(ex, ArrayGeometry(p, g.G)), dev)
        cand, limit = _most_lanes(base, dev, images)
        if cand is not None and (best is None or cand.cycles["per_image"] < best.cycles["per_image"]):
            best, best_limit = cand, limit
        p *= 2
    if best is None:            # the trained array alone is past the fill: it, if it fits the device at all
        best = with_images(plan_for_device(ex, dev), images or 1)
        est = check_fit(best, dev)                                                  # raises with the numbers
        over = over_budget(est, dev, shares=auto_shares(dev))
        best_limit = (f"{best.geometry} alone needs more than --pe auto fills, {_lack(est, dev, over)}: "
                      f"nothing wider, no more image lanes")
    return best, best_limit


def _most_lanes(base: AcceleratorPlan, dev: Device, images: int | None) -> tuple:
    """``(plan, limit)``: ``base`` with the most image lanes that fit ``dev`` and still pay."""
    tag, shares = f"{base.geometry}", auto_shares(dev)
    if images is not None:
        plan = with_images(base, images)
        over = over_budget(estimate(plan, dev), dev, shares=shares)
        return (None, None) if over else (plan, f"--image-lanes {images} (given)")
    best, n = None, 1
    while True:
        plan = with_images(base, n)
        est = estimate(plan, dev)
        over = over_budget(est, dev, shares=shares)
        if over:
            return best, f"{tag} with {n} image lanes would need " + _lack(est, dev, over)
        if best is not None and plan.cycles["load_bound"]:
            return best, (f"the input stream: {tag} with {n} image lanes would wait for images "
                          f"({plan.cycles['load']} input bytes a batch at one a cycle)")
        best, n = plan, n + 1


def array_for_device(specs, shape, device: Device | str, *, G: int = 16, act_bits: int = 8) -> tuple:
    """``(geometry, images, limit)``: the array to train a network of ``specs`` for, before
    training, and the image lanes it would run with: what :func:`auto_plan` chooses for a dense
    stand-in of random weights (every tile kept: the weights' block RAMs at their most); ``limit``
    says what stopped it. Trained at that ``P``, a pruned tile is a pass the array skips, and the
    penalty weighs each tile by what it costs there (``--cost cycles``)."""
    import tempfile
    from ternpe.model.randnet import random_export_of
    with tempfile.TemporaryDirectory() as tmp:
        ex = random_export_of(pathlib.Path(tmp) / "dense", list(specs), shape=tuple(shape), pe=f"1x{G}", density=1.0,
                              samples=1, act_bits=act_bits)
        plan, limit = auto_plan(ex, device)
    return plan.geometry, plan.images, limit
