"""The requantizer: the contract's ``clamp((acc * mult + bias) >>> shift)``, one channel."""

from __future__ import annotations

import operator

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternpe.contract import MULT_BITS, SHIFT_BITS

__all__ = ["Requantizer", "requant_out_bits"]


def requant_out_bits(acc_bits: int, bias_bits: int) -> int:
    """Width of ``acc * mult + bias`` (and of the unclamped output, the logits)."""
    return max(acc_bits + MULT_BITS, bias_bits) + 1


class Requantizer(wiring.Component):
    """Two pipeline stages: the product (the only multiply of the design; on iCE40 UP5K Yosys
    maps a 16-bit signed operand to one SB_MAC16), then bias, arithmetic shift and clamp.

    Parameters
    ----------
    acc_bits, bias_bits, act_bits : int
        Widths of the accumulator, the bias constant and the unsigned output activations.

    Members
    -------
    valid : In(1)
    acc : In(signed(acc_bits))
    mult : In(signed(MULT_BITS))
    bias : In(signed(bias_bits))
    shift : In(unsigned(SHIFT_BITS))
    clamp : In(1)
        ReLU + saturate to ``[0, 2**act_bits - 1]`` (hidden layers); off for logits.
    out : Out(signed(out_bits))
        ``out_bits = acc_bits + MULT_BITS + 1`` holds any unclamped logit.
    out_valid : Out(1)
    """

    def __init__(self, *, acc_bits: int, bias_bits: int, act_bits: int):
        self.acc_bits = operator.index(acc_bits)
        self.bias_bits = operator.index(bias_bits)
        self.act_bits = operator.index(act_bits)
        super().__init__({
            "valid": In(1), "acc": In(signed(self.acc_bits)), "mult": In(signed(MULT_BITS)),
            "bias": In(signed(self.bias_bits)), "shift": In(unsigned(SHIFT_BITS)), "clamp": In(1),
            "out": Out(signed(self.out_bits)), "out_valid": Out(1),
        })

    @property
    def out_bits(self) -> int:
        return requant_out_bits(self.acc_bits, self.bias_bits)

    latency = 2

    def elaborate(self, platform):
        m = Module()
        prod = Signal(signed(self.acc_bits + MULT_BITS))
        bias = Signal.like(self.bias)
        shift = Signal.like(self.shift)
        clamp = Signal()
        v1 = Signal()
        m.d.sync += [prod.eq(self.acc * self.mult), bias.eq(self.bias), shift.eq(self.shift),
                     clamp.eq(self.clamp), v1.eq(self.valid)]
        total = Signal(signed(self.out_bits))
        shifted = Signal(signed(self.out_bits))
        m.d.comb += [total.eq(prod + bias), shifted.eq(total >> shift)]
        top = (1 << self.act_bits) - 1
        with m.If(clamp & (shifted < 0)):
            m.d.sync += self.out.eq(0)
        with m.Elif(clamp & (shifted > top)):
            m.d.sync += self.out.eq(top)
        with m.Else():
            m.d.sync += self.out.eq(shifted)
        m.d.sync += self.out_valid.eq(v1)
        return m
