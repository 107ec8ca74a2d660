"""The result stream: the logits, then the index of the largest."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.cycles import argmax_cycles

__all__ = ["Argmax"]


class Argmax(wiring.Component):
    """Finds the largest logit (the first of equal ones), then sends every logit and its index.

    Two cycles a class (:func:`ternpe.cycles.argmax_cycles`): the next logit is fetched, then its
    upper and lower halves are compared with the best so far, so no comparator spans the whole
    width in one cycle.

    The logits are read a cycle after they are asked for (``fetch``, then ``logit``), so they may
    sit in registers behind an address register, or in a block RAM's synchronous read port
    (:class:`~ternpe.hw.writeback.LogitMemory`).

    Parameters
    ----------
    classes : int
    logit_bits : int
        Width of a logit.
    out_bits : int
        Width of the output stream (a logit, or the class index).

    Members
    -------
    start : In(1)
        The logits are final: begin (taken when idle).
    fetch : Out(range(classes + 2))
        The class whose logit ``logit`` holds in the next cycle (past ``classes - 1``: none).
    logit : In(signed(logit_bits))
        The logit of the class ``fetch`` named in the previous cycle; the logits are held from
        ``start`` until ``done``.
    output : Out(stream.Signature(signed(out_bits)))
        The ``classes`` logits, then the class index.
    busy : Out(1)
        Comparing (counted in the accelerator's cycles).
    done : Out(1)
        The class index is taken in this cycle.
    """

    def __init__(self, *, classes: int, logit_bits: int, out_bits: int):
        self.classes, self.logit_bits = classes, logit_bits
        super().__init__({"start": In(1), "fetch": Out(range(classes + 2)), "logit": In(signed(logit_bits)),
                          "output": Out(stream.Signature(signed(out_bits))), "busy": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        classes, lb = self.classes, self.logit_bits
        last = 2 * classes
        n = Signal(range(argmax_cycles(classes) + 2))
        cand, cand_i = Signal(signed(lb)), Signal(range(classes))
        best, best_i = Signal(signed(lb)), Signal(range(classes))
        half = lb // 2
        hi_gt, hi_eq, lo_gt, cmp_i = Signal(), Signal(), Signal(), Signal(range(classes))
        oi = Signal(range(classes + 1))
        with m.FSM(name="argmax"):
            with m.State("IDLE"):
                m.d.comb += self.fetch.eq(0)
                with m.If(self.start):
                    m.d.sync += n.eq(0)
                    m.next = "COMPARE"
            with m.State("COMPARE"):
                # take the fetched logit (n even) / compare the halves (n odd) / update with the
                # next take; the class taken at n is n / 2, so it is fetched at n - 1
                m.d.comb += [self.busy.eq(1), self.fetch.eq(Mux(n == last, 0, (n + 1) >> 1))]
                m.d.sync += n.eq(n + 1)
                with m.If(~n[0]):
                    m.d.sync += [cand.eq(self.logit), cand_i.eq(n >> 1)]
                    with m.If((n >= 2) & ((cmp_i == 0) | hi_gt | (hi_eq & lo_gt))):
                        m.d.sync += [best.eq(cand), best_i.eq(cmp_i)]
                with m.Else():
                    m.d.sync += [hi_gt.eq(cand[half:].as_signed() > best[half:].as_signed()),
                                 hi_eq.eq(cand[half:] == best[half:]), lo_gt.eq(cand[:half] > best[:half]),
                                 cmp_i.eq(cand_i)]
                with m.If(n == last):
                    m.d.sync += oi.eq(0)
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                # the logit sent is held while the stream stalls: the same class is fetched again
                m.d.comb += [self.output.valid.eq(1), self.output.payload.eq(Mux(oi == classes, best_i, self.logit)),
                             self.fetch.eq(Mux(self.output.ready, oi + 1, oi))]
                with m.If(self.output.ready):
                    m.d.sync += oi.eq(oi + 1)
                    with m.If(oi == classes):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
        return m
