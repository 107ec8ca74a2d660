"""The ternary PE (hw/pe.py) against the contract's arithmetic."""

import pytest

from ternpe.contract import signed_bits
from ternpe.hw.pe import TernaryPE
from blocksim import random_sums, run_block


@pytest.mark.parametrize("G,A,extremes", [(1, 8, False), (2, 8, True), (3, 8, False), (5, 8, False), (16, 8, False),
                                         (16, 8, True), (8, 3, True), (24, 6, True)])
def test_pe_against_reference(G, A, extremes):
    fan = 3 * G
    acc_bits = signed_bits(-fan * ((1 << A) - 1), fan * ((1 << A) - 1))
    dut = TernaryPE(lanes=G, act_bits=A, acc_bits=acc_bits)
    cases = random_sums(G, A, 24, extremes)
    ref = [sum(int((x * c).sum()) for x, c in ws) for ws in cases]
    got = []

    async def bench(ctx):
        for ws in cases:
            for i, (x, c) in enumerate(ws):
                ctx.set(dut.valid, 1)
                ctx.set(dut.clear, i == 0)
                ctx.set(dut.last, i == len(ws) - 1)
                for g in range(G):
                    ctx.set(dut.act[g], int(x[g]))
                    ctx.set(dut.code[g], int(c[g]) & 3)
                await ctx.tick()
                if ctx.get(dut.result_valid):
                    got.append(ctx.get(dut.result))
        ctx.set(dut.valid, 0)
        for _ in range(dut.latency + 1):
            await ctx.tick()
            if ctx.get(dut.result_valid):
                got.append(ctx.get(dut.result))

    run_block(dut, bench)
    assert got == ref


def test_pe_rejects_narrow_accumulator():
    with pytest.raises(ValueError, match="narrower"):
        TernaryPE(lanes=16, act_bits=8, acc_bits=10)


