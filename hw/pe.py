"""The ternary PE: ``G`` lanes, additions only, a pipelined adder tree and an accumulator."""

from __future__ import annotations

import operator

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ternpe.contract import CODE_MINUS, CODE_PLUS
from ternpe.cycles import pe_latency, tree_levels

__all__ = ["TernaryPE", "check_pe_shape"]


def check_pe_shape(lanes: int, act_bits: int, acc_bits: int) -> None:
    """Raise :class:`ValueError` unless a PE of ``lanes`` lanes of ``act_bits`` bits can sum one
    word into an ``acc_bits``-bit accumulator."""
    lanes, act_bits, acc_bits = operator.index(lanes), operator.index(act_bits), operator.index(acc_bits)
    if lanes < 1 or act_bits < 1:
        raise ValueError(f"lanes and act_bits must be >= 1, not {lanes}, {act_bits}")
    need = act_bits + 1 + tree_levels(lanes)
    if acc_bits < need:
        raise ValueError(f"acc_bits {acc_bits} is narrower than one pass of the tree ({need} bits)")


class TernaryPE(wiring.Component):
    """Adds ``G`` unsigned activations with ternary signs into an accumulator.

    Each lane contributes ``+x`` (code ``01``), ``-x`` (code ``11``) or nothing: no multiplier.
    The lane terms are registered, then every level of the adder tree is registered, then the
    accumulator. A result leaves :attr:`latency` cycles after its last word went in.

    Parameters
    ----------
    lanes : int
        ``G``, input lanes.
    act_bits : int
        Width of the unsigned activations.
    acc_bits : int
        Width of the signed accumulator; the contract's worst case (``accumulator_bits``) must
        fit in it, which the caller guarantees.

    Members
    -------
    valid : In(1)
        A word is on ``act`` / ``code`` this cycle.
    clear : In(1)
        This word starts a new sum (the accumulator restarts from zero).
    last : In(1)
        This word ends the sum: ``result`` is valid ``latency`` cycles later.
    act : In(ArrayLayout(unsigned(act_bits), lanes))
    code : In(ArrayLayout(unsigned(2), lanes))
    result : Out(signed(acc_bits))
    result_valid : Out(1)

    Attributes
    ----------
    accumulator : Signal(signed(acc_bits))
        The accumulator register (read by the formal harness's inductive invariants).
    """

    def __new__(cls, *, lanes: int, act_bits: int, acc_bits: int, **kwargs):
        check_pe_shape(lanes, act_bits, acc_bits)      # before the block exists: no unused block is left
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, lanes: int, act_bits: int, acc_bits: int):
        self.lanes = operator.index(lanes)
        self.act_bits = operator.index(act_bits)
        self.acc_bits = operator.index(acc_bits)
        self.accumulator = Signal(signed(self.acc_bits), name="acc", reset_less=True)
        super().__init__({
            "valid": In(1), "clear": In(1), "last": In(1),
            "act": In(data.ArrayLayout(unsigned(self.act_bits), self.lanes)),
            "code": In(data.ArrayLayout(unsigned(2), self.lanes)),
            "result": Out(signed(self.acc_bits)), "result_valid": Out(1),
        })

    @property
    def latency(self) -> int:
        """Cycles from a word on the inputs to its sum in ``result`` (terms, tree, accumulator)."""
        return pe_latency(self.lanes)

    def elaborate(self, platform):
        m = Module()
        A = self.act_bits
        # A lane's term is +x, ~x = -x - 1 (a minus code: its one's complement, one LUT a bit
        # where -x needs a carry chain too) or 0 (the register's reset). The +1 each minus term
        # still owes is the term's sign bit: every adder of the tree, and the accumulator, takes
        # one owed bit as its carry-in (one carry chain still), and the bits not yet taken are
        # registered down the tree beside the sums. A tree of n lanes has at least n - 1 adders,
        # so the accumulator takes the last one: it adds the exact sum.
        level = []
        for g in range(self.lanes):
            t = Signal(signed(A + 1), name=f"term{g}", reset_less=True)
            x = Cat(self.act[g], C(0, 1))
            with m.Switch(self.code[g]):
                with m.Case(CODE_PLUS):
                    m.d.sync += t.eq(x)
                with m.Case(CODE_MINUS):
                    m.d.sync += t.eq(~x)
                with m.Default():
                    m.d.sync += t.eq(0)
            level.append(t)
        owed = [t[A] for t in level]
        flags = [(self.valid, self.clear, self.last)]
        for _ in range(self.latency - 1):
            v, c, l = Signal(), Signal(), Signal()
            pv, pc, pl = flags[-1]
            m.d.sync += [v.eq(pv), c.eq(pc), l.eq(pl)]
            flags.append((v, c, l))
        n = 0
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level), 2):
                s = Signal(signed(A + 2 + n), name=f"sum_l{n}_{i // 2}", reset_less=True)
                total = level[i] + level[i + 1] if i + 1 < len(level) else level[i]
                m.d.sync += s.eq(total + owed.pop() if owed else total)
                nxt.append(s)
            carried = [Signal(name=f"owed_l{n}_{k}", reset_less=True) for k in range(len(owed))]
            m.d.sync += [d.eq(o) for d, o in zip(carried, owed)]
            level, owed, n = nxt, carried, n + 1
        assert len(owed) <= 1, "a tree of n lanes has n - 1 adders or more"
        tree = level[0]
        acc = self.accumulator
        v, c, l = flags[-1]           # aligned with `tree`
        acc_next = Signal(signed(self.acc_bits))
        base = Mux(c, 0, acc)
        m.d.comb += acc_next.eq(base + tree + owed[0] if owed else base + tree)
        with m.If(v):
            m.d.sync += acc.eq(acc_next)
        m.d.sync += self.result_valid.eq(v & l)
        result = Signal.like(self.result, reset_less=True)     # read only with result_valid
        m.d.comb += self.result.eq(result)
        with m.If(v & l):
            m.d.sync += result.eq(acc_next)
        return m
