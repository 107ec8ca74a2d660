"""The controller: sequences a whole network, layer by layer, one op per cycle.

Per layer it runs ``SETUP`` (one cycle: load the layer's tile-list and weight bases), ``RUN`` (the
op loop) and ``DRAIN`` (``drain`` cycles, so the next layer reads what this one wrote). The op
loop walks: output pixel (after pooling) -> tile row (P output channels) -> pool position (4 with
a 2x2 max-pool, else 1) -> the row's non-zero tiles (from the tile list) -> the tile's words.
Every cycle of ``RUN`` issues one op; pruned tiles are not in the list, so they cost nothing.
Rows come from the list too (each entry names its row), so a row with no tile left costs
nothing either (see :func:`~ternpe.hw.weights.tile_program`).

Everything layer-specific (shapes, strides, padding, tile-list and weight bases) is a constant
of the generated hardware, taken from the export.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .weights import TileEntry

__all__ = ["OpTag", "Op", "Controller"]


def OpTag(export) -> data.StructLayout:
    """Where an op's result belongs; travels with the op through the array and the requantizers."""
    ls = export.layers
    return data.StructLayout({"layer": range(len(ls) + 1), "r": range(max(l.layout.rows for l in ls)),
                              "q": 2, "py": range(max(l.spec.out_h for l in ls) + 1),
                              "px": range(max(l.spec.out_w for l in ls) + 1), "last_q": 1})


def Op(export, word_addr_bits: int) -> data.StructLayout:
    """One op: read the activation word ``act_addr`` (zero when ``inb`` is low: padding) and add
    it under weight word ``word_addr`` (zero when ``empty``: a row without tiles); ``clear``
    starts a sum, ``last`` ends it."""
    return data.StructLayout({"valid": 1, "clear": 1, "last": 1, "inb": 1, "empty": 1, "act_addr": 24,
                              "word_addr": word_addr_bits, "tag": OpTag(export)})


class Controller(wiring.Component):
    """Parameters
    ----------
    export : ternpe.image.Export
    plans : list
        Per layer: ``window`` (im2col first layer) and ``nq`` (pool positions), from the
        accelerator's checks.
    programs : list of LayerProgram
        The weight buffer's layout of every layer's tile list and weight words.
    read_bases : list of int
        Per layer, where its input starts in the activation memory (``op.act_addr`` is absolute).
    drain : int
        Cycles after a layer's last op before the next layer starts.

    Members
    -------
    start : In(1)
        Begin layer 0 (ignored while busy).
    busy : Out(1)
        High in every cycle of ``SETUP``, ``RUN`` and ``DRAIN``.
    done : Out(1)
        High in the last cycle of the last layer's drain.
    entry_addr : Out(list address)
        Tile-list entry to read; the weight buffer answers on ``entry`` the next cycle.
    entry : In(TileEntry)
    op : Out(Op)
        The op of this cycle (combinational; the datapath registers it before the memories).
    """

    def __init__(self, *, export, plans, programs, col_bits: int, row_bits: int, list_addr_bits: int,
                 word_addr_bits: int, read_bases, drain: int):
        self.export, self.plans, self.programs, self.drain = export, plans, programs, drain
        self.read_bases = read_bases
        self.n_layers = len(export.layers)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "entry_addr": Out(list_addr_bits), "entry": In(TileEntry(col_bits, row_bits)),
            "op": Out(Op(export, word_addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        ex, L, G = self.export, self.n_layers, self.export.geometry.G
        entry = self.entry
        layer = Signal(range(L + 1))
        # counters no wider than the network needs: short carry chains
        specs = [l.spec for l in ex.layers]
        max_h, max_w = max(s.out_h for s in specs), max(s.out_w for s in specs)
        max_words = max(l.layout.words_per_tile for l in ex.layers)
        max_k = max(s.k for s in specs)
        py, px, j = Signal(range(max_h + 1)), Signal(range(max_w + 1)), Signal(range(max_words + 1))
        q = Signal(2)
        ky, kx = Signal(range(max_k + 1)), Signal(range(max_k + 1))
        t, t_row, t_next = (Signal(len(self.entry_addr) + 1, name=n) for n in ("t", "t_row", "t_next"))
        wa, wa_row = Signal(len(self.op.word_addr) + 1), Signal(len(self.op.word_addr) + 1)
        drain = Signal(range(self.drain + 1))
        op = self.op
        m.d.comb += [self.entry_addr.eq(t_next), op.word_addr.eq(wa), op.empty.eq(entry.empty)]

        # per-layer constants
        c_out_w, c_out_h = Signal(range(max_w + 1)), Signal(range(max_h + 1))
        c_words, c_nq = Signal(range(max_words + 1)), Signal(range(5))
        c_k1 = Signal(range(max_k + 1))
        c_list, c_wbase = Signal.like(t), Signal.like(wa)
        oy, ox = Signal(range(2 * max_h + 2)), Signal(range(2 * max_w + 2))
        dy, dx = q[1], q[0]
        with m.Switch(layer):
            for i, (l, pl) in enumerate(zip(ex.layers, self.plans)):
                s, prog, base = l.spec, self.programs[i], self.read_bases[i]
                with m.Case(i):
                    m.d.comb += [c_out_w.eq(s.out_w), c_out_h.eq(s.out_h),
                                 c_words.eq(l.layout.words_per_tile), c_nq.eq(pl.nq), c_k1.eq(s.k - 1),
                                 c_list.eq(prog.list_base), c_wbase.eq(prog.word_base)]
                    if s.pool:
                        m.d.comb += [oy.eq(Cat(dy, py)), ox.eq(Cat(dx, px))]
                    else:
                        m.d.comb += [oy.eq(py), ox.eq(px)]
                    if pl.window:
                        # im2col memory: the words of output pixel (oy, ox) lie back to back
                        m.d.comb += [op.act_addr.eq((oy * s.conv_w + ox) * l.layout.words_per_tile + j + base),
                                     op.inb.eq(1)]
                    else:
                        iy = Signal(range(-s.pad, 2 * s.out_h * s.stride + s.k + 1), name=f"iy{i}")
                        ix = Signal(range(-s.pad, 2 * s.out_w * s.stride + s.k + 1), name=f"ix{i}")
                        inside = (iy < s.in_h) & (ix < s.in_w)
                        if s.pad:        # without padding iy, ix are unsigned: never below 0
                            inside &= (iy >= 0) & (ix >= 0)
                        m.d.comb += [iy.eq(oy * s.stride + ky - s.pad), ix.eq(ox * s.stride + kx - s.pad),
                                     op.inb.eq(inside),
                                     op.act_addr.eq((iy * s.in_w + ix) * (s.cin // G) + entry.col + base)]
        m.d.comb += [op.tag.layer.eq(layer), op.tag.r.eq(entry.row), op.tag.q.eq(q), op.tag.py.eq(py),
                     op.tag.px.eq(px), op.tag.last_q.eq(q == c_nq - 1)]

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += layer.eq(0)
                    m.next = "SETUP"

            with m.State("SETUP"):
                m.d.comb += [self.busy.eq(1), t_next.eq(c_list)]
                m.d.sync += [t.eq(c_list), t_row.eq(c_list), wa.eq(c_wbase), wa_row.eq(c_wbase),
                             py.eq(0), px.eq(0), q.eq(0), j.eq(0), ky.eq(0), kx.eq(0)]
                m.next = "RUN"

            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), op.valid.eq(1), t_next.eq(t)]
                end_entry = entry.empty | (j == c_words - 1)
                m.d.comb += [op.clear.eq((t == t_row) & (j == 0)), op.last.eq(entry.last & end_entry)]
                wa_after = Signal.like(wa)
                m.d.comb += wa_after.eq(wa + ~entry.empty)
                with m.If(~end_entry):                  # next word of this tile
                    m.d.sync += [j.eq(j + 1), wa.eq(wa + 1)]
                    with m.If(kx == c_k1):
                        m.d.sync += [kx.eq(0), ky.eq(ky + 1)]
                    with m.Else():
                        m.d.sync += kx.eq(kx + 1)
                with m.Else():
                    m.d.sync += [j.eq(0), kx.eq(0), ky.eq(0)]
                    with m.If(~entry.last):             # next tile of this row
                        m.d.comb += t_next.eq(t + 1)
                        m.d.sync += [t.eq(t + 1), wa.eq(wa_after)]
                    with m.Elif(q != c_nq - 1):         # same row, next pool position
                        m.d.comb += t_next.eq(t_row)
                        m.d.sync += [q.eq(q + 1), t.eq(t_row), wa.eq(wa_row)]
                    with m.Else():
                        m.d.sync += q.eq(0)
                        with m.If(~entry.end):          # next row of output channels
                            m.d.comb += t_next.eq(t + 1)
                            m.d.sync += [t.eq(t + 1), t_row.eq(t + 1), wa.eq(wa_after), wa_row.eq(wa_after)]
                        with m.Else():                  # next output pixel
                            m.d.comb += t_next.eq(c_list)
                            m.d.sync += [t.eq(c_list), t_row.eq(c_list), wa.eq(c_wbase), wa_row.eq(c_wbase)]
                            with m.If(px != c_out_w - 1):
                                m.d.sync += px.eq(px + 1)
                            with m.Elif(py != c_out_h - 1):
                                m.d.sync += [px.eq(0), py.eq(py + 1)]
                            with m.Else():
                                m.d.sync += drain.eq(0)
                                m.next = "DRAIN"

            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == self.drain - 1):
                    m.d.sync += layer.eq(layer + 1)
                    with m.If(layer == L - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SETUP"
        return m
