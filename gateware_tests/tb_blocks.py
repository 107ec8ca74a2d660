"""cocotb testbenches of the accelerator's blocks, each on its own generated Verilog.

Settings come as JSON in ``TERNPE_BLOCK``: ``seed``, ``n`` (vectors), and per block its
parameters (``lanes``/``act_bits``/``acc_bits`` for the PE, ``acc_bits``/``bias_bits``/``act_bits``
for the requantizer, ``export`` for the weight buffer). Every result is compared, exactly, with
the contract's numpy reference.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from ternpe.contract import MULT_BITS, SHIFT_BITS, RequantParams, requantize


def _cfg() -> dict:
    return json.loads(os.environ["TERNPE_BLOCK"])


async def _clock(dut, idle=("valid",)):
    dut.rst.value = 1
    for name in idle:                   # inputs that must not be X while reset is released
        getattr(dut, name).value = 0
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def _stream(dut, beats, n_results, valid, result, drive, flush=64) -> list:
    """Apply ``drive(beat)`` to the inputs of one beat per clock (``valid`` high), then idle
    until ``n_results`` results arrived; returns every ``result`` seen with ``valid`` high."""
    got = []

    async def collect():
        while len(got) < n_results:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if int(getattr(dut, valid).value):
                got.append(getattr(dut, result).value.to_signed())
    task = cocotb.start_soon(collect())
    for beat in beats:
        await FallingEdge(dut.clk)
        dut.valid.value = 1
        drive(beat)
    await FallingEdge(dut.clk)
    dut.valid.value = 0
    for _ in range(flush):
        if len(got) >= n_results:
            break
        await FallingEdge(dut.clk)
    task.cancel()
    assert len(got) == n_results, f"{len(got)} results, expected {n_results}"
    return got


def _pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (i * bits) for i, v in enumerate(values))


@cocotb.test()
async def pe(dut):
    """Random sums of 1-4 words (and full-scale ones) through the ternary PE."""
    cfg = _cfg()
    G, A = cfg["lanes"], cfg["act_bits"]
    rng = random.Random(cfg["seed"])
    sums = []
    for i in range(cfg["n"]):
        k = rng.randint(1, 4)
        if i % 10 == 0:       # extremes: every lane at full scale, all +1 or all -1
            c = 1 if i % 20 else -1
            sums.append([([(1 << A) - 1] * G, [c] * G) for _ in range(k)])
        else:
            sums.append([([rng.randrange(1 << A) for _ in range(G)], [rng.randint(-1, 1) for _ in range(G)])
                         for _ in range(k)])
    want = [sum(x * c for xs, cs in s for x, c in zip(xs, cs)) for s in sums]
    await _clock(dut)
    beats = [(xs, cs, j == 0, j == len(sm) - 1) for sm in sums for j, (xs, cs) in enumerate(sm)]

    def drive(beat):
        xs, cs, first, last = beat
        dut.clear.value, dut.last.value = int(first), int(last)
        dut.act.value = _pack(xs, A)
        dut.code.value = _pack([c & 3 for c in cs], 2)
    got = await _stream(dut, beats, len(want), "result_valid", "result", drive)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"sum {bad[0]}: PE gave {got[bad[0]]}, reference {want[bad[0]]} ({len(bad)} differ)"


@cocotb.test()
async def requantizer(dut):
    """Random accumulators and constants, with and without the ReLU clamp."""
    cfg = _cfg()
    acc_bits, bias_bits, A = cfg["acc_bits"], cfg["bias_bits"], cfg["act_bits"]
    rng = random.Random(cfg["seed"])
    vec = []
    for _ in range(cfg["n"]):
        vec.append((rng.randrange(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1)),
                    rng.randrange(-(1 << (MULT_BITS - 1)), 1 << (MULT_BITS - 1)),
                    rng.randrange(-(1 << (bias_bits - 1)), 1 << (bias_bits - 1)),
                    rng.randrange(0, 1 << SHIFT_BITS), rng.randint(0, 1)))
    want = []
    for acc, mult, bias, shift, clamp in vec:
        rq = RequantParams(np.array([mult]), np.array([bias]), np.array([shift]))
        want.append(int(requantize(np.array([acc]), rq, relu=bool(clamp), act_bits=A)[0]))
    await _clock(dut)

    def drive(v):
        acc, mult, bias, shift, clamp = v
        dut.acc.value, dut.mult.value, dut.bias.value = acc, mult, bias
        dut.shift.value, dut.clamp.value = shift, clamp
    got = await _stream(dut, vec, len(want), "out_valid", "out", drive, flush=8)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"vector {bad[0]} {vec[bad[0]]}: requantizer gave {got[bad[0]]}, reference {want[bad[0]]}"


@cocotb.test()
async def weight_buffer(dut):
    """Every weight word and tile-list entry read back; they equal the export's ROM image files."""
    from ternpe.image import load_export, read_hex
    cfg = _cfg()
    ex = load_export(cfg["export"], check_golden=False)
    g = ex.geometry
    idle = ("entry_addr", "word_addr")
    words, csr = [], []
    for l in ex.layers:
        f = ex.path / ex.manifest["layers"][[x.spec.name for x in ex.layers].index(l.spec.name)]["files"]["weights"]
        words += [int(w) for w in read_hex(f, g.word_bits)] if l.nonzero_tiles else []
        csr.append([(r, int(l.cols[t])) for r in range(l.layout.rows)
                    for t in range(int(l.rowptr[r]), int(l.rowptr[r + 1]))])
    col_bits, row_bits, n_entries = cfg["col_bits"], cfg["row_bits"], cfg["entries"]
    await _clock(dut, idle)
    got_words, got_entries = [], []
    # a new address every cycle; a word arrives after the second clock edge, an entry after the first
    for a in range(max(len(words) + 1, n_entries)):
        await FallingEdge(dut.clk)
        dut.word_addr.value = min(a, max(len(words) - 1, 0))
        dut.entry_addr.value = min(a, n_entries - 1)
        await RisingEdge(dut.clk)
        await ReadOnly()
        if 1 <= a < len(words) + 1:
            got_words.append(int(dut.word.value))
        if a < n_entries:
            e = int(dut.entry.value)
            got_entries.append((e & ((1 << col_bits) - 1), e >> col_bits & ((1 << row_bits) - 1),
                                *(e >> (col_bits + row_bits + b) & 1 for b in range(3))))
    # each entry carries the flags (last, empty, end) of the entry after it, not its own: the first
    # entry's are the controller's constant, every other's are its predecessor's next-entry flags
    flags = [tuple(cfg["first_flags"])] + [e[2:5] for e in got_entries[:-1]]
    got_entries = [e[:2] + f for e, f in zip(got_entries, flags)]
    bad = [i for i, (a, b) in enumerate(zip(got_words, words)) if a != b]
    assert len(got_words) == len(words) and not bad, f"weight word {bad[:1]} differs from the ROM image"
    # the tile list, layer by layer (split at the end flags), must name exactly the CSR's tiles
    layers, cur = [], []
    for col, row, last, empty, end in got_entries:
        if not empty:
            cur.append((row, col))
        if end:
            layers.append(cur)
            cur = []
    assert layers == csr, "the tile list does not name the export's non-zero tiles in order"
