"""The sparse-tile weight buffer: the non-zero tiles of every layer, and the tile index."""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import ArrayGeometry, pack_tile_words, unsigned_bits

__all__ = ["TileEntry", "tile_program", "SparseTileWeightBuffer"]


@dataclasses.dataclass(frozen=True)
class LayerProgram:
    """Where one layer lives in the buffer, derived from its CSR tile index."""

    list_base: int       # first tile-list entry
    word_base: int       # first weight word
    entries: list        # (col, last, empty) per entry, rows in order; an empty row is one entry
    words: list          # packed weight words of the non-zero tiles


def tile_program(layer) -> LayerProgram:
    """The tile list of one exported layer: one entry per non-zero tile, ``last`` on the final
    tile of a row, and a single ``empty`` entry for a row whose tiles are all pruned (the row
    still has outputs: its requantized bias)."""
    entries = []
    for r in range(layer.layout.rows):
        a, b = int(layer.rowptr[r]), int(layer.rowptr[r + 1])
        if a == b:
            entries.append((0, 1, 1))
        for t in range(a, b):
            entries.append((int(layer.cols[t]), int(t == b - 1), 0))
    words = pack_tile_words(layer.tiles, layer.layout.geometry) if layer.nonzero_tiles else []
    return LayerProgram(0, 0, entries, words)


def TileEntry(col_bits: int) -> data.StructLayout:
    return data.StructLayout({"col": unsigned(col_bits), "last": 1, "empty": 1})


class SparseTileWeightBuffer(wiring.Component):
    """Block-RAM ROMs of the weight words and of the tile list, synchronous reads.

    Parameters
    ----------
    geometry : ArrayGeometry
    layers : list of ExportedLayer
        Every layer's non-zero tiles are stored back to back; pruned tiles take no word.

    Members
    -------
    entry_addr : In(list_addr_bits)
        Tile-list entry to read; ``entry`` holds it one cycle later.
    entry : Out(TileEntry)
    word_addr : In(word_addr_bits)
        Weight word to read; ``word`` holds it one cycle later.
    word : Out(2*P*G)
    """

    def __init__(self, *, geometry: ArrayGeometry, layers):
        self.geometry = geometry
        progs, lb, wb = [], 0, 0
        for layer in layers:
            p = tile_program(layer)
            progs.append(dataclasses.replace(p, list_base=lb, word_base=wb))
            lb += len(p.entries)
            wb += len(p.words)
        self.programs = progs
        self.col_bits = unsigned_bits(max(l.layout.cols - 1 for l in layers))
        self.n_words = wb
        super().__init__({
            "entry_addr": In(unsigned_bits(max(lb - 1, 1))), "entry": Out(TileEntry(self.col_bits)),
            "word_addr": In(unsigned_bits(max(wb - 1, 1))), "word": Out(geometry.word_bits),
        })

    def elaborate(self, platform):
        m = Module()
        layout = TileEntry(self.col_bits)
        init = [layout.const({"col": c, "last": l, "empty": e}).as_value().value
                for p in self.programs for (c, l, e) in p.entries]
        m.submodules.index = index = Memory(shape=layout.size, depth=max(1, len(init)), init=init)
        m.submodules.rom = rom = Memory(shape=self.geometry.word_bits, depth=max(1, self.n_words),
                                        init=[w for p in self.programs for w in p.words])
        ip, wp = index.read_port(), rom.read_port()
        m.d.comb += [ip.addr.eq(self.entry_addr), self.entry.eq(ip.data),
                     wp.addr.eq(self.word_addr), self.word.eq(wp.data)]
        return m
