"""The requantizer (hw/requant.py) against the contract's requantize."""

from ternpe.contract import requant_params, requantize, signed_bits
from ternpe.hw.requant import Requantizer
from blocksim import RNG, run_block


import pytest


@pytest.mark.parametrize("late", [False, True])
def test_requantizer_against_contract(late):
    """With ``late_constants`` each bias and shift comes LATE cycles after its accumulator."""
    m_real = RNG.normal(size=64) * 10.0 ** RNG.uniform(-4, 0, 64)
    rq = requant_params(m_real, RNG.normal(size=64) * 50)
    acc = RNG.integers(-60000, 60000, 64)
    # the extremes of an 18-bit accumulator (split over two multipliers) and of the multiplier
    acc[:4] = [-(1 << 17), (1 << 17) - 1, -1, 1 << 15]
    rq.mult[:3] = [32767, -32767, -32768]
    bias_bits = rq.bias_bits()
    dut = Requantizer(acc_bits=18, bias_bits=bias_bits, act_bits=8, late_constants=late)
    lag = Requantizer.LATE if late else 0
    got = []

    async def bench(ctx):
        n = 0                                   # inputs given: the constants of input n - lag now
        for clamp in (True, False):
            for i in range(64):
                ctx.set(dut.valid, 1)
                ctx.set(dut.clamp, clamp)
                ctx.set(dut.acc, int(acc[i]))
                ctx.set(dut.mult, int(rq.mult[i]))
                k = (n - lag) % 64
                ctx.set(dut.bias, int(rq.bias[k]))
                ctx.set(dut.shift, int(rq.shift[k]))
                n += 1
                await ctx.tick()
                if ctx.get(dut.out_valid):
                    got.append(ctx.get(dut.out))
        ctx.set(dut.valid, 0)
        for _ in range(dut.latency):
            k = (n - lag) % 64
            ctx.set(dut.bias, int(rq.bias[k]))
            ctx.set(dut.shift, int(rq.shift[k]))
            n += 1
            await ctx.tick()
            if ctx.get(dut.out_valid):
                got.append(ctx.get(dut.out))

    run_block(dut, bench)
    ref = list(requantize(acc, rq, relu=True, act_bits=8)) + list(requantize(acc, rq, relu=False, act_bits=8))
    assert got == [int(v) for v in ref]


