"""The requantizer: the contract's ``clamp((acc * mult + bias) >>> shift)``, one channel."""

from __future__ import annotations

import operator

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternpe.contract import MULT_BITS, SHIFT_BITS
from ternpe.cycles import REQUANT_LATENCY

__all__ = ["Requantizer", "requant_out_bits", "ACC_BITS_PER_MULTIPLIER"]


#: Accumulator bits per hardware multiplier operand (a 16x16 signed SB_MAC16 takes 15 unsigned bits).
ACC_BITS_PER_MULTIPLIER = 15


def requant_out_bits(acc_bits: int, bias_bits: int, sc_bits: int = 0) -> int:
    """Width of ``acc * mult + bias`` (and of the unclamped output, the logits); with a shortcut
    of ``sc_bits`` unsigned bits, of ``acc * mult + bias + sc * res_mult``."""
    if sc_bits:
        return max(acc_bits + MULT_BITS, bias_bits, sc_bits + 1 + MULT_BITS) + 2
    return max(acc_bits + MULT_BITS, bias_bits) + 1


class Requantizer(wiring.Component):
    """An accumulator to the next layer's activation: ``(acc * mult + bias [+ sc * res_mult]) >> shift``, clamped.

    Six pipeline stages: the operands registered, partial products (the only multiplies of the design, one hardware
    multiplier per 15 accumulator bits: SB_MAC16 on iCE40 with ``synth_ice40 -dsp``, MULT18X18D
    on ECP5), their sum, + bias, arithmetic shift, clamp.

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
    sc : In(unsigned(act_bits)), res_mult : In(signed(MULT_BITS))
        With ``residual``: the shortcut activation and its multiplier, added as ``sc * res_mult``
        beside the accumulator's partial products (one more multiplier).
    out : Out(signed(out_bits))
        ``out_bits = acc_bits + MULT_BITS + 1`` holds any unclamped logit.
    out_valid : Out(1)

    With ``late_constants``, ``bias`` and ``shift`` are taken :attr:`LATE` cycles after the
    ``acc`` they belong to, in the cycle the bias is added, rather than with it: no register
    carries them down the pipeline (the iCE40 reads them from a ROM of their own, later).
    """

    #: Cycles from ``acc`` to its ``bias`` and ``shift`` with ``late_constants``.
    LATE = 3

    def __init__(self, *, acc_bits: int, bias_bits: int, act_bits: int, residual: bool = False,
                 late_constants: bool = False):
        self.acc_bits = operator.index(acc_bits)
        self.bias_bits = operator.index(bias_bits)
        self.act_bits = operator.index(act_bits)
        self.residual = bool(residual)
        self.late_constants = bool(late_constants)
        ports = {
            "valid": In(1), "acc": In(signed(self.acc_bits)), "mult": In(signed(MULT_BITS)),
            "bias": In(signed(self.bias_bits)), "shift": In(unsigned(SHIFT_BITS)), "clamp": In(1),
            "out": Out(signed(self.out_bits)), "out_valid": Out(1),
        }
        if self.residual:
            ports.update({"sc": In(unsigned(self.act_bits)), "res_mult": In(signed(MULT_BITS))})
        super().__init__(ports)

    @property
    def out_bits(self) -> int:
        return requant_out_bits(self.acc_bits, self.bias_bits, self.act_bits if self.residual else 0)

    latency = REQUANT_LATENCY

    def elaborate(self, platform):
        m = Module()
        # stage 1: partial products, each a hardware multiplier (<= 16x16 signed): the accumulator
        # in 15-bit chunks, the top one signed. Stage 2: their sum. A product wider than one
        # multiplier is never summed in the cycle that multiplies.
        A = self.acc_bits
        # stage 0: the operands registered beside the multipliers (with a wide array the
        # requantizers sit far apart on the die; their inputs must not travel in the multiply's cycle)
        # only the valid flags are reset: the data registers are read with them, and a reset net
        # (the host link's abort) reaching every one of them is a long path on a wide array
        acc, mult = Signal.like(self.acc, reset_less=True), Signal.like(self.mult, reset_less=True)
        bias = [Signal.like(self.bias, name=f"bias{i}", reset_less=True) for i in range(3)]
        shift = [Signal.like(self.shift, name=f"shift{i}", reset_less=True) for i in range(4)]
        clamp = [Signal(name=f"clamp{i}", reset_less=True) for i in range(5)]
        valid = [Signal(name=f"valid{i}") for i in range(5)]
        m.d.sync += [acc.eq(self.acc), mult.eq(self.mult), clamp[4].eq(self.clamp), valid[4].eq(self.valid)]
        # the bias and shift ride beside the product until they are used (without late constants)
        carry = [] if self.late_constants else [(bias[2], self.bias), (shift[3], self.shift), (bias[0], bias[2]),
                                               (shift[0], shift[3]), (bias[1], bias[0]), (shift[1], shift[0])]
        m.d.sync += [dst.eq(src) for dst, src in carry]
        chunks = [(lo, min(A, lo + ACC_BITS_PER_MULTIPLIER)) for lo in range(0, A, ACC_BITS_PER_MULTIPLIER)]
        parts = []
        for n, (lo, hi) in enumerate(chunks):
            top = hi == A
            piece = acc[lo:hi].as_signed() if top else acc[lo:hi].as_unsigned()
            part = Signal(signed(hi - lo + MULT_BITS + (0 if top else 1)), name=f"part{n}", reset_less=True)
            m.d.sync += part.eq(piece * mult)
            parts.append((lo, part))
        m.d.sync += [clamp[0].eq(clamp[4]), valid[0].eq(valid[4])]
        if self.residual:
            sc, rmul = Signal.like(self.sc, reset_less=True), Signal.like(self.res_mult, reset_less=True)
            m.d.sync += [sc.eq(self.sc), rmul.eq(self.res_mult)]
            part = Signal(signed(self.act_bits + 1 + MULT_BITS), name="part_sc", reset_less=True)
            m.d.sync += part.eq(sc * rmul)
            parts.append((0, part))
        prod = Signal(signed(self.out_bits - 1 if self.residual else A + MULT_BITS), reset_less=True)
        m.d.sync += [prod.eq(sum(part << lo for lo, part in parts)), clamp[1].eq(clamp[0]), valid[1].eq(valid[0])]
        # stage 3: + bias (one carry chain)
        total = Signal(signed(self.out_bits), reset_less=True)
        if self.late_constants:     # the bias and shift arrive now
            m.d.sync += [total.eq(prod + self.bias), shift[2].eq(self.shift)]
        else:
            m.d.sync += [total.eq(prod + bias[1]), shift[2].eq(shift[1])]
        m.d.sync += [clamp[2].eq(clamp[1]), valid[2].eq(valid[1])]
        # stage 4: arithmetic shift (a barrel shifter)
        shifted = Signal(signed(self.out_bits), reset_less=True)
        m.d.sync += [shifted.eq(total >> shift[2]), clamp[3].eq(clamp[2]), valid[3].eq(valid[2])]
        # stage 5: ReLU and saturation
        top = (1 << self.act_bits) - 1
        out = Signal.like(self.out, reset_less=True)
        m.d.comb += self.out.eq(out)
        with m.If(clamp[3] & (shifted < 0)):
            m.d.sync += out.eq(0)
        with m.Elif(clamp[3] & (shifted > top)):
            m.d.sync += out.eq(top)
        with m.Else():
            m.d.sync += out.eq(shifted)
        m.d.sync += self.out_valid.eq(valid[3])
        return m
