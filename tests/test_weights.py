"""The sparse-tile weight buffer (hw/weights.py): the ROM image and the tile list."""

import numpy as np
import pytest

from ternpe.contract import pack_tile_words
from ternpe.hw.plan import AcceleratorOptions, plan_accelerator
from ternpe.hw.weights import SparseTileWeightBuffer
from ternpe.image import load_export
from blocksim import run_block


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def export(quick_run):
    return load_export(quick_run["export"])


@pytest.mark.parametrize("bank", [8, 64, 512])
def test_weight_buffer_reads_back_the_rom_image(export, bank):
    """Every word, two cycles after its address (the bank's block RAM, then its output register),
    from one bank or many."""
    dut = SparseTileWeightBuffer(plan_accelerator(export, AcceleratorOptions(ram_bank=bank)))
    expect = [w for l in export.layers for w in pack_tile_words(l.tiles, export.geometry)]
    got = []

    async def bench(ctx):
        for a in range(len(expect) + 1):          # a new address every cycle: the pipeline is full
            ctx.set(dut.word_addr, min(a, len(expect) - 1))
            await ctx.tick()                      # the word of the address set a cycle earlier
            if a >= 1:
                got.append(ctx.get(dut.word))

    run_block(dut, bench)
    assert len(expect) > 8 and got == expect
    entries = sum(len(p.entries) for p in dut.programs)
    # an empty row has an entry only when every row of its group (G/P rows; the last layer: all) is empty
    g = export.geometry
    carriers = 0
    for i, l in enumerate(export.layers):
        last = i == len(export.layers) - 1
        rpg = l.layout.rows if last else (g.G // g.P if l.spec.cout % g.G == 0 else 1)
        per_row = np.diff(l.rowptr)
        carriers += sum(int(per_row[a:a + rpg].sum() == 0) for a in range(0, l.layout.rows, rpg))
    assert entries == sum(l.nonzero_tiles for l in export.layers) + carriers


