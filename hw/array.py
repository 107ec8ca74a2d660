"""The PE array: ``P`` ternary PEs fed the same activation word, each with its own lanes."""

from __future__ import annotations

import operator

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ternpe.contract import ArrayGeometry
from ternpe.cycles import pe_latency
from .pe import TernaryPE

__all__ = ["PEArray"]


class PEArray(wiring.Component):
    """One pass computes ``P`` output channels over ``G`` input lanes.

    The weight word is the contract's: lane ``g`` of PE ``p`` at bits ``2*(p*G+g)``.

    Parameters
    ----------
    geometry : ArrayGeometry
    act_bits, acc_bits : int
        As for :class:`~ternpe.hw.pe.TernaryPE`.

    Members
    -------
    valid, clear, last : In(1)
        As for the PE, shared by all PEs.
    act : In(ArrayLayout(unsigned(act_bits), G))
        The activation word, broadcast.
    weights : In(2*P*G)
        One weight word.
    result : Out(ArrayLayout(signed(acc_bits), P))
    result_valid : Out(1)
    """

    def __init__(self, *, geometry: ArrayGeometry, act_bits: int, acc_bits: int):
        self.geometry = geometry
        self.act_bits = operator.index(act_bits)
        self.acc_bits = operator.index(acc_bits)
        super().__init__({
            "valid": In(1), "clear": In(1), "last": In(1),
            "act": In(data.ArrayLayout(unsigned(self.act_bits), geometry.G)),
            "weights": In(geometry.word_bits),
            "result": Out(data.ArrayLayout(signed(self.acc_bits), geometry.P)),
            "result_valid": Out(1),
        })

    @property
    def latency(self) -> int:
        return pe_latency(self.geometry.G)

    def elaborate(self, platform):
        m = Module()
        G = self.geometry.G
        pes = [TernaryPE(lanes=G, act_bits=self.act_bits, acc_bits=self.acc_bits) for _ in range(self.geometry.P)]
        for p, pe in enumerate(pes):
            m.submodules[f"pe{p}"] = pe
            m.d.comb += [pe.valid.eq(self.valid), pe.clear.eq(self.clear), pe.last.eq(self.last),
                         pe.act.eq(self.act), self.result[p].eq(pe.result)]
            for g in range(G):
                m.d.comb += pe.code[g].eq(self.weights[2 * (p * G + g): 2 * (p * G + g) + 2])
        m.d.comb += self.result_valid.eq(pes[0].result_valid)
        return m
