"""The PE array (hw/array.py): the weight word's layout over its PEs and lanes."""

import pytest

from ternpe.contract import ArrayGeometry, pack_tile_words
from ternpe.hw.array import PEArray
from blocksim import RNG, run_block


@pytest.mark.parametrize("P,G", [(1, 4), (2, 4), (4, 8)])
def test_array_weight_word_layout(P, G):
    geo = ArrayGeometry(P, G)
    dut = PEArray(geometry=geo, act_bits=8, acc_bits=16)
    x = RNG.integers(0, 256, G)
    tiles = RNG.integers(-1, 2, (1, P, 1, G))
    word = pack_tile_words(tiles, geo)[0]
    got = []

    async def bench(ctx):
        ctx.set(dut.valid, 1)
        ctx.set(dut.clear, 1)
        ctx.set(dut.last, 1)
        ctx.set(dut.weights, word)
        for g in range(G):
            ctx.set(dut.act[g], int(x[g]))
        await ctx.tick()
        ctx.set(dut.valid, 0)
        for _ in range(dut.latency + 1):
            await ctx.tick()
            if ctx.get(dut.result_valid):
                got.append([ctx.get(dut.result[p]) for p in range(P)])

    run_block(dut, bench)
    assert got == [[int((tiles[0, p, 0] * x).sum()) for p in range(P)]]


