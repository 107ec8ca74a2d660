"""The accelerator top, generated from an export, and its analytic models (cycles, memories).

Dataflow (one op per cycle, no stalls inside a layer)::

    tile list + weight ROM --\\
                              >-- PE array (P x G) -- requantizers (P) -- max-pool -- activation buffer
    input buffer / activations -/                                                  \\-- logits -> argmax

The controller walks, per layer: output pixel (after pooling) -> tile row (P output channels)
-> pool position (4 with a 2x2 max-pool, else 1) -> the row's non-zero tiles -> the tile's
words. Each cycle it issues one op: a weight word address, an activation word address and the
flags ``clear`` (first word of a sum) / ``last`` (last word); the flags travel with the data, so
rows and pixels switch without a bubble. A row whose tiles are all pruned costs nothing: its
outputs are constants (the requantized bias), written with the other rows of its activation
word. After a layer's last op the pipeline drains for ``drain_cycles`` before the next layer
reads what this one wrote.

The image goes to the :class:`~ternpe.hw.input.InputBuffer` (two slots: the next image streams
in while this one computes). Hidden activations live channels-last, ``G`` lanes of
``act_bits`` per word, in one simple-dual-port memory (one read, one write per cycle), placed by
:mod:`~ternpe.hw.actmem`: ping-pong regions, or a sequential network's maps each overlapping the
one before it where no word still to be read is overwritten. A first layer with fewer input channels than lanes (``cin < G``) runs in
window mode: its lanes are filled from the input buffer's patch registers, so its lanes stay
busy without an im2col copy of the image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import MULT_BITS, SHIFT_BITS, requantize
from ternpe.cycles import broadcast_register, rows_per_group
from .array import PEArray
from .controller import Controller, OpTag
from .input import InputBuffer
from .plan import AcceleratorPlan, GenerateError, shortcut_lanes, write_elements
from .requant import Requantizer
from .weights import SparseTileWeightBuffer

__all__ = ["GenerateError", "Accelerator"]


def _log2(n: int) -> int:
    return n.bit_length() - 1


class Accelerator(wiring.Component):
    """The whole network on a ``P x G`` ternary array.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        What to build (:func:`ternpe.hw.plan.plan_accelerator`): the export on its array, and the
        device's :class:`~ternpe.hw.plan.AcceleratorOptions`:

        * ``spram``: the input banks in iCE40 UP5K SPRAMs;
        * ``index_in_logic``: the tile list as a LUT ROM (ECP5: faster than its block RAM's output);
        * ``ram_bank``: words per bank of the weight ROM and the activation memory (one block RAM
          deep on the device); a bank's read data is registered before the banks are muxed;
        * ``write_reg``: register stages on the activation write (ECP5: its block RAMs lie far from
          the write-back logic): 1 registers address, data and per-bank lane enables; 2 registers
          the address and data first and decides the bank from the registered address;
        * ``operand_reg``: each activation bank's data registered twice before the banks are muxed
          (the weights and the input word wait a stage with it), so the register that follows a
          block RAM can sit beside it while the next one goes to the PEs; the requantizer
          constants are then read a stage earlier and registered as they leave their block RAM.

        Each register stage adds a cycle to every layer's drain (``plan.drain``), which the plan's
        cycle model (``plan.cycles``) counts.

    Members
    -------
    input : In(stream.Signature(unsigned(act_bits)))
        The image, one pixel byte per transfer, ``(h, w, c)`` order.
    output : Out(stream.Signature(signed(out_bits)))
        The ``classes`` logits (integer, in units of the manifest's ``logit_scale``), then the
        class index.
    cycles : Out(32)
        Cycles from the start of compute (the image complete) to the class of the last inference.
    busy : Out(1)
        High while the controller runs the layers.
    tap_valid, tap_layer, tap_addr, tap_mask, tap_data : Out
        Debug tap of every activation write: lane ``l`` of ``tap_data`` (bits ``l*act_bits``),
        where ``tap_mask[l]`` is set, is element ``tap_addr*G + l`` of layer ``tap_layer``'s
        (pooled) output map, flattened ``(h, w, c)``. Lets a testbench name the first layer that
        differs. Not driven for the last layer, whose results are the logits.
    """

    def __init__(self, plan: AcceleratorPlan):
        if not isinstance(plan, AcceleratorPlan):
            raise TypeError(f"Accelerator takes an AcceleratorPlan (ternpe.hw.plan.plan_accelerator), "
                            f"not {type(plan).__name__}")
        self.plan = plan
        ex, g = plan.export, plan.geometry
        super().__init__({
            "input": In(stream.Signature(unsigned(plan.act_bits))),
            "output": Out(stream.Signature(signed(plan.out_bits))),
            "cycles": Out(32), "busy": Out(1),
            "tap_valid": Out(1), "tap_layer": Out(range(len(ex.layers))), "tap_addr": Out(24),
            "tap_mask": Out(g.G), "tap_data": Out(g.G * plan.act_bits),
        })

    def elaborate(self, platform):
        m = Module()
        ex, g = self.plan.export, self.plan.geometry
        m.submodules.weights = wb = SparseTileWeightBuffer(self.plan)
        m.submodules.array = arr = PEArray(geometry=g, act_bits=self.plan.act_bits, acc_bits=self.plan.acc_bits)
        m.submodules.inbuf = inb = InputBuffer(self.plan, adv_delay=3)
        m.submodules.ctrl = ctrl = Controller(self.plan, list_addr_bits=len(wb.entry_addr),
                                              word_addr_bits=len(wb.word_addr))
        m.d.comb += [wb.entry_addr.eq(ctrl.entry_addr), ctrl.entry.eq(wb.entry),
                     ctrl.win_ok.eq(inb.win_ok), inb.win_adv.eq(ctrl.win_adv)]
        wiring.connect(m, wiring.flipped(self.input), inb.input)
        act_wr, tags = self._operands(m, wb, arr, inb, ctrl)
        requants, tq = self._requantize(m, arr, act_wr, tags)
        logits = self._write_back(m, wb, requants, tq, act_wr)
        self._sequence(m, ctrl, inb, logits)
        return m

    def _operands(self, m, wb, arr, inb, ctrl):
        """The op register, the memory reads and the registered operands of the array."""
        ex, g, A = self.plan.export, self.plan.geometry, self.plan.act_bits
        depth, D = self.plan.act.depth, self.plan.options.ram_bank
        banks = []
        for b in range(0, depth, D):
            # a layer never reads the region it writes (nor does a shortcut): see _banked_read
            m.submodules[f"act{b // D}"] = mem = Memory(shape=g.G * A, depth=min(D, depth - b), init=[],
                                                        attrs={"no_rw_check": 1})
            banks.append(mem)
        # the op register: the controller's counters end here, the memories start here
        op = Signal.like(ctrl.op)
        m.d.sync += op.eq(ctrl.op)
        addr = Signal(len(op.act_addr))
        m.d.comb += [addr.eq(op.act_addr + op.col), inb.rd_addr.eq(addr),
                     wb.word_addr.eq(ctrl.op.word_addr)]    # a cycle ahead: the ROM's banks are registered
        # stage 1: memory data arrives and is registered as it is (block RAM outputs are slow: no
        # logic follows them); stage 2: the operands are chosen on the way into the PE's lane
        # terms (a padding read or an empty row zeroes the weight codes, not the activations)
        late = data.StructLayout({"valid": 1, "clear": 1, "last": 1, "inb": 1, "empty": 1, "j": len(op.j),
                                  "tag": OpTag(self.plan)})
        s1, s2 = Signal(late), Signal(late)
        m.d.sync += [getattr(s1, f).eq(getattr(op, f)) for f in ("valid", "clear", "last", "inb", "empty", "j", "tag")]
        r_w = Signal(g.word_bits)
        # registered in its bank (twice with operand_reg: the first register beside its block RAM),
        # muxed on the way on
        r_act = self._banked_read(m, banks, addr, "act", regs=2 if self.plan.options.operand_reg else 1)
        m.d.sync += [s2.eq(s1), r_w.eq(wb.word)]
        if self.plan.residual:
            self._shortcut_tags(m, op, s1, s2)
        if self.plan.window:
            m.d.comb += [inb.win_q.eq(s2.tag.q), inb.win_j.eq(s2.j)]
            first = inb.win_word
        else:
            first = Signal(g.G * A)
            m.d.sync += first.eq(inb.rd_data)
        if self.plan.options.operand_reg:                # everything else waits the activation's extra register
            s_d, w_d, first_d = Signal(late, name="s_op"), Signal(g.word_bits, name="r_w_d"), Signal(g.G * A, name="first_d")
            m.d.sync += [s_d.eq(s2), w_d.eq(r_w), first_d.eq(first)]
            s2, r_w, first = s_d, w_d, first_d
        act = Mux(s2.tag.layer == 0, first, r_act)
        weights = Mux(s2.inb & ~s2.empty, r_w, 0)
        if broadcast_register(g):
            s3, act_r, w_r = Signal(late), Signal(g.G * A), Signal(g.word_bits)
            m.d.sync += [s3.eq(s2), act_r.eq(act), w_r.eq(weights)]
            s2, act, weights = s3, act_r, w_r
        m.d.comb += [arr.valid.eq(s2.valid), arr.clear.eq(s2.clear), arr.last.eq(s2.last),
                     arr.act.eq(act), arr.weights.eq(weights)]
        return banks, [s2.tag]

    def _banked_read(self, m, banks, addr, name, regs: int = 1):
        """A read port on every bank of the activation memory at ``addr``: each bank's data is
        registered ``regs`` times as it leaves the block RAM (a second register lets the first sit
        beside the block RAM), and the banks are muxed after that. The result holds the word of
        ``addr`` ``1 + regs`` cycles later (combinational from registers)."""
        D = self.plan.options.ram_bank
        lg = _log2(D)
        outs = []
        for i, mem in enumerate(banks):
            # an asynchronous port and a register without reset after it, which Yosys merges into
            # the block RAM's synchronous read with collisions as don't-care (no_rw_check: a
            # layer never reads what it writes in the same cycle). Amaranth's own synchronous
            # port would ask for the old data on a collision, which Yosys emulates with a
            # bypass mux between the block RAM and the next register.
            rp = mem.read_port(domain="comb")
            m.d.comb += rp.addr.eq(addr[:max(1, (mem.depth - 1).bit_length())])
            q = rp.data
            for k in range(regs + 1):
                r = Signal(mem.shape, name=f"{name}_bank{i}" + "_r" * k, reset_less=True)
                m.d.sync += r.eq(q)
                q = r
            outs.append(q)
        if len(outs) == 1:
            return outs[0]
        sel = [Signal(range(len(outs)), name=f"{name}_sel{n}") for n in range(regs + 1)]
        m.d.sync += [sel[0].eq(addr >> lg)] + [b.eq(a) for a, b in zip(sel, sel[1:])]
        return Array(outs)[sel[-1]]

    def _shortcut_tags(self, m, op, s1, s2):
        """Where the shortcut of an op's row is (residual networks), filled into its tag in two
        stages after the op register: ``s1`` adds the row's first shortcut channel to the
        controller's pixel counter, ``s2`` takes the word and the lane rotation."""
        ex, g = self.plan.export, self.plan.geometry
        lg = max(1, _log2(g.G))
        first, rot_c, mask_c = Signal(16, name="sc_first_c"), Signal(lg, name="sc_rot_c"), Signal(g.P, name="sc_mask_c")
        with m.Switch(op.tag.layer):
            for i, l in enumerate(ex.layers):
                s = l.spec
                if s.residual is None:
                    continue
                ic = ex.layers[s.residual - 1].spec.cout
                with m.Case(i):
                    with m.Switch(op.tag.r):
                        for r, (lo, hi) in enumerate(shortcut_lanes(s, ic, g.P)):
                            off = s.shortcut_offset(ic)
                            with m.Case(r):
                                # an empty row reads the pixel's first channel (a real address), masked
                                m.d.comb += [first.eq(r * g.P + lo if hi > lo else off),
                                             rot_c.eq((r * g.P) % g.G),
                                             mask_c.eq(sum(1 << p for p in range(lo, hi)))]
        e_first, rot, mask = Signal.like(op.sc, name="sc_e1"), Signal(lg, name="sc_rot1"), Signal(g.P, name="sc_mask1")
        m.d.sync += [e_first.eq(op.sc + first), rot.eq(op.sc[:lg] + rot_c), mask.eq(mask_c)]
        m.d.sync += [s2.tag.sc_word.eq(e_first >> _log2(g.G)), s2.tag.sc_rot.eq(rot), s2.tag.sc_mask.eq(mask)]

    def _requantize(self, m, arr, banks, tags):
        """Requantizer constants (one ROM word of ``P`` channels per tile row) and the requantizers."""
        ex, P, L = self.plan.export, self.plan.geometry.P, len(self.plan.export.layers)
        tags, tag_layout = list(tags), OpTag(self.plan)
        for n in range(arr.latency):
            tg = Signal(tag_layout, name=f"tag_a{n}")
            m.d.sync += tg.eq(tags[-1])
            tags.append(tg)
        rows_all = [l.layout.rows for l in ex.layers]
        rq_base = [sum(rows_all[:i]) for i in range(L)]
        fields = {"mult": signed(MULT_BITS), "bias": signed(self.plan.bias_bits), "shift": unsigned(SHIFT_BITS)}
        if self.plan.residual:
            fields["res_mult"] = signed(MULT_BITS)

        def word(l, c):
            w = {"mult": int(l.requant.mult[c]), "bias": int(l.requant.bias[c]), "shift": int(l.requant.shift[c])}
            if self.plan.residual:
                w["res_mult"] = 0 if l.requant.res_mult is None else int(l.requant.res_mult[c])
            return w
        rq_layout = data.ArrayLayout(data.StructLayout(fields), P)
        rq_init = [rq_layout.const([word(l, r * P + p) for p in range(P)]).as_value().value
                   for l in ex.layers for r in range(l.layout.rows)]
        m.submodules.rqrom = rqrom = Memory(shape=rq_layout.size, depth=len(rq_init), init=rq_init)
        rq_rd = rqrom.read_port()
        # with operand_reg (ECP5) the constants are read a stage earlier and registered as they
        # leave the block RAM, which may lie far from the requantizers; no cycle is added
        early = 3 if self.plan.options.operand_reg and len(tags) >= 3 else 2
        pre = tags[-early]
        m.d.comb += rq_rd.addr.eq(Array(Const(b, 16) for b in rq_base + [0])[pre.layer] + pre.r)
        at_res = tags[-1]
        rq_data = rq_rd.data
        if early == 3:
            rq_data = Signal.like(rq_rd.data, name="rq_word", reset_less=True)
            m.d.sync += rq_data.eq(rq_rd.data)
        rq_words = data.View(rq_layout, rq_data)
        requants = [Requantizer(acc_bits=self.plan.acc_bits, bias_bits=self.plan.bias_bits, act_bits=self.plan.act_bits,
                                residual=self.plan.residual) for _ in range(P)]
        for p, rq in enumerate(requants):
            m.submodules[f"requant{p}"] = rq
            m.d.comb += [rq.valid.eq(arr.result_valid), rq.acc.eq(arr.result[p]), rq.mult.eq(rq_words[p].mult),
                         rq.bias.eq(rq_words[p].bias), rq.shift.eq(rq_words[p].shift),
                         rq.clamp.eq(at_res.layer != L - 1)]
        if self.plan.residual:
            # the shortcut: its word is read two stages ahead of the result and registered (no
            # logic after a block RAM output); the row's P lanes are rotated out of it and masked
            G, A = self.plan.geometry.G, self.plan.act_bits
            # as early as the pipeline allows (from s2, where the address is known): two registers
            # after each bank and one after their mux; a 1- or 2-lane array has fewer stages
            early = min(len(tags), 5)
            sc_word = self._banked_read(m, banks, tags[-early].sc_word, "sc", regs=1 + (early == 5))
            if early >= 4:
                reg = Signal(G * A, name="sc_word")
                m.d.sync += reg.eq(sc_word)
                sc_word = reg
            lanes = Array(sc_word[n * A:(n + 1) * A] for n in range(G))
            lg = max(1, _log2(G))
            for p, rq in enumerate(requants):
                lane = lanes[(at_res.sc_rot + p)[:lg]] if G > 1 else lanes[0]
                m.d.comb += [rq.sc.eq(Mux(at_res.sc_mask[p], lane, 0)), rq.res_mult.eq(rq_words[p].res_mult)]
        for n in range(Requantizer.latency):
            tg = Signal(tag_layout, name=f"tag_r{n}")
            m.d.sync += tg.eq(tags[-1])
            tags.append(tg)
        return requants, tags[-1]

    def _write_back(self, m, wb, requants, tq, act_wr):
        """Max-pool, the activation write (with constant rows filled in) and the logit registers."""
        ex, g, A = self.plan.export, self.plan.geometry, self.plan.act_bits
        P, G, L = g.P, g.G, len(ex.layers)
        res_valid = requants[0].out_valid
        mx = [Signal(A, name=f"max{p}") for p in range(P)]
        mx_new = [Signal(A, name=f"max_new{p}") for p in range(P)]
        for p in range(P):
            y = requants[p].out[:A]
            m.d.comb += mx_new[p].eq(Mux((tq.q == 0) | (y > mx[p]), y, mx[p]))
            with m.If(res_valid):
                m.d.sync += mx[p].eq(mx_new[p])
        # rows without tiles have constant outputs (the requantized bias); see tile_program
        last_l = ex.layers[-1]
        const_logits = requantize(np.zeros(self.plan.classes, np.int64), last_l.channel_requant(), relu=False,
                                  act_bits=A)
        empty_last = {c for r in wb.programs[-1].empty_rows for c in range(r * P, min((r + 1) * P, self.plan.classes))}
        lb = self.plan.logit_bits
        logits = [Signal(signed(lb), name=f"logit{c}", init=int(const_logits[c]) if c in empty_last else 0)
                  for c in range(self.plan.classes)]
        fill_mask, fill_data = Signal(G), Signal(G * A)
        # the element index of the result's pixel, counted in the activation memory itself (from the
        # layer's write base x G): restarts with a layer, steps by cout per pixel. e_next holds the
        # next pixel's index ahead, so the write address is one add (+ the row's channels).
        bases_e = [wbase * G for _, wbase in self.plan.layer_bases]
        depth_e = self.plan.act.depth * G + write_elements(ex) + 1
        e_wb, e_next, e_now = (Signal(range(depth_e), name=n) for n in ("e_wb", "e_next", "e_now"))
        first_e = Array(Const(b, len(e_wb)) for b in bases_e)[tq.layer]
        after_first = Array(Const(b + l.spec.cout, len(e_wb)) for b, l in zip(bases_e, ex.layers))[tq.layer]
        step = Array(Const(l.spec.cout, 16) for l in ex.layers)[tq.layer]
        new_pix = res_valid & tq.pix_first & (tq.q == 0)
        m.d.comb += e_now.eq(Mux(new_pix, Mux(tq.layer_first, first_e, e_next), e_wb))
        with m.If(new_pix):
            m.d.sync += [e_wb.eq(e_now), e_next.eq(Mux(tq.layer_first, after_first, e_next + step))]
        w_idx = Signal(len(e_wb) + 1)
        m.d.comb += w_idx.eq(e_now + (tq.r << _log2(P)))
        with m.Switch(tq.layer):
            for i, l in enumerate(ex.layers):
                s = l.spec
                with m.Case(i):
                    if i < L - 1:
                        rpg = rows_per_group(g, l.spec, False)
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
                                            if row * P + p < self.plan.classes and row * P + p not in empty_last:
                                                m.d.sync += logits[row * P + p].eq(requants[p].out[:lb])
        w_en = Signal()
        m.d.comb += w_en.eq(res_valid & tq.last_q & (tq.layer != L - 1))
        lane_mask = Signal(G)
        m.d.comb += lane_mask.eq((Const((1 << P) - 1, G) << w_idx[:max(1, _log2(G))] if G > 1 else 1) | fill_mask)
        wdata = Cat(*[Mux(fill_mask[gl], fill_data[gl * A:(gl + 1) * A], mx_new[gl % P]) for gl in range(G)])
        word = w_idx >> _log2(G)
        wbase = Array(Const(wbase, 24) for _, wbase in self.plan.layer_bases)[tq.layer]
        m.d.comb += [self.tap_valid.eq(w_en), self.tap_layer.eq(tq.layer), self.tap_addr.eq(word - wbase),
                     self.tap_mask.eq(lane_mask), self.tap_data.eq(wdata)]
        # write_reg stages on the write: the address arithmetic, the bank decision and the route
        # to a far block RAM get a cycle each (each adds a cycle of drain: see drain_cycles)
        lg = _log2(self.plan.options.ram_bank)
        w_en_d, w_word, w_data, w_mask = w_en, word, wdata, lane_mask
        if self.plan.options.write_reg == 2:
            w_en_d, w_word, w_data = Signal(name="w_en_r"), Signal.like(word, name="w_word_r"), Signal.like(wdata, name="w_data_r")
            w_mask = Signal(G, name="w_mask_r")
            m.d.sync += [w_en_d.eq(w_en), w_word.eq(word), w_data.eq(wdata), w_mask.eq(lane_mask)]
        a_word, a_data = Signal.like(word, name="w_word"), Signal.like(wdata, name="w_data")
        w_lanes = [Signal(G, name=f"w_en{i}") for i in range(len(act_wr))]
        dom = m.d.sync if self.plan.options.write_reg else m.d.comb
        dom += [a_word.eq(w_word), a_data.eq(w_data)]
        for i, mem in enumerate(act_wr):
            wp = mem.write_port(granularity=A)
            dom += w_lanes[i].eq(Mux(w_en_d & ((w_word >> lg) == i), w_mask, 0))
            m.d.comb += [wp.addr.eq(a_word[:max(1, (mem.depth - 1).bit_length())]), wp.data.eq(a_data),
                         wp.en.eq(w_lanes[i])]
        return logits

    def _sequence(self, m, ctrl, inb, logits):
        """Start an inference when the input buffer holds an image; argmax; the output stream."""
        classes = self.plan.classes
        cycles = Signal(32)
        counting = Signal()           # the argmax runs
        m.d.comb += [self.cycles.eq(cycles), self.busy.eq(ctrl.busy | counting)]
        with m.If(ctrl.busy | counting):
            m.d.sync += cycles.eq(cycles + 1)
        with m.Elif(ctrl.start):
            m.d.sync += cycles.eq(0)
        # argmax, two cycles a class: fetch (even) / compare the halves (odd) / update (even)
        n = Signal(range(2 * classes + 3))
        cand, cand_i = Signal.like(logits[0]), Signal(range(classes))
        best, best_i = Signal.like(logits[0]), Signal(range(classes))
        half = len(cand) // 2
        hi_gt, hi_eq, lo_gt, cmp_i = Signal(), Signal(), Signal(), Signal(range(classes))
        oi = Signal(range(classes + 1))
        cur = Signal.like(logits[0])
        m.d.comb += cur.eq(Array(logits)[oi] if classes > 1 else logits[0])
        with m.FSM(name="top"):
            with m.State("IDLE"):
                with m.If(inb.ready):
                    m.d.comb += [ctrl.start.eq(1), inb.start.eq(1)]
                    m.next = "COMPUTE"
            with m.State("COMPUTE"):
                with m.If(ctrl.done):
                    m.d.sync += n.eq(0)
                    m.next = "ARGMAX"
            with m.State("ARGMAX"):
                m.d.comb += counting.eq(1)
                m.d.sync += n.eq(n + 1)
                k = n >> 1
                with m.If(~n[0]):
                    m.d.sync += [cand.eq(Array(logits)[k] if classes > 1 else logits[0]), cand_i.eq(k)]
                    with m.If((n >= 2) & ((cmp_i == 0) | hi_gt | (hi_eq & lo_gt))):
                        m.d.sync += [best.eq(cand), best_i.eq(cmp_i)]
                with m.Else():
                    m.d.sync += [hi_gt.eq(cand[half:].as_signed() > best[half:].as_signed()),
                                 hi_eq.eq(cand[half:] == best[half:]), lo_gt.eq(cand[:half] > best[:half]),
                                 cmp_i.eq(cand_i)]
                with m.If(n == 2 * classes):
                    m.d.sync += oi.eq(0)
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += [self.output.valid.eq(1),
                             self.output.payload.eq(Mux(oi == classes, best_i, cur))]
                with m.If(self.output.ready):
                    m.d.sync += oi.eq(oi + 1)
                    with m.If(oi == classes):
                        m.d.comb += inb.release.eq(1)
                        m.next = "IDLE"
