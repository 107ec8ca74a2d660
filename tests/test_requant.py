"""The requantizer (hw/requant.py) against the contract's requantize."""

from ternpe.contract import requant_params, requantize, signed_bits
from ternpe.hw.requant import Requantizer
from blocksim import RNG, run_block


def test_requantizer_against_contract():
    m_real = RNG.normal(size=64) * 10.0 ** RNG.uniform(-4, 0, 64)
    rq = requant_params(m_real, RNG.normal(size=64) * 50)
    acc = RNG.integers(-60000, 60000, 64)
    # the extremes of an 18-bit accumulator (split over two multipliers) and of the multiplier
    acc[:4] = [-(1 << 17), (1 << 17) - 1, -1, 1 << 15]
    rq.mult[:3] = [32767, -32767, -32768]
    bias_bits = rq.bias_bits()
    dut = Requantizer(acc_bits=18, bias_bits=bias_bits, act_bits=8)
    got = []

    async def bench(ctx):
        for clamp in (True, False):
            for i in range(64):
                ctx.set(dut.valid, 1)
                ctx.set(dut.clamp, clamp)
                ctx.set(dut.acc, int(acc[i]))
                ctx.set(dut.mult, int(rq.mult[i]))
                ctx.set(dut.bias, int(rq.bias[i]))
                ctx.set(dut.shift, int(rq.shift[i]))
                await ctx.tick()
                if ctx.get(dut.out_valid):
                    got.append(ctx.get(dut.out))
        ctx.set(dut.valid, 0)
        for _ in range(dut.latency):
            await ctx.tick()
            if ctx.get(dut.out_valid):
                got.append(ctx.get(dut.out))

    run_block(dut, bench)
    ref = list(requantize(acc, rq, relu=True, act_bits=8)) + list(requantize(acc, rq, relu=False, act_bits=8))
    assert got == [int(v) for v in ref]


