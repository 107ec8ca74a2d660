"""The accelerator top: the blocks of an :class:`~ternpe.hw.plan.AcceleratorPlan`, joined.

The plan (:mod:`ternpe.hw.plan`) holds every number (tile programs, memory shapes, activation
placement, drain, cycle model); this module only elaborates it.

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
word (:class:`~ternpe.hw.writeback.WriteBack`). After a layer's last op the pipeline drains
for ``plan.drain`` cycles before the next layer reads what this one wrote. The last layer's
results stay in registers (:class:`~ternpe.hw.writeback.LogitRegisters`), and
:class:`~ternpe.hw.argmax.Argmax` streams them out with the class.

The image goes to the :class:`~ternpe.hw.input.InputBuffer` (two slots: the next image streams
in while this one computes). Hidden activations live channels-last, ``G`` lanes of
``act_bits`` per word, in one simple-dual-port memory (one read, one write per cycle), placed by
:mod:`~ternpe.hw.actmem`: ping-pong regions, or a sequential network's maps each overlapping the
one before it where no word still to be read is overwritten. A first layer with fewer input channels than lanes (``cin < G``) runs in
window mode: its lanes are filled from the input buffer's patch registers, so its lanes stay
busy without an im2col copy of the image.

With ``plan.images = N`` image lanes, everything after the controller and the weight ROM is built
``N`` times (input buffer, activation memory, PE array, requantizers, write-back, logits): the
lanes take the same op, weight word and tag in the same cycle and compute ``N`` images at once.
The input stream fills lane 0, 1, ... in turn; the layers start when every lane holds an image;
the argmax then runs over each lane's logits in turn (docs/accelerator.md, "Image lanes").
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import MULT_BITS, SHIFT_BITS
from ternpe.cycles import broadcast_register
from .argmax import Argmax
from .array import PEArray
from .controller import Controller, OpTag
from .input import InputBuffer
from .plan import ROM_LOGIC_BITS, AcceleratorPlan, GenerateError, log2 as _log2, shortcut_lanes
from .requant import Requantizer
from .weights import SparseTileWeightBuffer
from .writeback import LogitMemory, LogitRegisters, WriteBack

__all__ = ["GenerateError", "Accelerator", "AcceleratorProbes", "LaneCopies", "RomSlice", "KEEP_LANE_COPIES"]

#: Yosys command, run after the design is read, that keeps each image lane's :class:`LaneCopies`
#: and each :class:`RomSlice` a module of its own. Yosys merges flip-flops of equal inputs
#: (``opt_merge``), which would leave one copy driving every image lane (or every slice of the
#: requantizer ROM) across the die; it does not merge across a kept hierarchy.
#: (A ``keep`` on the flip-flops themselves, or a kept module per copy, stops Yosys 0.70's ABC
#: reintegration with an internal error on some networks.)
KEEP_LANE_COPIES = "setattr -mod -set keep_hierarchy 1 *.lane_copies* *.rqrom_slice*"


class LaneCopies(Elaboratable):
    """One image lane's registers of the values every lane registers alike (an op, a tag, a weight
    word, the requantizer constants), placed beside that lane; its submodule name starts with
    ``lane_copies`` (see :data:`KEEP_LANE_COPIES`). :meth:`copy` adds one."""

    def __init__(self):
        self._pairs = []

    def copy(self, value, shape, name: str, *, reset_less: bool = False):
        """A register of ``value`` (driven by the caller's module), reset to 0 unless ``reset_less``."""
        d, q = Signal(shape, name=f"{name}_d"), Signal(shape, name=name, reset_less=reset_less)
        self._pairs.append((d, q))
        return d, q

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [q.eq(d) for d, q in self._pairs]
        return m

def _constants(l, c, names) -> dict:
    """Channel ``c``'s requantizer constants in layer ``l`` (the fields ``names``)."""
    w = {"mult": int(l.requant.mult[c]), "bias": int(l.requant.bias[c]), "shift": int(l.requant.shift[c]),
         "res_mult": 0 if l.requant.res_mult is None else int(l.requant.res_mult[c])}
    return {k: w[k] for k in names}


class RomSlice(Elaboratable):
    """One channel's requantizer constants (``init``, a word per tile row) as a ROM in logic, read
    through its own copy of the address register: ``data`` holds the word of ``addr`` two cycles
    later. Its submodule name starts with ``rqrom_slice`` (kept apart: :data:`KEEP_LANE_COPIES`), so
    each slice's address register sits beside its LUTs and fans out to them alone."""

    def __init__(self, width: int, init: list):
        self._init = list(init)
        self.addr = Signal(max(1, (len(self._init) - 1).bit_length()))
        self.data = Signal(width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = mem = Memory(shape=len(self.data), depth=len(self._init), init=self._init,
                                        attrs={"ram_style": "logic"})
        rd = mem.read_port()
        copy = Signal.like(self.addr, name="addr_copy")
        m.d.sync += copy.eq(self.addr)
        m.d.comb += [rd.addr.eq(copy), self.data.eq(rd.data)]
        return m


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

    Attributes
    ----------
    probes : AcceleratorProbes
        Internal state read by the formal harness's inductive invariants (no port; unused in a
        build).
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
            "tap_mask": Out(plan.images * g.G), "tap_data": Out(plan.images * g.G * plan.act_bits),
        })
        self.probes = AcceleratorProbes(plan.images)

    def elaborate(self, platform):
        m = Module()
        g, N = self.plan.geometry, self.plan.images
        self._copies = [LaneCopies() for _ in range(N)] if N > 1 else []
        for e, c in enumerate(self._copies):
            m.submodules[_lane_name("lane_copies", e)] = c
        m.submodules.weights = wb = SparseTileWeightBuffer(self.plan)
        inbs = []
        for e in range(N):
            m.submodules[_lane_name("inbuf", e)] = inb = InputBuffer(self.plan, adv_delay=3, slack=N > 1)
            inbs.append(inb)
        m.submodules.ctrl = ctrl = Controller(self.plan, list_addr_bits=len(wb.entry_addr),
                                              word_addr_bits=len(wb.word_addr))
        # the image lanes run in lockstep: a patch is taken when every lane has gathered it
        m.d.comb += [wb.entry_addr.eq(ctrl.entry_addr), ctrl.entry.eq(wb.entry),
                     ctrl.win_ok.eq(Cat(inb.win_ok for inb in inbs).all())]
        m.d.comb += [inb.win_adv.eq(ctrl.win_adv) for inb in inbs]
        self._distribute(m, inbs)
        banks, tags, arrays = self._operands(m, wb, inbs, ctrl)
        requants, tq = self._requantize(m, arrays, banks, tags)
        logits = self._write_back(m, requants, tq, banks)
        self._sequence(m, ctrl, inbs, logits)
        return m

    def _distribute(self, m, inbs):
        """The input stream to the image lanes: image ``k`` of a batch to lane ``k``. The lanes lie
        far apart: ``input.ready`` is a register, set from the ``space`` (itself registered) of
        the lane the next pixel goes to, so no path runs from a lane to the producer."""
        if len(inbs) == 1:
            wiring.connect(m, wiring.flipped(self.input), inbs[0].input)
            return
        s0 = self.plan.export.layers[0].spec
        n_in = s0.in_h * s0.in_w * s0.cin
        lane, pixel = Signal(range(len(inbs)), name="fill_lane"), Signal(range(n_in), name="fill_pixel")
        ready, nxt = Signal(name="fill_ready"), Signal.like(lane, name="fill_next")
        take = self.input.valid & ready
        m.d.comb += [self.input.ready.eq(ready), nxt.eq(lane)]
        m.d.comb += [inb.input.payload.eq(self.input.payload) for inb in inbs]
        m.d.comb += [inb.input.valid.eq(take & (lane == e)) for e, inb in enumerate(inbs)]
        with m.If(take):
            m.d.sync += pixel.eq(pixel + 1)
            with m.If(pixel == n_in - 1):
                m.d.sync += pixel.eq(0)
                m.d.comb += nxt.eq(Mux(lane == len(inbs) - 1, 0, lane + 1))
        m.d.sync += lane.eq(nxt)
        with m.Switch(nxt):
            for e, inb in enumerate(inbs):
                with m.Case(e):
                    m.d.sync += ready.eq(inb.space)

    def _operands(self, m, wb, inbs, ctrl):
        """The op register, the memory reads and the registered operands of each lane's array."""
        ex, g, A = self.plan.export, self.plan.geometry, self.plan.act_bits
        depth, D = self.plan.act.depth, self.plan.options.ram_bank
        banks = [[] for _ in inbs]
        for e in range(len(inbs)):
            for b in range(0, depth, D):
                # a layer never reads the region it writes (nor does a shortcut): see _banked_read
                m.submodules[_lane_name(f"act{b // D}", e)] = mem = Memory(
                    shape=g.G * A, depth=min(D, depth - b), init=[], attrs={"no_rw_check": 1})
                banks[e].append(mem)
        # the op register: the controller's counters end here, the memories start here. Each image
        # lane has its own copy for its addresses (placed beside its memories)
        op = Signal.like(ctrl.op)
        m.d.sync += op.eq(ctrl.op)
        m.d.comb += wb.word_addr.eq(ctrl.op.word_addr)           # a cycle ahead: the ROM's banks are registered
        addrs = []
        for e, inb in enumerate(inbs):
            op_e = op
            if len(inbs) > 1:
                op_e = self._register(m, ctrl.op, _lane_name("op_lane", e), ctrl.op.shape(), lane=e)
            addr = Signal(len(op.act_addr), name=_lane_name("addr", e))
            m.d.comb += [addr.eq(op_e.act_addr + op_e.col), inb.rd_addr.eq(addr)]
            addrs.append(addr)
        # stage 1: memory data arrives and is registered as it is (block RAM outputs are slow: no
        # logic follows them); stage 2: the operands are chosen on the way into the PE's lane
        # terms (a padding read or an empty row zeroes the weight codes, not the activations)
        late = data.StructLayout({"valid": 1, "clear": 1, "last": 1, "inb": 1, "empty": 1, "j": len(op.j),
                                  "tag": OpTag(self.plan)})
        s1, s2 = Signal(late), Signal(late)
        m.d.sync += [getattr(s1, f).eq(getattr(op, f)) for f in ("valid", "clear", "last", "inb", "empty", "j", "tag")]
        r_w = Signal(g.word_bits, reset_less=True)
        # registered in its bank (twice with operand_reg: the first register beside its block RAM),
        # muxed on the way on
        regs = 2 if self.plan.options.operand_reg else 1
        r_acts = [self._banked_read(m, bk, a, _lane_name("act", e), regs=regs) for e, (bk, a) in enumerate(zip(banks, addrs))]
        m.d.sync += [s2.eq(s1), r_w.eq(wb.word)]
        if self.plan.residual:
            self._shortcut_tags(m, op, s1, s2)
        firsts = []
        for e, inb in enumerate(inbs):
            if self.plan.window:
                q, j = s2.tag.q, s2.j
                if len(inbs) > 1:       # the patch's lane select from a register of the lane's own
                    q = self._register(m, s1.tag.q, _lane_name("win_q", e), s1.tag.q.shape(), lane=e)
                    j = self._register(m, s1.j, _lane_name("win_j", e), s1.j.shape(), lane=e)
                m.d.comb += [inb.win_q.eq(q), inb.win_j.eq(j)]
                firsts.append(inb.win_word)
            else:
                first = Signal(g.G * A, name=_lane_name("first", e), reset_less=True)
                m.d.sync += first.eq(inb.rd_data)
                firsts.append(first)
        s_pre = s1                                       # the stage before s2 (s2 is it, registered)
        if self.plan.options.operand_reg:                # everything else waits the activation's extra register
            s_d, w_d = Signal(late, name="s_op"), Signal(g.word_bits, name="r_w_d", reset_less=True)
            m.d.sync += [s_d.eq(s2), w_d.eq(r_w)]
            s_pre, s2, r_w = s2, s_d, w_d
            firsts = [self._register(m, f, _lane_name("first_d", e), reset_less=True) for e, f in enumerate(firsts)]
        if len(inbs) > 1:       # each lane's input-or-memory select from a register of its own (s2's layer is 0)
            sel = [self._register(m, s_pre.tag.layer == 0, _lane_name("first_sel", e), lane=e) for e in range(len(inbs))]
        else:
            sel = [s2.tag.layer == 0]
        acts = [Mux(f_sel, first, r_act) for f_sel, first, r_act in zip(sel, firsts, r_acts)]
        weights = Mux(s2.inb & ~s2.empty, r_w, 0)
        if broadcast_register(g):
            s3, w_r = Signal(late), Signal(g.word_bits, reset_less=True)
            m.d.sync += [s3.eq(s2), w_r.eq(weights)]
            s2, weights = s3, w_r
            acts = [self._register(m, a, _lane_name("act_r", e), reset_less=True) for e, a in enumerate(acts)]
        ops, lane_w = [s2] * len(acts), [weights] * len(acts)
        if len(acts) > 1:           # each lane registers what it shares with the others, beside its PEs
            ops = [self._register(m, s2, _lane_name("s_lane", e), late, lane=e) for e in range(len(acts))]
            lane_w = [self._register(m, weights, _lane_name("w_lane", e), lane=e, reset_less=True) for e in range(len(acts))]
            acts = [self._register(m, a, _lane_name("act_lane", e)) for e, a in enumerate(acts)]
        arrays = []
        for e, (act, s_e, w_e) in enumerate(zip(acts, ops, lane_w)):
            m.submodules[_lane_name("array", e)] = arr = PEArray(geometry=g, act_bits=A, acc_bits=self.plan.acc_bits)
            m.d.comb += [arr.valid.eq(s_e.valid), arr.clear.eq(s_e.clear), arr.last.eq(s_e.last),
                         arr.act.eq(act), arr.weights.eq(w_e)]
            arrays.append(arr)
        return banks, [ops[0].tag], arrays

    def _register(self, m, value, name, shape=None, lane=None, reset_less=False):
        """``value`` registered. ``lane``: image lane ``lane``'s copy of a value every lane
        registers alike, in its :class:`LaneCopies` (which synthesis keeps apart from the others)."""
        shape = shape if shape is not None else len(value)
        if lane is not None:
            d, q = self._copies[lane].copy(value, shape, name, reset_less=reset_less)
            m.d.comb += d.eq(value)
            return q
        r = Signal(shape, name=name, reset_less=reset_less)
        m.d.sync += r.eq(value)
        return r

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

    def _rom_slices(self, m, fields, addr):
        """The requantizer constants as ``P`` :class:`RomSlice` s, one per channel, each registering
        ``addr`` (the row's address, a stage before it is read) itself; their words, channel 0 first."""
        ex, P = self.plan.export, self.plan.geometry.P
        ch, words = data.StructLayout(fields), []
        for p in range(P):
            init = [ch.const(_constants(l, r * P + p, fields)).as_value().value
                    for l in ex.layers for r in range(l.layout.rows)]
            m.submodules[f"rqrom_slice{p}"] = sl = RomSlice(ch.size, init)
            m.d.comb += sl.addr.eq(addr)
            words.append(sl.data)
        return Cat(*words)

    def _requantize(self, m, arrays, banks, tags):
        """Requantizer constants (one ROM word of ``P`` channels per tile row, shared by the image
        lanes) and each lane's requantizers."""
        ex, P, L = self.plan.export, self.plan.geometry.P, len(self.plan.export.layers)
        tags, tag_layout = list(tags), OpTag(self.plan)
        for n in range(arrays[0].latency):
            tg = Signal(tag_layout, name=f"tag_a{n}")
            m.d.sync += tg.eq(tags[-1])
            tags.append(tg)
        rows_all = [l.layout.rows for l in ex.layers]
        rq_base = [sum(rows_all[:i]) for i in range(L)]
        # with requant_bram (iCE40) the bias and shift are a ROM of their own, read where the
        # requantizer adds them (Requantizer.LATE cycles on): no register carries them there
        late = self.plan.options.requant_bram
        early_fields = {"mult": signed(MULT_BITS)}
        late_fields = {"bias": signed(self.plan.bias_bits), "shift": unsigned(SHIFT_BITS)}
        if self.plan.residual:
            early_fields["res_mult"] = signed(MULT_BITS)
        fields = early_fields if late else {**early_fields, **late_fields}

        def rom(name, flds):
            layout = data.ArrayLayout(data.StructLayout(flds), P)
            init = [layout.const([_constants(l, r * P + p, flds) for p in range(P)]).as_value().value
                    for l in ex.layers for r in range(l.layout.rows)]
            # in block RAM, as the resource model counts it, where Yosys might map it to logic: with
            # requant_bram, and on a wide array (a word past 8 block RAM widths: in logic, the 1,008-bit
            # word of 16x16 is thousands of LUTs on one address register, 84.93 MHz on the ULX3S)
            block = late or layout.size > ROM_LOGIC_BITS    # (past it on ECP5: sliced, below)
            m.submodules[name] = mem = Memory(shape=layout.size, depth=len(init), init=init,
                                              attrs={"ram_style": "block"} if block else {})
            return layout, mem.read_port()

        def address(tag):
            return Array(Const(b, 16) for b in rq_base + [0])[tag.layer] + tag.r

        def addressed(port, chain, at, name):
            """``port`` reads the row of ``chain[at]``'s tag; the address (a layer's base from a
            table, plus its row) is computed a stage earlier and registered, where that stage exists"""
            if at == 0:
                m.d.comb += port.addr.eq(address(chain[0]))
                return
            reg = Signal(len(port.addr), name=name)
            m.d.sync += reg.eq(address(chain[at - 1]))
            m.d.comb += port.addr.eq(reg)
        # with operand_reg (ECP5) the constants are read a stage earlier and registered as they
        # leave the block RAM, which may lie far from the requantizers; no cycle is added
        # image lanes: each registers the constants once more, beside its requantizers
        lanes = len(arrays) > 1
        early = (3 if self.plan.options.operand_reg and len(tags) >= 3 + lanes else 2) + lanes
        at = len(tags) - early
        if self.plan.requant_sliced:    # a ROM per channel, each on its own copy of the address register
            assert at > 0, "a sliced requantizer ROM needs a pipeline stage before its address"
            rq_layout = data.ArrayLayout(data.StructLayout(fields), P)
            nxt = Signal(16, name="rq_addr_next")      # computed once, registered by every slice
            m.d.comb += nxt.eq(address(tags[at - 1]))
            rq_read = self._rom_slices(m, fields, nxt)
        else:
            rq_layout, rq_rd = rom("rqrom", fields)
            addressed(rq_rd, tags, at, "rq_addr")
            rq_read = rq_rd.data
        at_res = tags[-1]
        rq_data = rq_read
        if early - lanes == 3:
            rq_data = Signal(len(rq_read), name="rq_word", reset_less=True)
            m.d.sync += rq_data.eq(rq_read)
        after = []              # the tag as it follows the result down the requantizer
        for n in range(Requantizer.latency):
            tg = Signal(tag_layout, name=f"tag_r{n}")
            m.d.sync += tg.eq(after[-1] if after else at_res)
            after.append(tg)
        if late:                # read a cycle (and a lane register) before the bias is added
            late_layout, late_rd = rom("rqrom_late", late_fields)
            addressed(late_rd, tags + after, len(tags) + Requantizer.LATE - 2 - lanes, "rq_late_addr")
        requants = []
        for e, arr in enumerate(arrays):
            lane_data = rq_data
            if lanes:
                lane_data = self._register(m, rq_data, _lane_name("rq_lane", e), lane=e, reset_less=True)
            rq_words = data.View(rq_layout, lane_data)
            if late:
                late_data = late_rd.data
                if lanes:
                    late_data = self._register(m, late_rd.data, _lane_name("rq_late_lane", e), lane=e,
                                               reset_less=True)
                late_words = data.View(late_layout, late_data)
            lane_rqs = [Requantizer(acc_bits=self.plan.acc_bits, bias_bits=self.plan.bias_bits,
                                    act_bits=self.plan.act_bits, residual=self.plan.residual, late_constants=late)
                        for _ in range(P)]
            for p, rq in enumerate(lane_rqs):
                m.submodules[_lane_name(f"requant{p}", e)] = rq
                consts = late_words[p] if late else rq_words[p]
                m.d.comb += [rq.valid.eq(arr.result_valid), rq.acc.eq(arr.result[p]), rq.mult.eq(rq_words[p].mult),
                             rq.bias.eq(consts.bias), rq.shift.eq(consts.shift), rq.clamp.eq(at_res.layer != L - 1)]
            if self.plan.residual:
                self._shortcut(m, lane_rqs, banks[e], tags, rq_words, e)
            requants.append(lane_rqs)
        return requants, after[-1]

    def _shortcut(self, m, requants, banks, tags, rq_words, e):
        """The shortcut of image lane ``e``: its word is read two stages ahead of the result and
        registered (no logic after a block RAM output); the row's P lanes are rotated out of it
        and masked."""
        G, A = self.plan.geometry.G, self.plan.act_bits
        at_res = tags[-1]
        # as early as the pipeline allows (from s2, where the address is known): two registers
        # after each bank and one after their mux; a 1- or 2-lane array has fewer stages
        early = min(len(tags), 5)
        sc_word = self._banked_read(m, banks, tags[-early].sc_word, _lane_name("sc", e), regs=1 + (early == 5))
        if early >= 4:
            sc_word = self._register(m, sc_word, _lane_name("sc_word", e))
        lanes = Array(sc_word[n * A:(n + 1) * A] for n in range(G))
        lg = max(1, _log2(G))
        for p, rq in enumerate(requants):
            lane = lanes[(at_res.sc_rot + p)[:lg]] if G > 1 else lanes[0]
            m.d.comb += [rq.sc.eq(Mux(at_res.sc_mask[p], lane, 0)), rq.res_mult.eq(rq_words[p].res_mult)]

    def _write_back(self, m, requants, tq, banks):
        """Each lane's results into its activation memory's banks (and the debug tap), or into its
        logits."""
        A, lb, G = self.plan.act_bits, self.plan.logit_bits, self.plan.geometry.G
        logits = []
        for e, (rqs, lane_banks) in enumerate(zip(requants, banks)):
            valid, tag, outs = rqs[0].out_valid, tq, [rq.out for rq in rqs]
            # the logits take writes only while the layers run (``open``, registered: a cycle after
            # the top sequencer's COMPUTE), never while the argmax reads them
            if len(requants) > 1:       # each lane registers the tag beside its write-back (and its results with it)
                valid = self._register(m, valid, _lane_name("wb_valid", e), lane=e)
                tag_open = data.StructLayout({"tag": tq.shape(), "open": 1})
                both = self._register(m, Cat(tq, self.probes.computing), _lane_name("wb_tag", e), tag_open,
                                      lane=e)
                tag, opened = both.tag, both.open
                outs = [self._register(m, o, _lane_name(f"wb_y{p}", e), o.shape(), reset_less=True) for p, o in enumerate(outs)]
            else:
                opened = self._register(m, self.probes.computing, "logits_open")
            m.submodules[_lane_name("writeback", e)] = wr = WriteBack(self.plan)
            ram = self.plan.options.logit_ram
            m.submodules[_lane_name("logits", e)] = lg = (LogitMemory if ram else LogitRegisters)(self.plan)
            m.d.comb += [self.probes.open[e].eq(opened), wr.valid.eq(valid), wr.tag.eq(tag),
                         lg.valid.eq(valid & opened), lg.tag.eq(tag)]
            m.d.comb += [wr.y[p].eq(o[:A]) for p, o in enumerate(outs)]
            m.d.comb += [lg.y[p].eq(o[:lb]) for p, o in enumerate(outs)]
            if e == 0:      # the lanes write in lockstep: one valid, layer and address
                m.d.comb += [self.tap_valid.eq(wr.tap_valid), self.tap_layer.eq(wr.tap_layer),
                             self.tap_addr.eq(wr.tap_addr)]
            m.d.comb += [self.tap_mask[e * G:(e + 1) * G].eq(wr.tap_mask),
                         self.tap_data[e * G * A:(e + 1) * G * A].eq(wr.tap_data)]
            for i, mem in enumerate(lane_banks):
                wp = mem.write_port(granularity=A)
                m.d.comb += [wp.addr.eq(wr.wr_addr[:max(1, (mem.depth - 1).bit_length())]), wp.data.eq(wr.wr_data),
                             wp.en.eq(wr.wr_en[i])]
            logits.append(lg)
        return logits

    def _sequence(self, m, ctrl, inbs, logits):
        """Start when every image lane holds an image; then the argmax of each lane in turn and the
        output stream; count the cycles from the start to the last class."""
        plan, N = self.plan, len(inbs)
        m.submodules.argmax = am = Argmax(classes=plan.classes, logit_bits=plan.logit_bits, out_bits=plan.out_bits)
        lane = Signal(range(max(N, 2)), name="result_lane")     # no register left at N = 1: never read
        if plan.options.logit_ram:      # each lane's memory reads the class the argmax fetches
            m.d.comb += [lg.fetch.eq(am.fetch) for lg in logits]
            m.d.comb += [am.logit.eq(Array(lg.logit for lg in logits)[lane] if N > 1 else logits[0].logit),
                         self.probes.argmax_logits_held.eq(1)]
        else:       # the class fetched is registered, then the logits are muxed
            at = Signal.like(am.fetch, name="logit_at")
            m.d.sync += at.eq(am.fetch)
            if N == 1:
                m.d.comb += [am.logit.eq(logits[0].logits[at]), self.probes.argmax_logits_held.eq(1)]
            else:   # the lane's logits are registered before its argmax: no mux over the lanes in its path
                chosen = Signal.like(logits[0].logits, name="lane_logits")
                m.d.comb += am.logit.eq(chosen[at])
                with m.Switch(lane):
                    for e, lg in enumerate(logits):
                        with m.Case(e):
                            m.d.sync += chosen.eq(lg.logits)
                            m.d.comb += self.probes.argmax_logits_held.eq(chosen.as_value() == lg.logits.as_value())
        wiring.connect(m, am.output, wiring.flipped(self.output))
        pr = self.probes
        m.d.comb += [pr.argmax_active.eq(am.busy | am.output.valid), pr.lane_in_range.eq(lane < N)]
        cycles = Signal(32)
        m.d.comb += [self.cycles.eq(cycles), self.busy.eq(ctrl.busy | am.busy)]
        with m.If(ctrl.busy | am.busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.Elif(ctrl.start):
            m.d.sync += cycles.eq(0)
        with m.FSM(name="top") as top:
            with m.State("IDLE"):
                with m.If(Cat(inb.ready for inb in inbs).all()):
                    if N == 1:
                        m.d.comb += [ctrl.start.eq(1), inbs[0].start.eq(1)]
                        m.next = "COMPUTE"
                    else:       # the lanes lie far apart: start them from a register
                        m.next = "START"
            with m.State("START"):
                m.d.comb += [ctrl.start.eq(1)] + [inb.start.eq(1) for inb in inbs]
                m.next = "COMPUTE"
            with m.State("COMPUTE"):
                with m.If(ctrl.done):
                    if N == 1:
                        m.d.comb += am.start.eq(1)
                        m.next = "RESULT"
                    else:
                        m.d.sync += lane.eq(0)
                        m.next = "NEXT"
            with m.State("RESULT"):
                with m.If(am.done):
                    with m.If(lane == N - 1 if N > 1 else 1):
                        if N == 1:
                            m.d.comb += inbs[0].release.eq(1)
                            m.next = "IDLE"
                        else:   # released from a register
                            m.next = "RELEASE"
                    with m.Else():
                        m.d.sync += lane.eq(lane + 1)
                        m.next = "NEXT"
            with m.State("NEXT"):           # the lane's logits are registered: its argmax starts
                m.d.comb += am.start.eq(1)
                m.next = "RESULT"
            with m.State("RELEASE"):
                m.d.comb += [inb.release.eq(1) for inb in inbs]
                m.next = "IDLE"
        m.d.comb += [pr.computing.eq(top.ongoing("COMPUTE")), pr.result.eq(top.ongoing("RESULT"))]


class AcceleratorProbes:
    """Signals of an :class:`Accelerator`'s state that its formal harness reads
    (:class:`ternpe.hw.formal.OutputStreamCheck`):

    * ``computing``: the top sequencer runs the layers (state ``COMPUTE``);
    * ``result``: it waits for the argmax of a lane (state ``RESULT``);
    * ``open[e]``: image lane ``e``'s logit registers take writes (``computing``, registered in
      the lane);
    * ``argmax_active``: the argmax compares or sends;
    * ``argmax_logits_held``: the logits the argmax reads are those of the lane it is on (at one
      lane, always; with lanes, its register holds that lane's logits);
    * ``lane_in_range``: the lane the argmax is on is one of the ``images`` lanes.
    """

    def __init__(self, images: int):
        self.computing, self.result = Signal(name="pr_computing"), Signal(name="pr_result")
        self.open = [Signal(name=_lane_name("pr_open", e)) for e in range(images)]
        self.argmax_active, self.argmax_logits_held = Signal(name="pr_argmax_active"), Signal(name="pr_held")
        self.lane_in_range = Signal(name="pr_lane_in_range")


def _lane_name(name: str, lane: int) -> str:
    """A block of image lane ``lane``: lane 0 keeps the plain name."""
    return name if lane == 0 else f"{name}_i{lane}"
