"""The accelerator's plan: everything the generated hardware is, computed once, in plain Python.

:func:`plan_accelerator` turns an export (on its array, trained or widened with
:func:`ternpe.image.widen`) and the device's :class:`AcceleratorOptions` into a frozen
:class:`AcceleratorPlan`: per layer whether it runs in window mode and its ops, the tile list and
weight words of every layer (:class:`~ternpe.hw.weights.LayerProgram`), where every activation
map lives (:class:`~ternpe.hw.actmem.ActivationPlan`), the shortcut counters of a residual
network, the widths of the accumulator, the logits and the output stream, the shape of every
memory, the drain after each layer and the cycle model (:func:`ternpe.cycles.cycle_model` with
that drain). Nothing here imports Amaranth.

Everyone reads the same plan: :class:`~ternpe.hw.accelerator.Accelerator` only elaborates it;
the resource model, the fit check and ``--pe auto`` (:mod:`ternpe.flow.resources`) size
memories from it; generate, sim and build report its cycles; a build records its
:meth:`AcceleratorPlan.summary` so verify reads back the array the bitstream runs.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ternpe import cycles
from ternpe.contract import MULT_BITS, SHIFT_BITS, ArrayGeometry, ContractError, check_array, signed_bits, unsigned_bits
from ternpe.cycles import drain_cycles, rows_per_group, window_mode
from .actmem import ActivationPlan, plan_activations
from .weights import tile_entry_bits, tile_program

__all__ = ["GenerateError", "AcceleratorOptions", "LayerPlan", "AcceleratorPlan", "MemoryName", "plan_accelerator",
           "shortcut_lanes", "shortcut_constants", "write_elements", "element_limit", "input_memories", "log2", "log2ceil"]


class GenerateError(ContractError):
    """An export the hardware cannot run as asked; the message names layer, resource, numbers."""


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def log2(n: int) -> int:
    """``log2`` of a power of two (lane, bank and row counts)."""
    return n.bit_length() - 1


def log2ceil(n: int) -> int:
    """Address bits of ``n`` entries."""
    return max(0, (n - 1).bit_length())


class MemoryName:
    """The names of the accelerator's memories (keys of :attr:`AcceleratorPlan.memory_shapes`)."""

    WEIGHTS = "weights"
    TILE_LIST = "tile list"
    REQUANT = "requantizer constants"
    REQUANT_LATE = "requantizer bias and shift"    # with AcceleratorOptions.requant_bram
    ACTIVATIONS = "activations"
    SHORTCUT = "activations (shortcut port)"
    INPUT = "input"
    INPUT_BANK = "input bank"            # + " <n>": one per patch row of a window-mode first layer
    LOGITS = "logits"                    # with AcceleratorOptions.logit_ram

    @classmethod
    def input_bank(cls, n: int) -> str:
        return f"{cls.INPUT_BANK} {n}"

    @classmethod
    def is_input_bank(cls, name: str) -> bool:
        return name.startswith(cls.INPUT_BANK + " ")

    @classmethod
    def per_image(cls, name: str) -> bool:
        """Each image lane has its own copy (the input, the activations and the logits); the
        weights, the tile list and the requantizer constants are shared by all."""
        return name in (cls.ACTIVATIONS, cls.SHORTCUT, cls.INPUT, cls.LOGITS) or cls.is_input_bank(name)


#: The requantizer constants' ROM word (``P`` channels) above which it is split by channel under
#: :attr:`AcceleratorOptions.requant_slices`: 8 DP16KD widths.
ROM_LOGIC_BITS = 8 * 36


@dataclasses.dataclass(frozen=True)
class AcceleratorOptions:
    """How the accelerator is laid out on a device family (:func:`ternpe.flow.resources.accelerator_options`).

    Parameters
    ----------
    spram : bool
        The input banks in iCE40 UP5K SPRAMs.
    index_in_logic : bool
        The tile list as a LUT ROM (ECP5: faster than its block RAM's output).
    ram_bank : int
        Words per bank of the weight ROM and the activation memory (a power of two: one block RAM
        deep on the device); a bank's read data is registered before the banks are muxed.
    write_reg : int
        Register stages on the activation write (0, 1 or 2; each adds a cycle of drain).
    operand_reg : bool
        Each activation bank's data registered twice before the banks are muxed (one cycle of drain).
    images : int
        Image lanes: engines in lockstep, each with its own input buffer, activation memory, PE
        array and requantizers, sharing the controller, the tile list and the weight ROM. ``N``
        images are computed in the cycles of one (the argmax runs once per image): throughput
        times ``N`` and the latency of one image, with every trained tile still the unit of skipping.
    logit_ram : bool
        The logits in a block RAM, a word per tile row (:class:`~ternpe.hw.writeback.LogitMemory`),
        not in registers before a ``classes``-way mux (the same cycles; iCE40: logic cells saved).
    requant_bram : bool
        The requantizer constants in block RAM even where Yosys would map a ROM this small to
        logic, in two ROMs: the multipliers read with the accumulator, the bias and shift
        ``Requantizer.LATE`` cycles later where they are added, so no register carries them down
        the requantizer's pipeline (iCE40: logic cells saved; the same cycles and block RAMs).
    requant_slices : bool
        A requantizer-constant ROM word wider than :data:`ROM_LOGIC_BITS` as ``P`` ROMs in logic,
        one per channel, each with its own copy of the address register beside it (ECP5: in one
        ROM, the 1,008-bit word of a 16x16 array hangs thousands of LUTs on one address register
        across the die; in block RAM, 28 more of them, the design does not route). The same cycles.
    """

    spram: bool = False
    index_in_logic: bool = False
    ram_bank: int = 512
    write_reg: int = 0
    operand_reg: bool = False
    images: int = 1
    logit_ram: bool = False
    requant_bram: bool = False
    requant_slices: bool = False

    def __post_init__(self):
        if not isinstance(self.images, int) or self.images < 1:
            raise GenerateError(f"image lanes (--image-lanes) must be a whole number >= 1, not {self.images!r}")
        if self.write_reg not in (0, 1, 2):
            raise GenerateError(f"write_reg must be 0, 1 or 2 stages, not {self.write_reg}")
        if not _is_pow2(self.ram_bank):
            raise GenerateError(f"ram_bank must be a power of two, not {self.ram_bank}")

    @property
    def extra_drain(self) -> int:
        """Cycles these register stages add to every layer's drain (image lanes: three, where each
        lane registers the operands, flags and weights it shares with the others, the tag before
        its write-back, and its logit rows' decode before its logit registers)."""
        return int(self.write_reg) + int(self.operand_reg) + 3 * int(self.images > 1)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One layer as the controller runs it."""

    window: bool          # the first layer, gathered from the input patch
    nq: int               # pool positions per output pixel
    ops_pp: int           # ops of one output pixel
    ops: int              # cycles of the op loop without stalls


def _layer_plans(ex) -> tuple:
    """Check that the hardware runs ``ex`` and plan each layer (raises :class:`GenerateError`)."""
    n = len(ex.layers)
    try:
        check_array(ex.geometry, [l.spec for l in ex.layers])     # the rule train checks too
    except ContractError as e:
        raise GenerateError(str(e)) from None
    plans = []
    for i, l in enumerate(ex.layers):
        s = l.spec
        if s.residual is not None:
            _check_shortcut(ex, i)
        window = window_mode(s, ex.geometry)
        if i < n - 1:
            if not s.relu:
                raise GenerateError(f"layer {s.name}: only the last layer may be without ReLU")
        elif s.relu or (s.out_h, s.out_w) != (1, 1) or s.pool:
            raise GenerateError(f"layer {s.name}: the last layer must produce logits "
                                f"(no ReLU, a 1x1 output, no pool)")
        ops_pp = s.pool_positions * cycles.ops_per_position(np.diff(l.rowptr), l.layout.words_per_tile,
                                                            rows_per_group(ex.geometry, s, i == n - 1))
        plans.append(LayerPlan(window, s.pool_positions, ops_pp, s.out_h * s.out_w * ops_pp))
    return tuple(plans)


def shortcut_lanes(spec, src_channels: int, P: int) -> list:
    """Per tile row of a residual layer: the lanes ``[lo, hi)`` of its ``P`` output channels
    that take a shortcut channel (a pad shortcut's outer channels are zero)."""
    off = spec.shortcut_offset(src_channels)
    out = []
    for r in range(-(-spec.cout // P)):
        lo = min(max(off - r * P, 0), P)
        hi = max(min(off + src_channels - r * P, P), lo)
        out.append((lo, hi))
    return out


def _check_shortcut(ex, i: int):
    """A residual layer the hardware runs: its shortcut is a map in the activation memory whose
    ``P`` channels of every output row lie in one memory word (read in the requantizer's cycle)."""
    s, g = ex.layers[i].spec, ex.geometry
    src = s.residual
    if src < 1 or src >= i:
        raise GenerateError(f"layer {s.name}: its shortcut is the input of layer {src}; the hardware reads a "
                            f"shortcut from the activation memory, so it must be the output of a hidden layer "
                            f"(add a conv before the first residual block)")
    a = ex.layers[src - 1].spec
    if a.kind != "conv":
        raise GenerateError(f"layer {s.name}: its shortcut must be a map, {a.name} is an fc layer")
    ih, iw, ic = a.out_h, a.out_w, a.cout
    want = ((ih + 1) // 2, (iw + 1) // 2) if s.shortcut == "pad" else (ih, iw)
    if want != (s.conv_h, s.conv_w) or ic > s.cout or (s.shortcut == "identity" and ic != s.cout):
        raise GenerateError(f"layer {s.name}: a {s.shortcut} shortcut of {a.name}'s {ih}x{iw}x{ic} output does not "
                            f"match its {s.conv_h}x{s.conv_w}x{s.cout} output")
    off = s.shortcut_offset(ic)
    for r, (lo, hi) in enumerate(shortcut_lanes(s, ic, g.P)):
        if lo == hi:
            continue
        first = r * g.P + lo - off
        for pix in range(s.out_h * s.out_w):
            e = pix * ic if s.shortcut == "identity" else ((pix // s.out_w) * 2 * iw + (pix % s.out_w) * 2) * ic
            if (e + first) // g.G != (e + first + hi - lo - 1) // g.G:
                raise GenerateError(
                    f"layer {s.name}: the shortcut of output channels {r * g.P}..{r * g.P + g.P - 1} spans two "
                    f"activation words of {a.name}'s output (channels are zero-padded by {off}); "
                    f"the requantizers read one word per row: choose P dividing that offset (--pe 1x{g.G} works)")


def shortcut_constants(ex, write_bases) -> tuple:
    """Per layer, the steps of the shortcut counter: ``sc_init`` (element of output pixel 0's
    shortcut, less the channel offset of a pad shortcut), ``sc_px`` (next pixel), ``sc_py``
    (next row). Zero for a layer without a residual add. ``write_bases[k]``: the first word
    of layer ``k``'s output."""
    G = ex.geometry.G
    out = []
    for l in ex.layers:
        s = l.spec
        if s.residual is None:
            out.append({"sc_init": 0, "sc_px": 0, "sc_py": 0})
            continue
        a = ex.layers[s.residual - 1].spec
        ic, sub = a.cout, 2 if s.shortcut == "pad" else 1
        out.append({"sc_init": write_bases[s.residual - 1] * G - s.shortcut_offset(ic), "sc_px": sub * ic,
                    "sc_py": sub * a.out_w * ic})
    return tuple(out)


def write_elements(ex) -> int:
    """Largest flattened ``(h, w, c)`` element index a layer's output can reach, plus one."""
    return max(l.spec.out_h * l.spec.out_w * l.spec.cout for l in ex.layers)


def element_limit(plan) -> int:
    """One past the largest element index of the activation memory the write-back counts
    (from a layer's base x G through its output)."""
    return plan.act.depth * plan.geometry.G + write_elements(plan.export) + 1


def _logit_bits(ex) -> int:
    """Width that holds every logit: per channel ``(acc * mult + bias) >> shift`` at the extremes
    of the accumulator (``+-fan_in * (2**act_bits - 1)``), from the export's own constants."""
    last = ex.layers[-1]
    s = last.spec
    amax = s.cin * s.k * s.k * ((1 << ex.act_bits) - 1)
    rq = last.channel_requant()
    lo = hi = 0
    for mult, bias, shift in zip(rq.mult.tolist(), rq.bias.tolist(), rq.shift.tolist()):
        for acc in (-amax, amax):
            y = (acc * mult + bias) >> shift
            lo, hi = min(lo, y), max(hi, y)
    return signed_bits(lo, hi)


def _programs(ex) -> tuple:
    """Every layer's tile list and weight words, placed back to back in the two ROMs."""
    progs, lb, wb = [], 0, 0
    n = len(ex.layers)
    for i, layer in enumerate(ex.layers):
        p = tile_program(layer, rows_per_group=rows_per_group(ex.geometry, layer.spec, i == n - 1))
        progs.append(dataclasses.replace(p, list_base=lb, word_base=wb))
        lb += len(p.entries)
        wb += len(p.words)
    return tuple(progs)


def input_memories(spec, G: int, act_bits: int, window: bool) -> dict:
    """``{name: (width, depth)}`` of the input buffer's memories (both slots)."""
    if window:
        R = cycles.patch_rows(spec)
        depth = 2 << log2ceil(-(-spec.in_h // R) * spec.in_w)
        return {MemoryName.input_bank(b): (spec.cin * act_bits, depth) for b in range(R)}
    words = -(-spec.in_h * spec.in_w * spec.cin // G)
    return {MemoryName.INPUT: (G * act_bits, 2 << log2ceil(words))}


@dataclasses.dataclass(frozen=True)
class AcceleratorPlan:
    """The accelerator of one export on one array with one set of options (see the module docstring).

    Built by :func:`plan_accelerator`; never changed after. :meth:`with_options` gives the same
    network under other options (only the drain and the cycles change)."""

    export: object
    options: AcceleratorOptions
    layers: tuple                 # LayerPlan per layer
    programs: tuple               # LayerProgram per layer, placed in the ROMs
    act: ActivationPlan
    shortcut: tuple | None        # shortcut_constants per layer (residual networks)
    col_bits: int
    row_bits: int
    acc_bits: int
    bias_bits: int
    logit_bits: int
    out_bits: int
    classes: int
    residual: bool
    memory_shapes: dict           # MemoryName -> (width, depth)
    drain: int
    cycles: dict                  # ternpe.cycles.cycle_model with this drain

    @property
    def geometry(self) -> ArrayGeometry:
        return self.export.geometry

    @property
    def act_bits(self) -> int:
        return self.export.act_bits

    @property
    def images(self) -> int:
        """Image lanes (:attr:`AcceleratorOptions.images`)."""
        return self.options.images

    @property
    def window(self) -> bool:
        """The first layer runs in window mode (its lanes from the input patch)."""
        return self.layers[0].window

    @property
    def layer_bases(self) -> tuple:
        """Per layer: (read base, write base); layer 0 reads the input buffer, the last writes none."""
        return self.act.layer_bases

    @property
    def list_entries(self) -> int:
        return sum(len(p.entries) for p in self.programs)

    @property
    def weight_words(self) -> int:
        return sum(len(p.words) for p in self.programs)

    @functools.cached_property
    def sc_bits(self) -> int:
        """Width of the controller's signed shortcut counter (0 without residual layers)."""
        if not self.shortcut:
            return 0
        G = self.geometry.G
        hi = self.act.depth * G + max(max(c["sc_px"], c["sc_py"]) for c in self.shortcut) + G
        return signed_bits(min(c["sc_init"] for c in self.shortcut), hi)

    @functools.cached_property
    def dense_cycles(self) -> int:
        """Cycles of the same network with no tile pruned, on this array, with this drain."""
        specs = [l.spec for l in self.export.layers]
        return cycles.cycle_model(specs, self.geometry, drain=self.drain, images=self.images)["total"]

    @property
    def speedup(self) -> float:
        return self.dense_cycles / self.cycles["total"]

    @property
    def requant_sliced(self) -> bool:
        """Whether the requantizer constants are ``P`` ROMs in logic, one per channel
        (:attr:`AcceleratorOptions.requant_slices` and a word wider than :data:`ROM_LOGIC_BITS`)."""
        o = self.options
        return o.requant_slices and not o.requant_bram and self.memory_shapes[MemoryName.REQUANT][0] > ROM_LOGIC_BITS

    def memory_bits(self) -> dict:
        """Bits of every memory (checked before synthesis), of one image lane's copy."""
        return {k: w * d for k, (w, d) in self.memory_shapes.items()}

    def with_options(self, options: AcceleratorOptions) -> "AcceleratorPlan":
        """The same network under ``options``."""
        if options == self.options:
            return self
        drain = drain_cycles(self.geometry) + options.extra_drain
        plan = dataclasses.replace(self, options=options, drain=drain, memory_shapes=_memory_shapes(self, options))
        return dataclasses.replace(plan, cycles=plan._cycle_model(drain))

    def _cycle_model(self, drain: int) -> dict:
        ex = self.export
        return cycles.cycle_model([l.spec for l in ex.layers], ex.geometry, [np.diff(l.rowptr) for l in ex.layers],
                                  drain=drain, images=self.options.images)

    def summary(self) -> dict:
        """What a report records of the plan (JSON): the array, the options, the cycles."""
        g = self.geometry
        trained = self.export.manifest.get("trained_geometry")
        return {"geometry": str(g), "P": g.P, "G": g.G, "images": self.images, "trained_geometry": trained,
                "options": self.options.as_dict(), "drain": self.drain, "cycles": self.cycles["total"],
                "latency": self.cycles["latency"], "throughput": self.cycles["throughput"],
                "per_image": self.cycles["per_image"], "dense_cycles": self.dense_cycles}


def _memory_shapes(plan: "AcceleratorPlan", options: AcceleratorOptions) -> dict:
    """``{MemoryName: (width, depth)}`` of the accelerator of ``plan`` under ``options`` (the
    plan's own memory shapes are ignored)."""
    ex, progs, g, bias_bits, depth = plan.export, plan.programs, plan.geometry, plan.bias_bits, plan.act.depth
    shapes = {MemoryName.WEIGHTS: (g.word_bits, sum(len(p.words) for p in progs)),
              MemoryName.TILE_LIST: (tile_entry_bits(plan.col_bits, plan.row_bits), sum(len(p.entries) for p in progs)),
              MemoryName.ACTIVATIONS: (g.G * ex.act_bits, depth)}
    rows = sum(l.layout.rows for l in ex.layers)
    mults, late = MULT_BITS * (1 + ex.has_residual), bias_bits + SHIFT_BITS
    if options.requant_bram:    # the multipliers with the accumulator, the bias and shift where they are added
        shapes[MemoryName.REQUANT] = (g.P * mults, rows)
        shapes[MemoryName.REQUANT_LATE] = (g.P * late, rows)
    else:
        shapes[MemoryName.REQUANT] = (g.P * (mults + late), rows)
    if ex.has_residual:      # the shortcut is read through a second port: a second copy
        shapes[MemoryName.SHORTCUT] = (g.G * ex.act_bits, depth)
    shapes.update(input_memories(ex.layers[0].spec, g.G, ex.act_bits, plan.layers[0].window))
    if options.logit_ram:
        shapes[MemoryName.LOGITS] = (g.P * plan.logit_bits, ex.layers[-1].layout.rows)
    return shapes


def plan_accelerator(export, options: AcceleratorOptions | None = None) -> AcceleratorPlan:
    """The plan of the accelerator of ``export`` (a loaded, validated export on the array it is to
    run on) under ``options``; raises :class:`GenerateError` when the hardware cannot run it."""
    ex = export
    options = options or AcceleratorOptions()
    layers = _layer_plans(ex)
    g = ex.geometry
    progs = _programs(ex)
    act = plan_activations([l.spec for l in ex.layers], g.G)
    residual = ex.has_residual
    col_bits = unsigned_bits(max(l.layout.cols - 1 for l in ex.layers))
    row_bits = unsigned_bits(max(l.layout.rows - 1 for l in ex.layers))
    bias_bits = max(l.bias_bits for l in ex.layers)
    logit_bits = _logit_bits(ex)
    classes = ex.layers[-1].spec.cout
    drain = drain_cycles(g) + options.extra_drain
    plan = AcceleratorPlan(
        export=ex, options=options, layers=layers, programs=progs, act=act,
        shortcut=shortcut_constants(ex, act.bases) if residual else None,
        col_bits=col_bits, row_bits=row_bits, acc_bits=max(l.acc_bits for l in ex.layers), bias_bits=bias_bits,
        logit_bits=logit_bits, out_bits=max(logit_bits, unsigned_bits(classes) + 1), classes=classes,
        residual=residual, memory_shapes={}, drain=drain, cycles={})
    return dataclasses.replace(plan, memory_shapes=_memory_shapes(plan, options), cycles=plan._cycle_model(drain))

