"""Formal harnesses: three properties of the real blocks, for SymbiYosys and the solver Boolector.

Each harness below is a :class:`wiring.Component` whose ``In`` members are free inputs of the
proof (the solver picks every value, every cycle) and which wraps the real block: the PE, the
accelerator, the host link. The properties are Amaranth ``Assert`` / ``Assume`` / ``Cover``
statements; :func:`ternpe.flow.formal.run_formal` writes a harness as RTLIL (so the ``$check``
cells reach Yosys as they are), a ``.sby`` script, runs ``yowasp-sby`` on one process and reports
PASS / FAIL.

* :class:`PEOverflowCheck`: the accumulator of :class:`~ternpe.hw.pe.TernaryPE`, at the width
  :func:`contract_acc_bits` gives for sums of up to ``words`` words, never wraps: every result
  equals the exact (64-bit) sum of its terms. Proved by k-induction.
* :class:`OutputStreamCheck`: the accelerator's ``output`` stream keeps ``valid`` and ``payload``
  while ``ready`` is low. Proved by k-induction.
* :class:`HostLinkResponseCheck`: the host link, busy, is never silent (no byte taken, none sent)
  for ``bound`` cycles. Bounded (bmc) over a request and the bound.

In every harness the reset input is held low (the initial state is the reset state: every
register starts at its ``init``). Amaranth 0.5 has no ``Past()``: the harnesses keep registered
copies of what they compare across cycles.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq
from amaranth.hdl import Assert, Assume, C, Cat, Cover, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.contract import CODE_MINUS, CODE_PLUS, LayerSpec, accumulator_bits, signed_bits
from ternpe.link import CMD_INFER, request_length
from .accelerator import Accelerator
from .hostlink import WATCHDOG_MARGIN, HostLink
from .pe import TernaryPE, check_pe_shape

__all__ = ["contract_acc_bits", "PEOverflowCheck", "OutputStreamCheck", "HostLinkResponseCheck", "hostlink_bound"]

#: Width of the harness's exact ("shadow") sums: far wider than any accumulator.
SHADOW_BITS = 64


def contract_acc_bits(lanes: int, act_bits: int, words: int) -> int:
    """The contract's accumulator width for a sum of ``words`` words of ``lanes`` lanes: that of
    a layer whose fan-in is ``words * lanes`` (:func:`ternpe.contract.accumulator_bits`)."""
    return accumulator_bits(LayerSpec("sum", "fc", cin=words * lanes, cout=1), act_bits)


class PEOverflowCheck(wiring.Component):
    """The PE's accumulator never overflows at the contract's width.

    The driver (assumed): every sum starts with ``clear`` and holds at most ``words`` valid
    words; between its words any number of idle cycles. ``act``, ``code`` and, on idle cycles,
    the flags are free. The harness sums each word's terms itself from ``act`` and ``code``
    (pairwise, in the order of the PE's tree, which is what lets the solver match the two sums
    quickly), delays them by the PE's latency and keeps the exact 64-bit sum. Asserted:

    * the property: when ``result_valid``, ``result`` (sign-extended) equals the exact sum of its
      sum's terms; and ``result_valid`` comes exactly ``latency`` cycles after a word with ``last``;
    * with ``invariants`` (what makes k-induction close): the PE's accumulator register equals
      the exact running sum, whose magnitude is at most ``words so far * lanes * (2**act_bits - 1)``,
      and ``result`` always equals the last exact result. The accumulator is the PE's own
      register ``acc``, read from its elaborated fragment (the PE does not export it).

    Proved by k-induction with k = :attr:`prove_depth`; :attr:`bmc_depth` covers a whole sum
    from reset, which is where one bit less must fail. The driver assumption is stated at the accumulator (on the harness's delayed copies of the
    flags), which constrains the same input sequences, ``latency - 1`` cycles later.

    Parameters
    ----------
    lanes, act_bits : int
        The PE's.
    words : int
        ``N``, the most words in one sum.
    acc_bits : int or None
        The accumulator width; ``None``: :func:`contract_acc_bits`. One less must fail.
    invariants : bool
        Assert the inductive invariants too (off to show that the property alone fails).

    Members
    -------
    valid, clear, last : In(1)
    act : In(ArrayLayout(unsigned(act_bits), lanes))
    code : In(ArrayLayout(unsigned(2), lanes))
        The PE's inputs, free.
    """

    def __new__(cls, *, lanes: int, act_bits: int, words: int, acc_bits: int | None = None, **kwargs):
        # checked before the harness exists, so a rejected one is never left unused
        if words < 1:
            raise ValueError(f"words must be >= 1, not {words}")
        check_pe_shape(lanes, act_bits, contract_acc_bits(lanes, act_bits, words) if acc_bits is None else acc_bits)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, lanes: int, act_bits: int, words: int, acc_bits: int | None = None,
                 invariants: bool = True):
        self.lanes, self.act_bits, self.words = lanes, act_bits, words
        self.acc_bits = contract_acc_bits(lanes, act_bits, words) if acc_bits is None else acc_bits
        self.invariants = invariants
        self.pe = TernaryPE(lanes=lanes, act_bits=act_bits, acc_bits=self.acc_bits)
        super().__init__({"valid": In(1), "clear": In(1), "last": In(1),
                          "act": In(data.ArrayLayout(unsigned(act_bits), lanes)),
                          "code": In(data.ArrayLayout(unsigned(2), lanes))})

    @property
    def prove_depth(self) -> int:
        """k of the k-induction: the PE's pipelines flush in ``latency - 1`` cycles, after which
        the invariants carry over one cycle (``latency`` is enough; one more for margin)."""
        return self.pe.latency + 1

    @property
    def bmc_depth(self) -> int:
        """Cycles from reset through a whole sum of ``words`` words to its result, and 2 more."""
        return self.words + self.pe.latency + 2

    @property
    def term_max(self) -> int:
        """Largest magnitude of one word's terms: ``lanes * (2**act_bits - 1)``."""
        return self.lanes * ((1 << self.act_bits) - 1)

    def elaborate(self, platform):
        m = Module()
        pe, N, M = self.pe, self.words, self.term_max
        acc = pe.accumulator
        m.submodules.pe = pe
        m.d.comb += [pe.valid.eq(self.valid), pe.clear.eq(self.clear), pe.last.eq(self.last),
                     pe.act.eq(self.act), pe.code.eq(self.code)]
        m.d.comb += Assume(~ResetSignal())

        # this word's terms, summed here exactly; pairwise, in the order of the PE's tree and
        # with its carry-ins (a minus term as -x - 1, plus 1): the solver proves equal sums of
        # the same association quickly, of another association (a chain) very slowly from 16
        # lanes on
        tsum = Signal(signed(signed_bits(-M - self.lanes, M)))    # the sum less the last owed bit
        xs = [Cat(self.act[g], C(0, 1)) for g in range(self.lanes)]
        terms = [Mux(self.code[g] == CODE_PLUS, x, Mux(self.code[g] == CODE_MINUS, ~x, 0)).as_signed()
                 for g, x in enumerate(xs)]
        minus = [t[-1] for t in terms]
        while len(terms) > 1:
            terms = [(terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]) + (minus.pop() if minus else 0)
                     for i in range(0, len(terms), 2)]
        owed = Signal()                                # the +1 the accumulator adds, as the PE's does
        m.d.comb += [tsum.eq(terms[0]), owed.eq(minus[0] if minus else 0)]
        # delayed to the accumulator: the PE adds a word latency - 1 cycles after it came in
        v, c, l, t, o = self.valid, self.clear, self.last, tsum, owed
        for n in range(pe.latency - 1):
            vd, cd, ld, td, od = Signal(name=f"v_d{n}"), Signal(name=f"c_d{n}"), Signal(name=f"l_d{n}"), \
                Signal.like(tsum, name=f"t_d{n}"), Signal(name=f"o_d{n}")
            m.d.sync += [vd.eq(v), cd.eq(c), ld.eq(l), td.eq(t), od.eq(o)]
            v, c, l, t, o = vd, cd, ld, td, od

        exact = Signal(signed(SHADOW_BITS))            # the exact running sum
        exact_next = Signal(signed(SHADOW_BITS))
        exact_res = Signal(signed(SHADOW_BITS))        # the exact sum of the last result
        count = Signal(range(N + 1))                   # words in `exact` since its clear
        open_ = Signal()                               # a sum is open (cleared, not yet ended)
        res_valid = Signal()                           # when result_valid must be high
        m.d.comb += exact_next.eq(Mux(c, 0, exact) + t + o)
        # the driver: a word without clear continues an open sum of fewer than N words
        m.d.comb += Assume(~(v & ~c & (~open_ | (count == N))))
        with m.If(v):
            m.d.sync += [exact.eq(exact_next), count.eq(Mux(c, 1, count + 1)), open_.eq(~l)]
        with m.If(v & l):
            m.d.sync += exact_res.eq(exact_next)
        m.d.sync += res_valid.eq(v & l)

        m.d.comb += Assert(pe.result_valid == res_valid)
        with m.If(pe.result_valid):
            m.d.comb += Assert(pe.result == exact_res)
        if self.invariants:
            m.d.comb += [Assert(acc == exact), Assert(count <= N), Assert(pe.result == exact_res),
                         Assert(exact <= count * M), Assert(exact >= -(count * M))]
        # a full-length sum at the positive extreme reaches the result
        m.d.comb += Cover(pe.result_valid & (exact_res == N * M))
        return m


class OutputStreamCheck(wiring.Component):
    """The accelerator's output stream keeps ``valid`` and ``payload`` until ``ready``.

    Asserted: if ``output.valid`` and not ``output.ready`` in a cycle, then in the next cycle
    ``output.valid`` is still 1 and ``output.payload`` is unchanged. Covered: ``output.valid``, and
    a stall (``valid`` without ``ready``), so the assertion's premise is reachable. The input
    stream (``valid``, ``payload``) and ``output.ready`` are free.

    Proved by k-induction (k = :attr:`prove_depth`), so for every cycle after reset, any number
    of inferences. The payload is the argmax's choice of the logits it reads (or its class);
    nothing changes them while it sends: the inductive invariants (over
    :class:`~ternpe.hw.accelerator.AcceleratorProbes`) say so:

    * while the argmax compares or sends, the top sequencer waits for it (``RESULT``), so the
      layers do not run;
    * while it sends (with image lanes: while it compares too), no lane's logit registers take
      writes (they are open only a cycle after the layers ran);
    * with image lanes: the lane it is on is a lane, and the register it reads holds that lane's
      logits.

    Without them the induction's counterexample starts from a state the accelerator never
    reaches (the argmax sending while the layers run and rewrite the logits); with
    ``invariants=False`` the check is bmc from reset over :attr:`bmc_depth` cycles.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
    invariants : bool
        Assert the inductive invariants.

    Members
    -------
    input : In(stream.Signature(unsigned(act_bits)))
        The accelerator's input stream, free.
    output_ready : In(1)
        The output stream's ``ready``, free.
    """

    def __init__(self, plan, *, invariants: bool = True):
        self.plan, self.invariants = plan, invariants
        self.acc = Accelerator(plan)
        super().__init__({"input": In(stream.Signature(unsigned(plan.act_bits))), "output_ready": In(1)})

    @property
    def prove_depth(self) -> int:
        """k of the k-induction: the invariants carry over one cycle; one more for margin. With the
        logits in block RAM one more: the payload is read a cycle before it is sent, and the
        logits' last write may fall in the argmax's first cycle (its fetch of class 0), which no
        invariant covers at one image lane."""
        return 3 if self.plan.options.logit_ram else 2

    @property
    def bmc_depth(self) -> int:
        """Cycles from reset to the last output transfer of the first inference when the input
        streams in one pixel a cycle and the output is always ready (the cycle model's latency),
        plus a margin of 4: the depth the covers need."""
        return self.plan.cycles["latency"] + 4

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = self.acc
        wiring.connect(m, wiring.flipped(self.input), acc.input)
        out, pr = acc.output, acc.probes
        m.d.comb += [out.ready.eq(self.output_ready), Assume(~ResetSignal())]
        stalled, payload = Signal(), Signal.like(out.payload)       # last cycle's
        m.d.sync += [stalled.eq(out.valid & ~out.ready), payload.eq(out.payload)]
        with m.If(stalled):
            m.d.comb += [Assert(out.valid), Assert(out.payload == payload)]
        if self.invariants:
            closed = ~Cat(pr.open).any()
            m.d.comb += [Assert(~pr.argmax_active | pr.result), Assert(~out.valid | closed)]
            if self.plan.images > 1:
                m.d.comb += [Assert(~pr.argmax_active | closed), Assert(~out.valid | pr.argmax_logits_held),
                             Assert(pr.lane_in_range)]
        m.d.comb += [Cover(out.valid), Cover(stalled)]
        return m


def hostlink_bound(plan, *, timeout_cycles: int, quiet_cycles: int) -> int:
    """The bound ``B`` of :class:`HostLinkResponseCheck`: the longest of the link's three silent
    waits, plus 5 cycles for its registered stages (the parser's byte register, the timeout
    compare, the accelerator's reset, the input FIFO): a request byte (``timeout_cycles``, then a
    timeout reply), the quiet period after a non-ok reply (``quiet_cycles``, then idle), a result (the watchdog's limit: the cycle
    model's latency, from the first pixel in to the class out, and ``WATCHDOG_MARGIN``; then the
    logits are sent, or the reply is cut). Each wait ends with a byte sent or the link idle, so
    ``B`` is the maximum, not the sum, of the three."""
    return max(timeout_cycles, quiet_cycles, plan.cycles["latency"] + WATCHDOG_MARGIN) + 5


class FreeAccelerator(wiring.Component):
    """An accelerator whose every output is free in each cycle (``AnySeq``): ``input.ready``,
    ``output.valid``, ``output.payload`` and ``cycles``. A property proved of the host link with
    it behind holds whatever the real accelerator does, hung or glitched included.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        The accelerator it stands for (its widths).
    """

    def __init__(self, plan):
        super().__init__({"input": In(stream.Signature(unsigned(plan.act_bits))),
                          "output": Out(stream.Signature(signed(plan.out_bits))), "cycles": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.input.ready.eq(AnySeq(1)), self.output.valid.eq(AnySeq(1)),
                     self.output.payload.eq(AnySeq(self.output.payload.shape())), self.cycles.eq(AnySeq(32))]
        return m


class HostLinkResponseCheck(wiring.Component):
    """The host link is never silent for ``bound`` cycles while it is busy.

    ``tx.ready`` is held 1 (the UART transmitter takes every byte at once; a real one adds its
    byte time to the bound); the received bytes
    (``rx.valid``, ``rx.payload``) are free. The harness counts the cycles in which the link is
    busy (``busy``: not in its idle, listening state) and neither takes a received byte, sends
    one, nor passes a pixel to the accelerator; the count restarts at any of those and whenever
    the link is idle. Asserted: the count stays below ``bound``. So after any byte (in particular
    the last byte of a request), within ``bound`` cycles the link sends a byte (a reply starts or
    goes on), takes another one, feeds the accelerator or goes back to listening. Covered: a reply
    byte is sent.

    With the real accelerator, checked by bmc from reset over :attr:`bmc_depth` cycles: every
    sequence of received bytes that fits (garbage, broken, timed-out, info and whole inference
    requests, back to back) and ``bound`` cycles after it. With ``free_accelerator`` (a
    :class:`FreeAccelerator` behind the link) it is proved by k-induction (k = ``bound + 2``):
    any number of requests, from any state, whatever the accelerator does.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
    timeout_cycles, quiet_cycles : int
        The :class:`~ternpe.hw.hostlink.HostLink`'s.
    bound : int or None
        ``B``; ``None``: :func:`hostlink_bound`.
    free_accelerator : bool
        Put a :class:`FreeAccelerator` behind the link instead of the real one.

    Members
    -------
    rx : In(stream.Signature(8))
        The received bytes, free (``ready`` is the link's).
    """

    def __init__(self, plan, *, timeout_cycles: int, quiet_cycles: int, bound: int | None = None,
                 free_accelerator: bool = False):
        self.link = HostLink(plan, timeout_cycles=timeout_cycles, quiet_cycles=quiet_cycles,
                             acc=FreeAccelerator(plan) if free_accelerator else None)
        self.bound = (hostlink_bound(plan, timeout_cycles=timeout_cycles, quiet_cycles=quiet_cycles)
                      if bound is None else bound)
        self.request_bytes = request_length(self.link.format, CMD_INFER)
        super().__init__({"rx": In(stream.Signature(8))})

    @property
    def bmc_depth(self) -> int:
        """A bmc depth that holds a whole inference request from reset, the reply's first 4
        bytes, then ``bound`` silent cycles (the longest wait, for the accelerator), and 4 more."""
        return self.request_bytes + 4 + self.bound + 4

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        m.d.comb += [link.tx.ready.eq(1), Assume(~ResetSignal())]
        silent = Signal(range(self.bound + 1))
        acc = link.acc
        moved = ((link.rx.valid & link.rx.ready) | (link.tx.valid & link.tx.ready) |
                 (acc.input.valid & acc.input.ready))
        with m.If(~link.busy | moved):
            m.d.sync += silent.eq(0)
        with m.Elif(silent < self.bound):
            m.d.sync += silent.eq(silent + 1)
        m.d.comb += [Assert(silent < self.bound), Cover(link.tx.valid)]
        return m
