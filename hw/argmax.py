"""The result stream: the logits, then the index of the largest."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.cycles import argmax_cycles

__all__ = ["Argmax"]


class Argmax(wiring.Component):
    """Finds the largest logit (the first of equal ones), then sends every logit and its index.

    Two cycles a class (:func:`ternpe.cycles.argmax_cycles`): the next logit is fetched, then its
    upper and lower halves are compared with the best so far, so no comparator spans the whole
    width in one cycle.

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
    logits : In(ArrayLayout(signed(logit_bits), classes))
        Held from ``start`` until ``done``.
    output : Out(stream.Signature(signed(out_bits)))
        The ``classes`` logits, then the class index.
    busy : Out(1)
        Comparing (counted in the accelerator's cycles).
    done : Out(1)
        The class index is taken in this cycle.
    """

    def __init__(self, *, classes: int, logit_bits: int, out_bits: int):
        self.classes, self.logit_bits = classes, logit_bits
        super().__init__({"start": In(1), "logits": In(data.ArrayLayout(signed(logit_bits), classes)),
                          "output": Out(stream.Signature(signed(out_bits))), "busy": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        classes, lb = self.classes, self.logit_bits
        logits = self.logits
        n = Signal(range(argmax_cycles(classes) + 2))
        cand, cand_i = Signal(signed(lb)), Signal(range(classes))
        best, best_i = Signal(signed(lb)), Signal(range(classes))
        half = lb // 2
        hi_gt, hi_eq, lo_gt, cmp_i = Signal(), Signal(), Signal(), Signal(range(classes))
        oi = Signal(range(classes + 1))
        # one mux over the logits: the next candidate while comparing, the logit sent while sending
        k, sending = Signal(range(classes + 1)), Signal()
        cur = Signal(signed(lb))
        m.d.comb += [k.eq(n >> 1), cur.eq(logits[Mux(sending, oi, k)] if classes > 1 else logits[0])]
        with m.FSM(name="argmax"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += n.eq(0)
                    m.next = "COMPARE"
            with m.State("COMPARE"):
                # fetch (n even) / compare the halves (n odd) / update with the next fetch
                m.d.comb += self.busy.eq(1)
                m.d.sync += n.eq(n + 1)
                with m.If(~n[0]):
                    m.d.sync += [cand.eq(cur), cand_i.eq(k)]
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
                m.d.comb += [sending.eq(1), self.output.valid.eq(1),
                             self.output.payload.eq(Mux(oi == classes, best_i, cur))]
                with m.If(self.output.ready):
                    m.d.sync += oi.eq(oi + 1)
                    with m.If(oi == classes):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
        return m
