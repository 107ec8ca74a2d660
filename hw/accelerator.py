"""The accelerator top and its controller, generated from an export.

Dataflow (one op per cycle, no stalls inside a layer)::

    tile list + weight ROM --\\
                              >-- PE array (P x G) -- requantizers (P) -- max-pool -- activation buffer
    activation buffer ------/                                                      \\-- logits -> argmax

The controller walks, per layer: output pixel (after pooling) -> tile row (P output channels)
-> pool position (4 with a 2x2 max-pool, else 1) -> the row's non-zero tiles -> the tile's
words. Each cycle it issues one op: a weight word address, an activation word address and the
flags ``clear`` (first word of a sum) / ``last`` (last word); the flags travel with the data, so
rows and pixels switch without a bubble. A row whose tiles are all pruned costs nothing: its
outputs are constants (the requantized bias), written with the other rows of its activation
word. After a layer's last op the pipeline drains for ``drain_cycles`` before the next layer
reads what this one wrote.

Activations live channels-last, ``G`` lanes of ``act_bits`` per word, in one simple-dual-port
memory (one read, one write per cycle: a block RAM) of three regions: the input, and two
ping-pong buffers that the layers alternately read and write. A first layer with fewer input
channels than lanes (``cin < G``) runs in window mode: the input loader writes the image as
im2col words (lane ``l`` of word ``j`` of output pixel ``o`` holds the ``(ky, kx, c)`` the
contract's ``window_offsets`` names), so its lanes stay busy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import MULT_BITS, SHIFT_BITS, ContractError, requantize, unsigned_bits
from .array import PEArray
from .controller import Controller, OpTag
from .pe import pe_latency
from .requant import Requantizer, requant_out_bits
from .weights import SparseTileWeightBuffer, rows_per_group, tile_program

__all__ = ["GenerateError", "Accelerator", "cycle_model", "drain_cycles", "memory_bits", "memory_shapes",
           "output_bits"]


class GenerateError(ContractError):
    """An export the hardware cannot run as asked; the message names layer, resource, numbers."""


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclasses.dataclass(frozen=True)
class _Plan:
    window: bool          # first layer in window (im2col) mode
    nq: int               # pool positions per output pixel
    ops: int              # cycles of the op loop


def _plans(ex) -> list:
    G, P = ex.geometry.G, ex.geometry.P
    plans = []
    n = len(ex.layers)
    if not _is_pow2(G) or not _is_pow2(P) or P > G:
        raise GenerateError(f"array {ex.geometry}: the hardware needs P and G powers of two with P <= G")
    for i, l in enumerate(ex.layers):
        s = l.spec
        window = s.cin < G
        if window and i > 0:
            raise GenerateError(f"layer {s.name}: {s.cin} input channels < G={G}; window mode runs only on "
                                f"the first layer (widen the layer or choose a smaller G)")
        if window and s.stride != 1:
            raise GenerateError(f"layer {s.name}: window mode (cin < G) needs stride 1, not {s.stride}")
        if i < n - 1:
            if not s.relu:
                raise GenerateError(f"layer {s.name}: only the last layer may be without ReLU")
            if s.cout % P:
                raise GenerateError(f"layer {s.name}: {s.cout} output channels is not a multiple of P={P}")
        else:
            if s.relu or (s.out_h, s.out_w) != (1, 1) or s.pool:
                raise GenerateError(f"layer {s.name}: the last layer must produce logits "
                                    f"(no ReLU, a 1x1 output, no pool)")
        nq = 4 if s.pool else 1
        prog = tile_program(l, rows_per_group=rows_per_group(ex.geometry, l, i == n - 1))
        plans.append(_Plan(window, nq, s.out_h * s.out_w * nq * prog.ops_per_position))
    return plans


def output_bits(ex) -> int:
    """Width of the output stream: an unclamped logit, or the class index."""
    res = requant_out_bits(max(l.acc_bits for l in ex.layers), max(l.bias_bits for l in ex.layers))
    return max(res, unsigned_bits(ex.layers[-1].spec.cout) + 1)


def drain_cycles(geometry) -> int:
    """Cycles between a layer's last op and the next layer's first: the op and memory-data
    registers, the PE pipeline, the requantizer, the tag/pool/write-back registers."""
    return 2 + pe_latency(geometry.G) + Requantizer.latency + 3


def cycle_model(ex, *, drain: int | None = None) -> dict:
    """Cycles per inference from the manifest: per layer ``1 (setup) + ops + drain``, where
    ops = pooled output pixels x pool positions x (non-zero tiles x words per tile + one op per
    activation word group whose rows have no tile at all); then ``classes + 1`` for the argmax.
    """
    plans = _plans(ex)
    drain = drain_cycles(ex.geometry) if drain is None else drain
    layers = []
    for l, p in zip(ex.layers, plans):
        busy = l.spec.out_h * l.spec.out_w * p.nq * l.nonzero_tiles * l.layout.words_per_tile
        layers.append({"name": l.spec.name, "ops": p.ops, "cycles": 1 + p.ops + drain, "busy_ops": busy,
                       "lane_use": l.layout.lane_utilisation})
    argmax = ex.layers[-1].spec.cout + 1
    return {"layers": layers, "argmax": argmax, "total": sum(x["cycles"] for x in layers) + argmax, "drain": drain}


def act_regions(ex, plans=None) -> dict:
    """Words of the activation memory's regions: the input (im2col words in window mode, else
    the image) and two ping-pong buffers, each as large as the largest hidden layer output."""
    plans = _plans(ex) if plans is None else plans
    G = ex.geometry.G
    l0 = ex.layers[0]
    if plans[0].window:
        inp = l0.spec.conv_h * l0.spec.conv_w * l0.layout.words_per_tile
    else:
        inp = -(-l0.spec.cin * l0.spec.in_h * l0.spec.in_w // G)
    buf = max([1] + [-(-l.spec.out_h * l.spec.out_w * l.spec.cout // G) for l in ex.layers[:-1]])
    return {"input": inp, "buffer": buf, "depth": inp + 2 * buf}


def _bases(ex, plans):
    """Per layer: (read base, write base) in the activation memory."""
    r = act_regions(ex, plans)
    out = [r["input"] + (i % 2) * r["buffer"] for i in range(len(ex.layers))]
    return [(0 if i == 0 else out[i - 1], out[i]) for i in range(len(ex.layers))]


def memory_shapes(ex) -> dict:
    """(width, depth) of every memory the accelerator of ``ex`` instantiates."""
    g = ex.geometry
    n = len(ex.layers)
    progs = [tile_program(l, rows_per_group=rows_per_group(g, l, i == n - 1)) for i, l in enumerate(ex.layers)]
    col_bits = unsigned_bits(max(l.layout.cols - 1 for l in ex.layers))
    row_bits = unsigned_bits(max(l.layout.rows - 1 for l in ex.layers))
    bias_bits = max(l.bias_bits for l in ex.layers)
    return {"weights": (g.word_bits, sum(len(p.words) for p in progs)),
            "tile list": (col_bits + row_bits + 3, sum(len(p.entries) for p in progs)),
            "requantizer constants": (g.P * (MULT_BITS + bias_bits + SHIFT_BITS),
                                      sum(l.layout.rows for l in ex.layers)),
            "activations": (g.G * ex.act_bits, act_regions(ex)["depth"])}


def memory_bits(ex) -> dict:
    """Bits of every memory the accelerator of ``ex`` instantiates (checked before synthesis)."""
    return {k: w * d for k, (w, d) in memory_shapes(ex).items()}


class Accelerator(wiring.Component):
    """The whole network on a ``P x G`` ternary array.

    Parameters
    ----------
    export : ternpe.image.Export
        A loaded, validated export; shapes, tile lists and memory sizes come from it.

    Members
    -------
    input : In(stream.Signature(unsigned(act_bits)))
        The image, one pixel byte per transfer, ``(h, w, c)`` order.
    output : Out(stream.Signature(signed(out_bits)))
        The ``classes`` logits (integer, in units of the manifest's ``logit_scale``), then the
        class index.
    cycles : Out(32)
        Cycles from the end of loading to the logits of the last inference.
    busy : Out(1)
        High while the controller runs the layers.
    tap_valid, tap_layer, tap_addr, tap_mask, tap_data : Out
        Debug tap of every activation write: lane ``l`` of ``tap_data`` (bits ``l*act_bits``),
        where ``tap_mask[l]`` is set, is element ``tap_addr*G + l`` of layer ``tap_layer``'s
        (pooled) output map, flattened ``(h, w, c)``. Lets a testbench name the first layer that
        differs. Not driven for the last layer, whose results are the logits.
    """

    def __init__(self, export):
        self.export = ex = export
        try:
            self.plans = _plans(ex)
        except GenerateError:
            self._MustUse__silence = True      # a rejected network is not an unused block
            raise
        g = ex.geometry
        self.act_bits = A = ex.act_bits
        self.acc_bits = max(l.acc_bits for l in ex.layers)
        self.bias_bits = max(l.bias_bits for l in ex.layers)
        self.classes = ex.layers[-1].spec.cout
        self.res_bits = requant_out_bits(self.acc_bits, self.bias_bits)
        self.out_bits = output_bits(ex)
        super().__init__({
            "input": In(stream.Signature(unsigned(A))),
            "output": Out(stream.Signature(signed(self.out_bits))),
            "cycles": Out(32), "busy": Out(1),
            "tap_valid": Out(1), "tap_layer": Out(range(len(ex.layers))), "tap_addr": Out(24),
            "tap_mask": Out(g.G), "tap_data": Out(g.G * A),
        })

    @property
    def drain_cycles(self) -> int:
        return drain_cycles(self.export.geometry)

    def cycle_model(self) -> dict:
        return cycle_model(self.export, drain=self.drain_cycles)

    def memory_bits(self) -> dict:
        return memory_bits(self.export)

    def elaborate(self, platform):
        m = Module()
        ex, g, A = self.export, self.export.geometry, self.act_bits
        P, G = g.P, g.G
        L = len(ex.layers)
        m.submodules.weights = wb = SparseTileWeightBuffer(geometry=g, layers=ex.layers)
        m.submodules.array = arr = PEArray(geometry=g, act_bits=A, acc_bits=self.acc_bits)
        requants = [Requantizer(acc_bits=self.acc_bits, bias_bits=self.bias_bits, act_bits=A) for _ in range(P)]
        for p, rq in enumerate(requants):
            m.submodules[f"requant{p}"] = rq

        # ---------------- memories ----------------
        word_bits = G * A
        # one simple-dual-port memory: input region (image or im2col words), two ping-pong buffers
        regions = act_regions(ex, self.plans)
        bases = _bases(ex, self.plans)
        m.submodules.act = act_mem = Memory(shape=word_bits, depth=regions["depth"], init=[])
        a_rd, a_wr = act_mem.read_port(), act_mem.write_port(granularity=A)
        # addresses of the write-back and of the input loader, muxed on the single write port
        wb_addr, wb_data, wb_en = Signal(range(regions["depth"])), Signal(word_bits), Signal(G)
        ld_addr, ld_data, ld_en = Signal(range(regions["depth"])), Signal(word_bits), Signal(G)
        # the input loader's writes are registered once (its address arithmetic ends there)
        ldc_addr, ldc_data, ldc_en = Signal.like(ld_addr), Signal.like(ld_data), Signal.like(ld_en)
        m.d.sync += [ld_addr.eq(ldc_addr), ld_data.eq(ldc_data), ld_en.eq(ldc_en)]
        m.d.comb += [a_wr.addr.eq(Mux(ld_en.any(), ld_addr, wb_addr)), a_wr.data.eq(Mux(ld_en.any(), ld_data, wb_data)),
                     a_wr.en.eq(ld_en | wb_en)]
        rows_all = [l.layout.rows for l in ex.layers]
        rq_base = [sum(rows_all[:i]) for i in range(L)]
        rq_layout = data.ArrayLayout(data.StructLayout({"mult": signed(MULT_BITS), "bias": signed(self.bias_bits),
                                                         "shift": unsigned(SHIFT_BITS)}), P)
        rq_init = []
        for l in ex.layers:
            for r in range(l.layout.rows):
                rq_init.append(rq_layout.const([{"mult": int(l.requant.mult[r * P + p]),
                                                 "bias": int(l.requant.bias[r * P + p]),
                                                 "shift": int(l.requant.shift[r * P + p])} for p in range(P)]
                                               ).as_value().value)
        m.submodules.rqrom = rqrom = Memory(shape=rq_layout.size, depth=len(rq_init), init=rq_init)
        rq_rd = rqrom.read_port()

        # ---------------- controller ----------------
        m.submodules.ctrl = ctrl = Controller(
            export=ex, plans=self.plans, programs=wb.programs, col_bits=wb.col_bits, row_bits=wb.row_bits,
            list_addr_bits=len(wb.entry_addr), word_addr_bits=len(wb.word_addr),
            read_bases=[rb for rb, _ in bases], drain=self.drain_cycles)
        m.d.comb += [wb.entry_addr.eq(ctrl.entry_addr), ctrl.entry.eq(wb.entry)]
        # the op register: the controller's address arithmetic ends here, the memories start here
        op = Signal.like(ctrl.op)
        m.d.sync += op.eq(ctrl.op)
        m.d.comb += [a_rd.addr.eq(op.act_addr), wb.word_addr.eq(op.word_addr)]
        cycles = Signal(32)
        counting = Signal()           # the controller runs, or the argmax
        m.d.comb += [self.cycles.eq(cycles), self.busy.eq(ctrl.busy | counting)]
        with m.If(ctrl.busy | counting):
            m.d.sync += cycles.eq(cycles + 1)
        with m.Elif(ctrl.start):
            m.d.sync += cycles.eq(0)

        tag_layout = OpTag(ex)
        # stage 1: memory data arrives
        s1_valid, s1_clear, s1_last, s1_inb, s1_empty = (Signal(name=f"s1_{n}") for n in
                                                         ("valid", "clear", "last", "inb", "empty"))
        s1_tag = Signal(tag_layout)
        m.d.sync += [s1_valid.eq(op.valid), s1_clear.eq(op.clear), s1_last.eq(op.last),
                     s1_inb.eq(op.inb), s1_empty.eq(op.empty), s1_tag.eq(op.tag)]
        act_word = a_rd.data
        use = s1_inb & ~s1_empty
        # stage 2: the memory data registered (block RAM outputs are slow: nothing follows them)
        s2_valid, s2_clear, s2_last, s2_use, s2_empty = (Signal(name=f"s2_{n}") for n in
                                                         ("valid", "clear", "last", "use", "empty"))
        s2_act, s2_w, s2_tag = Signal(word_bits), Signal(g.word_bits), Signal(tag_layout)
        m.d.sync += [s2_valid.eq(s1_valid), s2_clear.eq(s1_clear), s2_last.eq(s1_last), s2_tag.eq(s1_tag),
                     s2_use.eq(use), s2_empty.eq(s1_empty), s2_act.eq(act_word), s2_w.eq(wb.word)]
        m.d.comb += [arr.valid.eq(s2_valid), arr.clear.eq(s2_clear), arr.last.eq(s2_last),
                     arr.act.eq(Mux(s2_use, s2_act, 0)), arr.weights.eq(Mux(s2_empty, 0, s2_w))]
        # tag delay line through the array
        tags = [s2_tag]
        for n in range(arr.latency):
            tg = Signal(tag_layout, name=f"tag_a{n}")
            m.d.sync += tg.eq(tags[-1])
            tags.append(tg)
        pre = tags[-2]
        m.d.comb += rq_rd.addr.eq(Array(Const(b, 16) for b in rq_base + [0])[pre.layer] + pre.r)
        at_res = tags[-1]
        rq_words = data.View(rq_layout, rq_rd.data)
        is_last_layer = at_res.layer == L - 1
        for p, rq in enumerate(requants):
            m.d.comb += [rq.valid.eq(arr.result_valid), rq.acc.eq(arr.result[p]), rq.mult.eq(rq_words[p].mult),
                         rq.bias.eq(rq_words[p].bias), rq.shift.eq(rq_words[p].shift), rq.clamp.eq(~is_last_layer)]
        for n in range(Requantizer.latency):
            tg = Signal(tag_layout, name=f"tag_r{n}")
            m.d.sync += tg.eq(tags[-1])
            tags.append(tg)
        tq = tags[-1]
        res_valid = requants[0].out_valid

        # ---------------- max-pool and write-back ----------------
        mx = [Signal(A, name=f"max{p}") for p in range(P)]
        mx_new = [Signal(A, name=f"max_new{p}") for p in range(P)]
        for p in range(P):
            y = requants[p].out[:A]
            m.d.comb += mx_new[p].eq(Mux((tq.q == 0) | (y > mx[p]), y, mx[p]))
            with m.If(res_valid):
                m.d.sync += mx[p].eq(mx_new[p])
        # rows without tiles have constant outputs (the requantized bias); see tile_program
        last_l = ex.layers[-1]
        const_logits = requantize(np.zeros(self.classes, np.int64), last_l.channel_requant(), relu=False, act_bits=A)
        empty_last = {c for r in wb.programs[-1].empty_rows for c in range(r * P, min((r + 1) * P, self.classes))}
        logits = [Signal(signed(self.res_bits), name=f"logit{c}", init=int(const_logits[c]) if c in empty_last else 0)
                  for c in range(self.classes)]
        fill_mask, fill_data = Signal(G), Signal(G * A)
        w_idx = Signal(32)
        with m.Switch(tq.layer):
            for i, l in enumerate(ex.layers):
                s = l.spec
                with m.Case(i):
                    if i < L - 1:
                        m.d.comb += w_idx.eq((tq.py * s.out_w + tq.px) * s.cout + tq.r * P)
                        rpg = rows_per_group(g, l, False)
                        empty = set(wb.programs[i].empty_rows)
                        if rpg > 1 and empty:
                            const = requantize(np.zeros(s.cout, np.int64), l.channel_requant(), relu=True, act_bits=A)
                            with m.Switch(tq.r >> _log2(rpg)):
                                for gi in range(l.layout.rows // rpg):
                                    lanes = [(lane, gi * G + lane) for lane in range(G)
                                             if (gi * G + lane) // P in empty]
                                    if lanes:
                                        with m.Case(gi):
                                            m.d.comb += [fill_mask.eq(sum(1 << ln for ln, _ in lanes)),
                                                         fill_data.eq(sum(int(const[c]) << (ln * A) for ln, c in lanes))]
                    else:
                        with m.If(res_valid):
                            with m.Switch(tq.r):
                                for row in range(l.layout.rows):
                                    with m.Case(row):
                                        for p in range(P):
                                            if row * P + p < self.classes and row * P + p not in empty_last:
                                                m.d.sync += logits[row * P + p].eq(requants[p].out)
        w_en = Signal()
        m.d.comb += w_en.eq(res_valid & tq.last_q & (tq.layer != L - 1))
        lane_mask = Signal(G)
        m.d.comb += lane_mask.eq((Const((1 << P) - 1, G) << w_idx[:max(1, _log2(G))] if G > 1 else 1) | fill_mask)
        wdata = Cat(*[Mux(fill_mask[gl], fill_data[gl * A:(gl + 1) * A], mx_new[gl % P]) for gl in range(G)])
        m.d.comb += [self.tap_valid.eq(w_en), self.tap_layer.eq(tq.layer), self.tap_addr.eq(w_idx >> _log2(G)),
                     self.tap_mask.eq(lane_mask), self.tap_data.eq(wdata)]
        m.d.comb += [wb_addr.eq(Array(Const(wbase, 24) for _, wbase in bases)[tq.layer] + (w_idx >> _log2(G))),
                     wb_data.eq(wdata), wb_en.eq(Mux(w_en, lane_mask, 0))]

        # ---------------- input loader ----------------
        l0 = ex.layers[0]
        s0 = l0.spec
        n_in = s0.in_h * s0.in_w * s0.cin
        in_i = Signal(range(n_in + 1))
        ly, lx, lc = Signal(range(s0.in_h + 1)), Signal(range(s0.in_w + 1)), Signal(range(s0.cin + 1))
        lky, lkx = Signal(range(s0.k + 1)), Signal(range(s0.k + 1))
        held = Signal(A)
        writing = Signal()

        # ---------------- output ----------------
        oi = Signal(range(self.classes + 1))
        best = Signal.like(logits[0])
        best_i = Signal(range(self.classes))
        cur = Signal.like(logits[0])
        m.d.comb += cur.eq(Array(logits)[oi] if self.classes > 1 else logits[0])
        ai = Signal(range(self.classes + 1))
        cand, cand_i, have = Signal.like(logits[0]), Signal(range(self.classes + 1)), Signal()

        with m.FSM(name="top"):
            with m.State("LOAD"):
                if self.plans[0].window:
                    k, pad, cin = s0.k, s0.pad, s0.cin
                    wpt = l0.layout.words_per_tile
                    with m.If(~writing):
                        m.d.comb += self.input.ready.eq(1)
                        with m.If(self.input.valid):
                            m.d.sync += [held.eq(self.input.payload), writing.eq(1), lky.eq(0), lkx.eq(0)]
                    with m.Else():
                        oy_ = Signal(range(-s0.k, s0.in_h + s0.pad + 1))
                        ox_ = Signal(range(-s0.k, s0.in_w + s0.pad + 1))
                        e = Signal(range(s0.k * s0.k * s0.cin + 1))
                        m.d.comb += [oy_.eq(ly + pad - lky), ox_.eq(lx + pad - lkx),
                                     e.eq((lky * k + lkx) * cin + lc)]
                        ok = (oy_ >= 0) & (oy_ < s0.conv_h) & (ox_ >= 0) & (ox_ < s0.conv_w)
                        m.d.comb += [ldc_addr.eq((oy_ * s0.conv_w + ox_) * wpt + (e >> _log2(G))),
                                     ldc_data.eq(held.replicate(G)),
                                     ldc_en.eq(Mux(ok, Const(1, G) << e[:max(1, _log2(G))] if G > 1 else 1, 0))]
                        last_k = (lky == k - 1) & (lkx == k - 1)
                        with m.If(lkx == k - 1):
                            m.d.sync += [lkx.eq(0), lky.eq(lky + 1)]
                        with m.Else():
                            m.d.sync += lkx.eq(lkx + 1)
                        with m.If(last_k):
                            m.d.sync += writing.eq(0)
                            with m.If(lc == cin - 1):
                                m.d.sync += lc.eq(0)
                                with m.If(lx == s0.in_w - 1):
                                    m.d.sync += [lx.eq(0), ly.eq(ly + 1)]
                                    with m.If(ly == s0.in_h - 1):
                                        m.d.sync += ly.eq(0)
                                        m.d.comb += ctrl.start.eq(1)
                                        m.next = "COMPUTE"
                                with m.Else():
                                    m.d.sync += lx.eq(lx + 1)
                            with m.Else():
                                m.d.sync += lc.eq(lc + 1)
                else:
                    m.d.comb += self.input.ready.eq(1)
                    m.d.comb += [ldc_addr.eq(in_i >> _log2(G)), ldc_data.eq(self.input.payload.replicate(G)),
                                 ldc_en.eq(Mux(self.input.valid, Const(1, G) << in_i[:max(1, _log2(G))] if G > 1 else 1, 0))]
                    with m.If(self.input.valid):
                        m.d.sync += in_i.eq(in_i + 1)
                        with m.If(in_i == n_in - 1):
                            m.d.sync += in_i.eq(0)
                            m.d.comb += ctrl.start.eq(1)
                            m.next = "COMPUTE"

            with m.State("COMPUTE"):
                with m.If(ctrl.done):
                    m.d.sync += [ai.eq(0), have.eq(0)]
                    m.next = "ARGMAX"

            with m.State("ARGMAX"):     # classes + 1 cycles: fetch a logit, compare it the next cycle
                m.d.comb += counting.eq(1)
                m.d.sync += [cand.eq(Array(logits)[ai] if self.classes > 1 else logits[0]), cand_i.eq(ai),
                             ai.eq(ai + 1), have.eq(ai < self.classes)]
                with m.If(have & ((cand_i == 0) | (cand > best))):
                    m.d.sync += [best.eq(cand), best_i.eq(cand_i)]
                with m.If(ai == self.classes):
                    m.d.sync += oi.eq(0)
                    m.next = "OUTPUT"

            with m.State("OUTPUT"):
                m.d.comb += [self.output.valid.eq(1),
                             self.output.payload.eq(Mux(oi == self.classes, best_i, cur))]
                with m.If(self.output.ready):
                    m.d.sync += oi.eq(oi + 1)
                    with m.If(oi == self.classes):
                        m.next = "LOAD"
        return m
