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
    """Four pipeline stages: the product (the only multiply of the design; on iCE40 UP5K Yosys
    maps it to SB_MAC16 blocks with ``synth_ice40 -dsp``), + bias, arithmetic shift, clamp.

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

    latency = 4

    def elaborate(self, platform):
        m = Module()
        # stage 1: the product (DSP); the constants travel along
        prod = Signal(signed(self.acc_bits + MULT_BITS))
        bias1, shift1, shift2 = Signal.like(self.bias), Signal.like(self.shift), Signal.like(self.shift)
        clamp = [Signal(name=f"clamp{i}") for i in range(3)]
        valid = [Signal(name=f"valid{i}") for i in range(3)]
        m.d.sync += [prod.eq(self.acc * self.mult), bias1.eq(self.bias), shift1.eq(self.shift),
                     clamp[0].eq(self.clamp), valid[0].eq(self.valid)]
        # stage 2: + bias (one carry chain)
        total = Signal(signed(self.out_bits))
        m.d.sync += [total.eq(prod + bias1), shift2.eq(shift1), clamp[1].eq(clamp[0]), valid[1].eq(valid[0])]
        # stage 3: arithmetic shift (a barrel shifter)
        shifted = Signal(signed(self.out_bits))
        m.d.sync += [shifted.eq(total >> shift2), clamp[2].eq(clamp[1]), valid[2].eq(valid[1])]
        # stage 4: ReLU and saturation
        top = (1 << self.act_bits) - 1
        with m.If(clamp[2] & (shifted < 0)):
            m.d.sync += self.out.eq(0)
        with m.Elif(clamp[2] & (shifted > top)):
            m.d.sync += self.out.eq(top)
        with m.Else():
            m.d.sync += self.out.eq(shifted)
        m.d.sync += self.out_valid.eq(valid[2])
        return m
