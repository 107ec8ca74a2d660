"""The sparse-tile weight buffer: the non-zero tiles of every layer, and the tile index."""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ternpe.contract import pack_tile_words, unsigned_bits

__all__ = ["TileEntry", "LayerProgram", "tile_program", "tile_entry_bits", "entry_words", "SparseTileWeightBuffer"]


@dataclasses.dataclass(frozen=True)
class LayerProgram:
    """Where one layer lives in the buffer, derived from its CSR tile index."""

    list_base: int       # first tile-list entry
    word_base: int       # first weight word
    entries: list        # (col, row, last, empty, end) per entry, in row order
    words: list          # packed weight words of the non-zero tiles
    empty_rows: list     # rows with no non-zero tile (their outputs are constants)
    words_per_tile: int

    @property
    def ops_per_position(self) -> int:
        """Ops of one output position: a word per non-zero tile word, one per carrier entry."""
        return sum(1 if e[3] else self.words_per_tile for e in self.entries)


def tile_program(layer, *, rows_per_group: int) -> LayerProgram:
    """The tile list of one exported layer: one entry per non-zero tile (``last`` on the final
    tile of its row, ``end`` on the layer's final entry).

    A row whose tiles are all pruned has constant outputs (its requantized bias) and gets no
    entry: the write-back fills its channels while writing a computed row of the same group
    (``rows_per_group`` rows share an activation word; the last layer is one group). Only a
    group with no tile at all keeps one ``empty`` entry for its first row, so the group is
    written; it costs one op.
    """
    rows = layer.layout.rows
    rowptr = [int(v) for v in layer.rowptr]
    entries, empty_rows = [], []
    for g0 in range(0, rows, rows_per_group):
        group = range(g0, min(rows, g0 + rows_per_group))
        has_tiles = any(rowptr[r + 1] > rowptr[r] for r in group)
        for r in group:
            a, b = rowptr[r], rowptr[r + 1]
            if a == b:
                empty_rows.append(r)
                if not has_tiles and r == g0:
                    entries.append([0, r, 1, 1, 0])
            for t in range(a, b):
                entries.append([int(layer.cols[t]), r, int(t == b - 1), 0, 0])
    entries[-1][4] = 1
    words = pack_tile_words(layer.tiles, layer.layout.geometry) if layer.nonzero_tiles else []
    return LayerProgram(0, 0, [tuple(e) for e in entries], words, empty_rows, layer.layout.words_per_tile)


def tile_entry_bits(col_bits: int, row_bits: int) -> int:
    """Bits of one tile-list word (:class:`TileEntry`): column, row and three flags."""
    return col_bits + row_bits + 3


class TileEntry(data.StructLayout):
    """One tile-list word: the tile's column and row, and the flags of the entry after it in the
    list (``next_*``), so the controller holds the flags of the entry it walks to in a register
    instead of waiting on the list's read. An entry's own flags are not stored: the controller
    has them already (from the entry before it, or per row and per layer in registers)."""

    def __init__(self, col_bits: int, row_bits: int):
        super().__init__({"col": unsigned(col_bits), "row": unsigned(row_bits),
                          "next_last": 1, "next_empty": 1, "next_end": 1})
        assert self.size == tile_entry_bits(col_bits, row_bits)


def entry_words(layout, entries) -> list:
    """The tile-list ROM image of ``entries`` (``(col, row, last, empty, end)`` in list order)."""
    out = []
    for i, (c, r, *_) in enumerate(entries):
        nl, ne, nn = entries[i + 1][2:5] if i + 1 < len(entries) else (0, 0, 0)
        out.append(layout.const({"col": c, "row": r, "next_last": nl, "next_empty": ne,
                                 "next_end": nn}).as_value().value)
    return out


class SparseTileWeightBuffer(wiring.Component):
    """Block-RAM ROMs of the weight words and of the tile list, synchronous reads.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        Every layer's non-zero tiles are stored back to back (``plan.programs``); pruned tiles
        take no word. ``plan.options.ram_bank`` is the depth of a bank of the weight ROM;
        ``plan.options.index_in_logic`` puts the tile list in LUTs.

    Members
    -------
    entry_addr : In(list_addr_bits)
        Tile-list entry to read; ``entry`` holds it one cycle later.
    entry : Out(TileEntry)
    word_addr : In(word_addr_bits)
        Weight word to read; ``word`` holds it two cycles later.
    word : Out(2*P*G)

    The weight ROM is split into banks of ``ram_bank`` words (one block RAM deep), and each
    bank's output is registered before the banks are multiplexed: no logic and no long route
    follow a block RAM's clock-to-out (5.6 ns on ECP5), however many block RAMs the weights take.

    With ``index_in_logic`` the tile list is a LUT ROM read through an address register: the same
    one-cycle latency, but no block RAM clock-to-out (5.6 ns on ECP5) in the controller's
    read-decide-read loop.
    """

    def __init__(self, plan):
        self.geometry = plan.geometry
        self.index_in_logic = plan.options.index_in_logic
        self.bank_depth = plan.options.ram_bank
        self.programs = plan.programs
        self.col_bits, self.row_bits = plan.col_bits, plan.row_bits
        self.n_words = plan.weight_words
        super().__init__({
            "entry_addr": In(unsigned_bits(max(plan.list_entries - 1, 1))),
            "entry": Out(TileEntry(self.col_bits, self.row_bits)),
            "word_addr": In(unsigned_bits(max(self.n_words - 1, 1))), "word": Out(self.geometry.word_bits),
        })

    def elaborate(self, platform):
        m = Module()
        layout = TileEntry(self.col_bits, self.row_bits)
        init = entry_words(layout, [e for p in self.programs for e in p.entries])
        m.submodules.index = index = Memory(shape=layout.size, depth=max(1, len(init)), init=init)
        words = [w for p in self.programs for w in p.words] or [0]
        D = self.bank_depth
        outs = []
        for b in range(0, len(words), D):
            rom = Memory(shape=self.geometry.word_bits, depth=min(D, len(words) - b), init=words[b:b + D])
            m.submodules[f"rom{b // D}"] = rom
            wp = rom.read_port()
            q = Signal(self.geometry.word_bits, name=f"bank{b // D}", reset_less=True)   # no reset mux after the RAM
            m.d.comb += wp.addr.eq(self.word_addr[:max(1, (min(D, len(words) - b) - 1).bit_length())])
            m.d.sync += q.eq(wp.data)
            outs.append(q)
        if len(outs) == 1:
            m.d.comb += self.word.eq(outs[0])
        else:
            sel = [Signal(range(len(outs)), name=f"bank_sel{n}") for n in range(2)]
            m.d.sync += [sel[0].eq(self.word_addr >> (D.bit_length() - 1)), sel[1].eq(sel[0])]
            m.d.comb += self.word.eq(Array(outs)[sel[1]])
        if self.index_in_logic:
            ip = index.read_port(domain="comb")
            addr = Signal.like(self.entry_addr)
            m.d.sync += addr.eq(self.entry_addr)
            m.d.comb += ip.addr.eq(addr)
        else:
            ip = index.read_port()
            m.d.comb += ip.addr.eq(self.entry_addr)
        m.d.comb += self.entry.eq(ip.data)
        return m
