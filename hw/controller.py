"""The controller: sequences a whole network, layer by layer, one op per cycle.

Per layer it runs ``SETUP`` (load the layer's constants and tile-list / weight bases; a
window-mode first layer also waits there for its first input patch), ``RUN`` (the op loop) and
``DRAIN`` (``drain`` cycles, so the next layer reads what this one wrote). The op loop walks:
output pixel (after pooling) -> tile row (P output channels) -> pool position (4 with a 2x2
max-pool, else 1) -> the row's non-zero tiles (from the tile list) -> the tile's words. Every
cycle of ``RUN`` issues one op; pruned tiles are not in the list, so they cost nothing. Rows come
from the list too (each entry names its row), so a row with no tile left costs nothing either
(see :func:`~ternpe.hw.weights.tile_program`).

Addresses come from running counters, never from multiplies: the input address of an op is
``pixel base + pool-position offset + kernel offset`` (the tile column is added one stage
later), each term stepped by per-layer constants that are registered in ``SETUP``. So a map
width of 28 or 7 costs the same logic as 32 or 8.

A window-mode first layer (``cin < G``) reads its operands from the input buffer's patch
registers instead of memory: the controller asks for the next patch (``win_adv``) with the last
op of every pixel and waits (``win_ok`` low: no op is issued) while the input buffer is still
gathering it.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ternpe.contract import unsigned_bits
from ternpe.cycles import gather_cycles
from .weights import TileEntry

__all__ = ["OpTag", "Op", "Controller"]


class OpTag(data.StructLayout):
    """Where an op's result belongs; travels with the op through the array and the requantizers.
    ``pix_first``: the op is in its pixel's first row; ``layer_first``: in the layer's first pixel
    (the write-back counts pixels from these, so no address travels down the pipeline).

    A residual network adds fields filled in after the op register (the controller leaves them
    zero): the shortcut's word, the lane of the row's channel 0 in it, and which of the ``P``
    lanes take a shortcut channel."""

    def __init__(self, plan):
        ls = plan.export.layers
        fields = {"layer": range(len(ls) + 1), "r": range(max(l.layout.rows for l in ls)),
                  "q": 2, "last_q": 1, "pix_first": 1, "layer_first": 1}
        if plan.residual:
            G, P = plan.geometry.G, plan.geometry.P
            fields.update({"sc_word": unsigned_bits(max(1, plan.act.depth - 1)),
                           "sc_rot": max(1, (G - 1).bit_length()), "sc_mask": P})
        super().__init__(fields)


def act_addr_shape(plan) -> tuple:
    """(signed counter width, unsigned address width) of the input-address counters: they run a
    little outside the map (padding, masked by ``inb``)."""
    lo, hi = 0, 1
    G = plan.geometry.G
    for l, (base, _) in zip(plan.export.layers, plan.layer_bases):
        s = l.spec
        cw = max(1, s.cin // G)
        lo = min(lo, base - (s.pad * s.in_w + s.pad) * cw)
        hi = max(hi, base + (s.in_h + 2 * s.k + 2) * (s.in_w + 2 * s.k + 2) * cw)
    return unsigned_bits(max(-lo, hi)) + 1, unsigned_bits(hi)


class Op(data.StructLayout):
    """One op: read the activation word ``act_addr + col`` (zero when ``inb`` is low: padding)
    and add it under weight word ``word_addr`` (zero when ``empty``: a row without tiles);
    ``clear`` starts a sum, ``last`` ends it; ``j`` is the word of the tile (window mode).
    A network with residual layers adds ``sc``: the element of the activation memory where
    the shortcut of this output pixel's channel 0 would be (see
    :func:`~ternpe.hw.plan.shortcut_constants`)."""

    def __init__(self, plan, word_addr_bits: int, addr_bits: int):
        max_words = max(l.layout.words_per_tile for l in plan.export.layers)
        fields = {"valid": 1, "clear": 1, "last": 1, "inb": 1, "empty": 1, "act_addr": addr_bits,
                  "col": plan.col_bits, "j": range(max(2, max_words)), "word_addr": word_addr_bits,
                  "tag": OpTag(plan)}
        if plan.sc_bits:
            fields["sc"] = signed(plan.sc_bits)
        super().__init__(fields)


def _layer_constants(spec, layout, G: int, read_base: int) -> dict:
    """The counter steps of one layer (see the module docstring)."""
    s, pad, k = spec.stride, spec.pad, spec.k
    npool = 2 if spec.pool else 1
    cw = max(1, spec.cin // G)               # activation words per input pixel
    step = npool * s                         # input pixels between neighbouring output pixels
    return {"out_w1": spec.out_w - 1, "out_h1": spec.out_h - 1, "words1": layout.words_per_tile - 1,
            "nq1": spec.pool_positions - 1, "k1": k - 1, "cw": cw, "kwrap": (spec.in_w - (k - 1)) * cw,
            "pxstep": step * cw, "pystep": step * spec.in_w * cw, "init": read_base - (pad * spec.in_w + pad) * cw,
            "qoff": [0, s * cw, s * spec.in_w * cw, (s * spec.in_w + s) * cw], "s": s, "step": step,
            "pad": pad, "in_h": spec.in_h, "in_w": spec.in_w}


class Controller(wiring.Component):
    """Sequences the layers of a network, one op per cycle (see the module docstring).

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        Per layer: window mode and pool positions (``plan.layers``), the tile list and weight
        words (``plan.programs``), where its input starts (``plan.layer_bases``: ``op.act_addr``
        is absolute), the drain after its last op (``plan.drain``) and, in a residual network,
        the shortcut counters (``plan.shortcut``).
    list_addr_bits, word_addr_bits : int
        Widths of the weight buffer's tile-list and weight-word addresses.

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
    win_ok : In(1)
        The input buffer holds the next patch of a window-mode layer.
    win_adv : Out(1)
        Take the next patch: the ops issued from the next cycle on belong to it.
    """

    def __init__(self, plan, *, list_addr_bits: int, word_addr_bits: int):
        ex = self.export = plan.export
        self.plans, self.programs, self.drain = plan.layers, plan.programs, plan.drain
        self.n_layers = len(ex.layers)
        self.addr_bits = act_addr_shape(plan)
        self.consts = [_layer_constants(l.spec, l.layout, ex.geometry.G, rb)
                       for l, (rb, _) in zip(ex.layers, plan.layer_bases)]
        self.sc_bits = plan.sc_bits
        for c, p in zip(self.consts, self.programs):      # flags (last, empty, end) of the layer's first entry
            c["f0"] = p.entries[0][2] | p.entries[0][3] << 1 | p.entries[0][4] << 2
        if plan.shortcut:
            for c, sc in zip(self.consts, plan.shortcut):
                c.update(sc)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "entry_addr": Out(list_addr_bits), "entry": In(TileEntry(plan.col_bits, plan.row_bits)),
            "op": Out(Op(plan, word_addr_bits, self.addr_bits[1])),
            "win_ok": In(1), "win_adv": Out(1),
        })

    def _may_stall(self) -> bool:
        return any(pl.window and pl.ops_pp < gather_cycles(l.spec) for l, pl in zip(self.export.layers, self.plans))

    def _constant_registers(self, m, layer, load):
        """Registers of every per-layer constant, loaded from a switch on ``layer`` when ``load``."""
        cs = self.consts
        regs = {}
        for key in cs[0]:
            if key == "qoff":
                continue
            vals = [c[key] for c in cs]
            lo, hi = min(vals + [0]), max(vals + [0])
            shape = signed(max(unsigned_bits(max(abs(lo), abs(hi))) + 1, 2)) if lo < 0 else range(hi + 1)
            regs[key] = Signal(shape, name=f"c_{key}")
        qmax = max(max(c["qoff"]) for c in cs)
        regs["qoff"] = [Signal(range(qmax + 1), name=f"c_qoff{n}") for n in range(4)]
        regs["list"] = Signal(range(max(p.list_base for p in self.programs) + 1), name="c_list")
        regs["wbase"] = Signal(range(max(p.word_base for p in self.programs) + 1), name="c_wbase")
        regs["window"] = Signal(name="c_window")
        with m.If(load):
            with m.Switch(layer):
                for i, c in enumerate(cs):
                    with m.Case(i):
                        for key, v in c.items():
                            if key == "qoff":
                                m.d.sync += [r.eq(x) for r, x in zip(regs["qoff"], v)]
                            else:
                                m.d.sync += regs[key].eq(v)
                        m.d.sync += [regs["list"].eq(self.programs[i].list_base),
                                     regs["wbase"].eq(self.programs[i].word_base),
                                     regs["window"].eq(self.plans[i].window)]
        return regs

    def _walk_registers(self) -> dict:
        """The counters of the op loop, no wider than the network needs (short carry chains)."""
        ex, op = self.export, self.op
        specs = [l.spec for l in ex.layers]
        max_h, max_w = max(s.out_h for s in specs), max(s.out_w for s in specs)
        max_words = max(l.layout.words_per_tile for l in ex.layers)
        max_k = max(s.k for s in specs)
        max_in = max(max(s.in_h, s.in_w) for s in specs)
        w = {"py": Signal(range(max_h + 1), name="py"), "px": Signal(range(max_w + 1), name="px"),
             "j": Signal(range(max_words + 1), name="j"), "q": Signal(2, name="q"),
             "ky": Signal(range(max_k + 1), name="ky"), "kx": Signal(range(max_k + 1), name="kx")}
        for n in ("t", "t_row", "t_next"):
            w[n] = Signal(len(self.entry_addr) + 1, name=n)
        # t + 1 and t_row + 1 kept in registers, and the "last word" / "last pool position"
        # compares made a cycle early: the tile-list address loop is a mux of registers
        w["t_inc"], w["t_row_inc"] = Signal.like(w["t"], name="t_inc"), Signal.like(w["t"], name="t_row_inc")
        w["j_last"], w["q_last"] = Signal(name="j_last"), Signal(name="q_last")
        w["wa"], w["wa_row"] = Signal(len(op.word_addr) + 1, name="wa"), Signal(len(op.word_addr) + 1, name="wa_row")
        w["drain"] = Signal(range(self.drain + 1), name="drain")
        addr_shape = signed(self.addr_bits[0])
        for n in ("pix_addr", "row_addr", "k_addr"):
            w[n] = Signal(addr_shape, name=n)
        pos = signed(unsigned_bits(2 * max_in + 2 * max_k + 4) + 1)
        w["oy0"], w["ox0"] = Signal(pos, name="oy0"), Signal(pos, name="ox0")    # the pixel's window origin
        # the flags of entry t in registers: stepped with t from the list word's next_* flags, the
        # row's first entry's (fl_row) or the layer's first entry's (c_f0), never waiting on a read
        flags = data.StructLayout({"last": 1, "empty": 1, "end": 1})
        w["fl"], w["fl_row"], w["nfl"] = (Signal(flags, name=n) for n in ("fl", "fl_row", "fl_next"))
        # the shortcut counter (residual networks): element of this pixel's shortcut, stepped like pix_addr
        w["sc"] = [Signal(signed(self.sc_bits), name=n) for n in ("sc_pix", "sc_row")] if self.sc_bits else None
        return w

    def _drive_op(self, m, w, c, layer):
        """The op of this cycle, from the counters (combinational)."""
        op, entry = self.op, self.entry
        m.d.comb += w["nfl"].eq(Cat(entry.next_last, entry.next_empty, entry.next_end))
        m.d.comb += [self.entry_addr.eq(w["t_next"]), op.word_addr.eq(w["wa"]), op.empty.eq(w["fl"].empty),
                     op.col.eq(entry.col), op.j.eq(w["j"])]
        if w["sc"]:
            m.d.comb += op.sc.eq(w["sc"][0])
        q = w["q"]
        qdy, qdx = Mux(q[1], c["s"], 0), Mux(q[0], c["s"], 0)
        iy, ix = Signal.like(w["oy0"], name="iy"), Signal.like(w["ox0"], name="ix")
        m.d.comb += [iy.eq(w["oy0"] + qdy + w["ky"]), ix.eq(w["ox0"] + qdx + w["kx"])]
        inside = (iy >= 0) & (iy < c["in_h"]) & (ix >= 0) & (ix < c["in_w"])
        m.d.comb += [op.inb.eq(c["window"] | inside),
                     op.act_addr.eq(w["pix_addr"] + Array(c["qoff"])[q] + w["k_addr"])]
        m.d.comb += [op.tag.layer.eq(layer), op.tag.r.eq(entry.row), op.tag.q.eq(q),
                     op.tag.last_q.eq(w["q_last"]), op.tag.pix_first.eq(w["t_row"] == c["list"]),
                     op.tag.layer_first.eq((w["px"] == 0) & (w["py"] == 0))]

    def _setup(self, m, w, c):
        """State ``SETUP``: the layer's counters from its constants; a window-mode layer waits for its patch."""
        m.d.comb += [self.busy.eq(1), w["t_next"].eq(c["list"])]
        m.d.sync += [w["t"].eq(c["list"]), w["t_row"].eq(c["list"]), w["wa"].eq(c["wbase"]),
                     w["wa_row"].eq(c["wbase"]), w["t_inc"].eq(c["list"] + 1), w["t_row_inc"].eq(c["list"] + 1),
                     w["j_last"].eq(c["words1"] == 0), w["q_last"].eq(c["nq1"] == 0)]
        m.d.sync += [w[n].eq(0) for n in ("py", "px", "q", "j", "ky", "kx", "k_addr")]
        m.d.sync += [w["pix_addr"].eq(c["init"]), w["row_addr"].eq(c["init"]), w["oy0"].eq(-c["pad"]),
                     w["ox0"].eq(-c["pad"]), w["fl"].eq(c["f0"]), w["fl_row"].eq(c["f0"])]
        if w["sc"]:
            m.d.sync += [w["sc"][0].eq(c["sc_init"]), w["sc"][1].eq(c["sc_init"])]
        with m.If(~c["window"] | self.win_ok):
            m.d.comb += self.win_adv.eq(c["window"])
            m.next = "RUN"

    def elaborate(self, platform):
        m = Module()
        L = self.n_layers
        layer = Signal(range(L + 1))
        w = self._walk_registers()
        # per-layer constants: registered when the layer is entered (from IDLE or from a drain)
        setup_load, next_layer = Signal(), Signal(range(L + 1))
        c = self._constant_registers(m, next_layer, setup_load)
        self._drive_op(m, w, c, layer)
        drain = w["drain"]
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += [setup_load.eq(1), next_layer.eq(0)]
                with m.If(self.start):
                    m.d.sync += layer.eq(0)
                    m.next = "SETUP"
            with m.State("SETUP"):
                self._setup(m, w, c)
            with m.State("RUN"):
                self._run(m, entry=self.entry, op=self.op, c=c, **w)
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == self.drain - 1):
                    m.d.sync += layer.eq(layer + 1)
                    m.d.comb += [setup_load.eq(1), next_layer.eq(layer + 1)]
                    with m.If(layer == L - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SETUP"
        return m

    def _run(self, m, *, entry, op, c, t, t_row, t_next, t_inc, t_row_inc, j_last, q_last, wa, wa_row, j, q,
             ky, kx, k_addr, px, py, pix_addr, row_addr, ox0, oy0, drain, sc, fl, fl_row, nfl):
        """One cycle of the op loop (state ``RUN``): issue an op and step the counters."""
        m.d.comb += [self.busy.eq(1), t_next.eq(t)]
        entry = fl                              # the flags; the column and row come from the list
        end_entry = entry.empty | j_last
        last_pixel = (px == c["out_w1"]) & (py == c["out_h1"])
        end_pixel = end_entry & entry.last & q_last & entry.end
        # a pixel with at least gather_cycles ops never waits for its successor's patch (the
        # usual case): then there is no stall logic at all, and no long enable path
        stall = (c["window"] & end_pixel & ~last_pixel & ~self.win_ok) if self._may_stall() else 0
        m.d.comb += [op.valid.eq(~stall), op.clear.eq((t == t_row) & (j == 0)),
                     op.last.eq(entry.last & end_entry),
                     self.win_adv.eq(c["window"] & end_pixel & ~last_pixel & ~stall)]
        wa_after = Signal.like(wa)
        m.d.comb += wa_after.eq(wa + ~entry.empty)
        with m.If(stall):
            pass                                # the next patch is not gathered yet
        with m.Elif(~end_entry):                # next word of this tile
            m.d.sync += [j.eq(j + 1), wa.eq(wa + 1), j_last.eq(j + 1 == c["words1"])]
            with m.If(kx == c["k1"]):
                m.d.sync += [kx.eq(0), ky.eq(ky + 1), k_addr.eq(k_addr + c["kwrap"])]
            with m.Else():
                m.d.sync += [kx.eq(kx + 1), k_addr.eq(k_addr + c["cw"])]
        with m.Else():
            m.d.sync += [j.eq(0), kx.eq(0), ky.eq(0), k_addr.eq(0), j_last.eq(c["words1"] == 0)]
            with m.If(~entry.last):             # next tile of this row
                m.d.comb += t_next.eq(t_inc)
                m.d.sync += [t.eq(t_inc), t_inc.eq(t_inc + 1), wa.eq(wa_after), fl.eq(nfl)]
            with m.Elif(~q_last):               # same row, next pool position
                m.d.comb += t_next.eq(t_row)
                m.d.sync += [q.eq(q + 1), q_last.eq(q + 1 == c["nq1"]), t.eq(t_row), t_inc.eq(t_row_inc),
                             wa.eq(wa_row), fl.eq(fl_row)]
            with m.Else():
                m.d.sync += [q.eq(0), q_last.eq(c["nq1"] == 0)]
                with m.If(~entry.end):          # next row of output channels
                    m.d.comb += t_next.eq(t_inc)
                    m.d.sync += [t.eq(t_inc), t_row.eq(t_inc), t_inc.eq(t_inc + 1), t_row_inc.eq(t_inc + 1),
                                 wa.eq(wa_after), wa_row.eq(wa_after), fl.eq(nfl), fl_row.eq(nfl)]
                with m.Else():                  # next output pixel
                    m.d.comb += t_next.eq(c["list"])
                    m.d.sync += [t.eq(c["list"]), t_row.eq(c["list"]), t_inc.eq(c["list"] + 1),
                                 t_row_inc.eq(c["list"] + 1), wa.eq(c["wbase"]), wa_row.eq(c["wbase"]),
                                 fl.eq(c["f0"]), fl_row.eq(c["f0"])]
                    with m.If(px != c["out_w1"]):
                        m.d.sync += [px.eq(px + 1), pix_addr.eq(pix_addr + c["pxstep"]),
                                     ox0.eq(ox0 + c["step"])]
                        if sc:
                            m.d.sync += sc[0].eq(sc[0] + c["sc_px"])
                    with m.Elif(py != c["out_h1"]):
                        m.d.sync += [px.eq(0), py.eq(py + 1), pix_addr.eq(row_addr + c["pystep"]),
                                     row_addr.eq(row_addr + c["pystep"]), ox0.eq(-c["pad"]),
                                     oy0.eq(oy0 + c["step"])]
                        if sc:
                            m.d.sync += [sc[0].eq(sc[1] + c["sc_py"]), sc[1].eq(sc[1] + c["sc_py"])]
                    with m.Else():
                        m.d.sync += drain.eq(0)
                        m.next = "DRAIN"

