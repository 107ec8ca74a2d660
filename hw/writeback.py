"""Where the requantizers' results go: max-pooled into the activation memory, or into the logits."""

from __future__ import annotations

import numpy as np

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import requantize
from ternpe.cycles import rows_per_group
from .controller import OpTag
from .plan import element_limit, log2 as _log2

__all__ = ["WriteBack", "LogitRegisters", "LogitMemory"]


def write_banks(plan) -> int:
    """Banks of the activation memory (``plan.options.ram_bank`` words each)."""
    return -(-plan.act.depth // plan.options.ram_bank)


class WriteBack(wiring.Component):
    """Max-pools the ``P`` results of a tile row and writes them, with the row's constant
    neighbours, into the activation memory.

    The results of one output pixel's pool positions come in one after the other (``tag.q``);
    the maximum is kept per lane and written with the last (``tag.last_q``) as ``P`` lanes of an
    activation word. Rows without tiles have constant outputs (the requantized bias): in a group
    of rows that share a word they are written with a computed row of the group (their lanes
    filled in). The element index of a result is counted here from the layer's write base,
    stepping a pixel at a time, so no address travels down the pipeline. ``write_reg`` register
    stages (:class:`~ternpe.hw.plan.AcceleratorOptions`) follow before the memory's banks.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan

    Members
    -------
    valid : In(1)
        A result is on ``y`` with its ``tag``.
    y : In(ArrayLayout(unsigned(act_bits), P))
        The requantizers' outputs (ReLU'd and clamped).
    tag : In(OpTag)
        Where the result belongs.
    wr_addr : Out(word address), wr_data : Out(G * act_bits)
        The activation memory's write port: word, data.
    wr_en : Out(ArrayLayout(G, banks))
        Per bank, the lanes written (none outside the bank of ``wr_addr``).
    tap_valid, tap_layer, tap_addr, tap_mask, tap_data : Out
        Every write as the accelerator's debug tap describes it (before the write stages).
    """

    def __init__(self, plan):
        self.plan = plan
        g, A = plan.geometry, plan.act_bits
        # the element counter's width (range(element_limit)), one bit for the row's channels, less the lanes
        self.addr_bits = max(1, (element_limit(plan) - 1).bit_length() + 1 - _log2(g.G))
        super().__init__({
            "valid": In(1), "y": In(data.ArrayLayout(unsigned(A), g.P)), "tag": In(OpTag(plan)),
            "wr_addr": Out(self.addr_bits), "wr_data": Out(g.G * A),
            "wr_en": Out(data.ArrayLayout(g.G, write_banks(plan))),
            "tap_valid": Out(1), "tap_layer": Out(range(len(plan.layers))), "tap_addr": Out(24),
            "tap_mask": Out(g.G), "tap_data": Out(g.G * A),
        })

    def elaborate(self, platform):
        m = Module()
        g, A = self.plan.geometry, self.plan.act_bits
        P, G, L = g.P, g.G, len(self.plan.layers)
        tq = self.tag
        mx_new = self._pool(m)
        w_idx = self._element(m)
        fill_mask, fill_data = self._constant_lanes(m)
        w_en = Signal()
        m.d.comb += w_en.eq(self.valid & tq.last_q & (tq.layer != L - 1))
        lane_mask = Signal(G)
        m.d.comb += lane_mask.eq((Const((1 << P) - 1, G) << w_idx[:max(1, _log2(G))] if G > 1 else 1) | fill_mask)
        wdata = Cat(*[Mux(fill_mask[gl], fill_data[gl * A:(gl + 1) * A], mx_new[gl % P]) for gl in range(G)])
        word = w_idx >> _log2(G)
        wbase = Array(Const(wbase, 24) for _, wbase in self.plan.layer_bases)[tq.layer]
        m.d.comb += [self.tap_valid.eq(w_en), self.tap_layer.eq(tq.layer), self.tap_addr.eq(word - wbase),
                     self.tap_mask.eq(lane_mask), self.tap_data.eq(wdata)]
        self._write_stages(m, w_en, word, wdata, lane_mask)
        return m

    def _pool(self, m) -> list:
        """Per lane, the maximum over the pool positions so far, this result included."""
        A, P = self.plan.act_bits, self.plan.geometry.P
        mx = [Signal(A, name=f"max{p}", reset_less=True) for p in range(P)]     # set at a pool's first
        mx_new = [Signal(A, name=f"max_new{p}") for p in range(P)]
        for p in range(P):
            y = self.y[p]
            m.d.comb += mx_new[p].eq(Mux((self.tag.q == 0) | (y > mx[p]), y, mx[p]))
            with m.If(self.valid):
                m.d.sync += mx[p].eq(mx_new[p])
        return mx_new

    def _element(self, m) -> Signal:
        """The element index of the result's first channel in the activation memory: counted from the
        layer's write base x G, restarting with a layer and stepping by ``cout`` per pixel.
        ``e_next`` holds the next pixel's index ahead, so the index is one add (+ the row's channels)."""
        plan, tq = self.plan, self.tag
        G, P, ex = plan.geometry.G, plan.geometry.P, plan.export
        bases_e = [wbase * G for _, wbase in plan.layer_bases]
        e_wb, e_next, e_now = (Signal(range(element_limit(plan)), name=n) for n in ("e_wb", "e_next", "e_now"))
        first_e = Array(Const(b, len(e_wb)) for b in bases_e)[tq.layer]
        after_first = Array(Const(b + l.spec.cout, len(e_wb)) for b, l in zip(bases_e, ex.layers))[tq.layer]
        step = Array(Const(l.spec.cout, 16) for l in ex.layers)[tq.layer]
        # the address is taken from the tag alone (it matters only with ``valid``): ``valid``, which
        # comes from a lane's copy, stays out of the adder and the bank decode behind it
        at_pix = tq.pix_first & (tq.q == 0)
        new_pix = self.valid & at_pix
        m.d.comb += e_now.eq(Mux(at_pix, Mux(tq.layer_first, first_e, e_next), e_wb))
        with m.If(new_pix):
            m.d.sync += [e_wb.eq(e_now), e_next.eq(Mux(tq.layer_first, after_first, e_next + step))]
        w_idx = Signal(len(e_wb) + 1)
        m.d.comb += w_idx.eq(e_now + (tq.r << _log2(P)))
        return w_idx

    def _constant_lanes(self, m) -> tuple:
        """The lanes of the row's word whose rows have no tiles, and their constant values."""
        plan, tq = self.plan, self.tag
        g, A, ex = plan.geometry, plan.act_bits, plan.export
        P, G = g.P, g.G
        fill_mask, fill_data = Signal(G), Signal(G * A)
        with m.Switch(tq.layer):
            for i, l in enumerate(ex.layers[:-1]):
                rpg = rows_per_group(g, l.spec, False)
                empty = set(plan.programs[i].empty_rows)
                if rpg == 1 or not empty:
                    continue
                const = requantize(np.zeros(l.spec.cout, np.int64), l.channel_requant(), relu=True, act_bits=A)
                with m.Case(i), m.Switch(tq.r >> _log2(rpg)):
                    for gi in range(l.layout.rows // rpg):
                        lanes = [(lane, gi * G + lane) for lane in range(G) if (gi * G + lane) // P in empty]
                        if lanes:
                            with m.Case(gi):
                                m.d.comb += [fill_mask.eq(sum(1 << ln for ln, _ in lanes)),
                                             fill_data.eq(sum(int(const[c]) << (ln * A) for ln, c in lanes))]
        return fill_mask, fill_data

    def _write_stages(self, m, w_en, word, wdata, lane_mask):
        """``write_reg`` stages on the write: the address arithmetic, the bank decision and the route
        to a far block RAM get a cycle each (each adds a cycle of drain)."""
        opts, G = self.plan.options, self.plan.geometry.G
        lg = _log2(opts.ram_bank)
        w_en_d, w_word, w_data, w_mask = w_en, word, wdata, lane_mask
        if opts.write_reg == 2:
            w_en_d, w_word = Signal(name="w_en_r"), Signal.like(word, name="w_word_r", reset_less=True)
            w_data, w_mask = Signal.like(wdata, name="w_data_r", reset_less=True), Signal(G, name="w_mask_r", reset_less=True)
            m.d.sync += [w_en_d.eq(w_en), w_word.eq(word), w_data.eq(wdata), w_mask.eq(lane_mask)]
        dom = m.d.sync if opts.write_reg else m.d.comb
        dom += [self.wr_addr.eq(w_word), self.wr_data.eq(w_data)]
        for i in range(write_banks(self.plan)):
            dom += self.wr_en[i].eq(Mux(w_en_d & ((w_word >> lg) == i), w_mask, 0))


class LogitRegisters(wiring.Component):
    """The last layer's results, a register per class; rows without tiles hold their constant.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan

    Members
    -------
    valid : In(1)
        A result is on ``y`` with its ``tag``.
    y : In(ArrayLayout(signed(logit_bits), P))
        The requantizers' outputs, not clamped.
    tag : In(OpTag)
    logits : Out(ArrayLayout(signed(logit_bits), classes))
    """

    def __init__(self, plan):
        self.plan = plan
        lb = plan.logit_bits
        super().__init__({"valid": In(1), "y": In(data.ArrayLayout(signed(lb), plan.geometry.P)),
                          "tag": In(OpTag(plan)), "logits": Out(data.ArrayLayout(signed(lb), plan.classes))})

    def elaborate(self, platform):
        m = Module()
        plan, tq = self.plan, self.tag
        P, classes, L = plan.geometry.P, plan.classes, len(plan.layers)
        last = plan.export.layers[-1]
        const, empty = _logit_constants(plan)
        # without reset: a row is written by every inference before the logits are read, and an
        # empty row keeps its constant from configuration (the host link's abort need not reach them)
        regs = [Signal(signed(plan.logit_bits), name=f"logit{c}", init=int(const[c]) if c in empty else 0,
                       reset_less=True) for c in range(classes)]
        m.d.comb += [self.logits[c].eq(r) for c, r in enumerate(regs)]
        rows = range(last.layout.rows)
        hit = [self.valid & (tq.layer == L - 1) & (tq.r == row) for row in rows]
        y = self.y
        if plan.images > 1:
            # an image lane lies anywhere on the die: its row decode is registered with the
            # results, and the logit registers load from there (one of the lanes' drain cycles)
            hit_r = [Signal(name=f"hit{row}") for row in rows]
            y = Signal(data.ArrayLayout(signed(plan.logit_bits), P), name="y_r", reset_less=True)
            m.d.sync += [h.eq(x) for h, x in zip(hit_r, hit)] + [y.eq(self.y)]
            hit = hit_r
        for row in rows:
            with m.If(hit[row]):
                m.d.sync += [regs[row * P + p].eq(y[p]) for p in range(P)
                             if row * P + p < classes and row * P + p not in empty]
        return m


def _logit_constants(plan) -> tuple:
    """``(const, empty)``: the last layer's outputs with no tiles (the requantized bias) and the
    classes of its rows without tiles, which hold them from configuration."""
    P, classes = plan.geometry.P, plan.classes
    last = plan.export.layers[-1]
    const = requantize(np.zeros(classes, np.int64), last.channel_requant(), relu=False, act_bits=plan.act_bits)
    empty = {c for r in plan.programs[-1].empty_rows for c in range(r * P, min((r + 1) * P, classes))}
    return const, empty


class LogitMemory(wiring.Component):
    """The last layer's results in a block RAM: a word per tile row (its ``P`` logits), read a
    cycle after :class:`~ternpe.hw.argmax.Argmax` asks (``AcceleratorOptions.logit_ram``).

    Against :class:`LogitRegisters` it saves a flip-flop per logit bit and the ``classes``-way mux
    in front of the argmax (617 logic cells of the MNIST CNN's on the iCE40 UP5K, with the
    requantizer constants in block RAM); the argmax already fetches a cycle before it compares
    or sends, so the cycles do not change.
    Rows without tiles hold their constant from configuration (the memory's initial contents)
    and are never written.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan

    Members
    -------
    valid, y, tag : In
        As :class:`LogitRegisters`'s.
    fetch : In(range(classes + 2))
        The class to read (past ``classes - 1``: any).
    logit : Out(signed(logit_bits))
        The logit of the class ``fetch`` named in the previous cycle.
    """

    def __init__(self, plan):
        self.plan = plan
        lb = plan.logit_bits
        super().__init__({"valid": In(1), "y": In(data.ArrayLayout(signed(lb), plan.geometry.P)),
                          "tag": In(OpTag(plan)), "fetch": In(range(plan.classes + 2)), "logit": Out(signed(lb))})

    @staticmethod
    def init_words(plan) -> list:
        """The memory's initial contents: a row's ``P`` logits, lane ``p`` at bits ``p * logit_bits``
        (two's complement); the rows without tiles hold their constants, the others 0."""
        P, lb = plan.geometry.P, plan.logit_bits
        const, empty = _logit_constants(plan)
        rows = plan.export.layers[-1].layout.rows
        return [sum((int(const[c]) & ((1 << lb) - 1)) << (p * lb) for p in range(P)
                    if (c := r * P + p) < plan.classes and c in empty) for r in range(rows)]

    def elaborate(self, platform):
        m = Module()
        plan, tq = self.plan, self.tag
        P, lb, L = plan.geometry.P, plan.logit_bits, len(plan.layers)
        rows = plan.export.layers[-1].layout.rows
        m.submodules.mem = mem = Memory(shape=P * lb, depth=rows, init=self.init_words(plan))
        wp, rp = mem.write_port(), mem.read_port()
        empty = sum(1 << r for r in plan.programs[-1].empty_rows)
        row = tq.r[:max(1, (rows - 1).bit_length())]
        en = self.valid & (tq.layer == L - 1) & ~(Const(empty, rows).bit_select(tq.r, 1) if empty else 0)
        word = self.y.as_value()
        if plan.images > 1:
            # an image lane lies anywhere on the die: its write is registered (one of the lanes'
            # drain cycles, as the logit registers' row decode)
            en_r, row_r = Signal(name="logit_we"), Signal.like(row, name="logit_row")
            word_r = Signal.like(word, name="logit_word", reset_less=True)
            m.d.sync += [en_r.eq(en), row_r.eq(row), word_r.eq(word)]
            en, row, word = en_r, row_r, word_r
        m.d.comb += [wp.addr.eq(row), wp.data.eq(word), wp.en.eq(en)]
        lg = _log2(P)
        m.d.comb += rp.addr.eq(self.fetch >> lg)
        if P == 1:
            m.d.comb += self.logit.eq(rp.data.as_signed())
        else:
            lane = Signal(lg, name="logit_lane")
            m.d.sync += lane.eq(self.fetch[:lg])
            m.d.comb += self.logit.eq(Array(rp.data[p * lb:(p + 1) * lb].as_signed() for p in range(P))[lane])
        return m
