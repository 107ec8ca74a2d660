"""The hardware blocks and the whole accelerator against the contract's numpy reference."""

import json
import shutil

import numpy as np
import pytest
from amaranth.sim import Simulator

from ternpe.contract import ArrayGeometry, pack_tile_words, requant_params, requantize, signed_bits
from ternpe.image import densified, load_export, rewrite_export, write_manifest
from ternpe.hw.accelerator import Accelerator
from ternpe.hw.plan import AcceleratorOptions, GenerateError, plan_accelerator
from ternpe.hw.array import PEArray
from ternpe.flow.generate import prepare
from ternpe.hw.pe import TernaryPE
from ternpe.hw.requant import Requantizer
from ternpe.flow.sim import simulate
from ternpe.hw.weights import SparseTileWeightBuffer

RNG = np.random.default_rng(1)


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _sums(G, A, n, extremes=False):
    out = []
    for i in range(n):
        k = int(RNG.integers(1, 4))
        if extremes:     # every lane at full scale, all +1 or all -1
            c = 1 if i % 2 else -1
            ws = [(np.full(G, (1 << A) - 1), np.full(G, c)) for _ in range(k)]
        else:
            ws = [(RNG.integers(0, 1 << A, G), RNG.integers(-1, 2, G)) for _ in range(k)]
        out.append(ws)
    return out


@pytest.mark.parametrize("G,A,extremes", [(1, 8, False), (5, 8, False), (16, 8, False), (16, 8, True), (8, 3, True)])
def test_pe_against_reference(G, A, extremes):
    fan = 3 * G
    acc_bits = signed_bits(-fan * ((1 << A) - 1), fan * ((1 << A) - 1))
    dut = TernaryPE(lanes=G, act_bits=A, acc_bits=acc_bits)
    cases = _sums(G, A, 24, extremes)
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

    _run(dut, bench)
    assert got == ref


def test_pe_rejects_narrow_accumulator():
    with pytest.raises(ValueError, match="narrower"):
        TernaryPE(lanes=16, act_bits=8, acc_bits=10)


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

    _run(dut, bench)
    assert got == [[int((tiles[0, p, 0] * x).sum()) for p in range(P)]]


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

    _run(dut, bench)
    ref = list(requantize(acc, rq, relu=True, act_bits=8)) + list(requantize(acc, rq, relu=False, act_bits=8))
    assert got == [int(v) for v in ref]


@pytest.fixture(scope="module")
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

    _run(dut, bench)
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


def test_accelerator_is_bit_exact_and_cycles_follow_the_model(export, quick_run):
    acc = Accelerator(plan_accelerator(export))
    n = 4
    res = simulate(acc, export.golden["inputs"][:n])
    for i in range(n):
        assert list(res["logits"][i]) == list(export.golden["logits"][i]), f"sample {i}: logits differ"
    assert list(res["classes"]) == list(export.golden["classes"][:n])
    assert list(res["cycles"]) == [acc.plan.cycles["total"]] * n
    # training reported the same figure from the same model (metrics.json)
    m = quick_run["metrics"]
    assert m["cycles"] == res["cycles"][0]
    assert m["dense_cycles"] == plan_accelerator(densified(export)).cycles["total"] == acc.plan.dense_cycles
    assert sum(layer["cycles"] for layer in m["layers"]) < m["cycles"]


def _prune_more(src, dst, layer_name, keep_rows):
    """A copy of an export with more tiles of one layer pruned (rows beyond keep_rows emptied)."""
    ex = load_export(src)
    weights = [l.dense_weights() for l in ex.layers]
    weights[[l.spec.name for l in ex.layers].index(layer_name)][keep_rows:] = 0
    return rewrite_export(src, dst, weights)


def test_more_pruning_takes_proportionally_fewer_cycles(export, tmp_path):
    pruned = _prune_more(export.path, tmp_path / "pruned", "conv2", 8)
    b = Accelerator(plan_accelerator(pruned))
    ma, mb = plan_accelerator(export).cycles, b.plan.cycles
    la = next(l for l in ma["layers"] if l["name"] == "conv2")
    lb = next(l for l in mb["layers"] if l["name"] == "conv2")
    nz_a = next(l.nonzero_tiles for l in export.layers if l.spec.name == "conv2")
    nz_b = next(l.nonzero_tiles for l in pruned.layers if l.spec.name == "conv2")
    assert nz_b < nz_a
    # busy cycles scale exactly with non-zero tiles; an emptied row costs one cycle per op slot
    assert la["busy_ops"] / lb["busy_ops"] == pytest.approx(nz_a / nz_b)
    res = simulate(b, pruned.golden["inputs"][:1])
    assert list(res["logits"][0]) == list(pruned.golden["logits"][0])
    assert res["cycles"][0] == mb["total"] < ma["total"]


def test_generate_bad_input(quick_run, tmp_path):
    from ternpe.image import ExportError
    with pytest.raises(GenerateError, match=r"array 3x16: the hardware needs P and G powers of two"):
        prepare(quick_run["export"], pe="3x16")
    with pytest.raises(ExportError, match="--pe 2x8: G is fixed by training"):
        prepare(quick_run["export"], pe="2x8")
    with pytest.raises(GenerateError, match="--device must be one of"):
        prepare(quick_run["export"], device="xc7")
    with pytest.raises(GenerateError, match="--pe auto picks the widest array that fits a device: give --device"):
        prepare(quick_run["export"], pe="auto")
    # a network too large for the memories: pretend the device is tiny
    import dataclasses
    from ternpe.devices import DEVICES
    DEVICES["tiny"] = dataclasses.replace(DEVICES["up5k"], name="tiny", bram=3, spram=0)
    try:
        with pytest.raises(GenerateError, match=r"(?s)does not fit tiny:.*bram: needs \d+, tiny has 3.*fix: "):
            prepare(quick_run["export"], device="tiny")
    finally:
        del DEVICES["tiny"]
    # a layer type the controller cannot run: a narrow (cin < G) layer that is not the first
    d = tmp_path / "bad"
    shutil.copytree(quick_run["export"], d)
    man = json.loads((d / "manifest.json").read_text())
    man["layers"][1]["relu"] = False
    write_manifest(d, man)
    ex = load_export(d, check_golden=False)
    with pytest.raises(GenerateError, match="layer conv2: only the last layer may be without ReLU"):
        plan_accelerator(ex)


def _check_whole_network(ex, n):
    acc = Accelerator(plan_accelerator(ex))
    res = simulate(acc, ex.golden["inputs"][:n])
    for i in range(n):
        got, want = list(res["logits"][i]), list(ex.golden["logits"][i])
        assert got == want, f"sample {i}: logits {got} != golden {want}"
    assert list(res["classes"]) == list(ex.golden["classes"][:n])
    assert list(res["cycles"]) == [acc.plan.cycles["total"]] * n
    return acc


@pytest.mark.parametrize("pe,method,lam", [("2x16", "wpc", 10.0), ("4x8", "wpc", 20.0), ("2x8", "ternary", 0.0)])
def test_accelerator_over_geometries_and_densities(make_export, pe, method, lam):
    ex = load_export(make_export(pe=pe, method=method, lam=lam)["export"])
    assert str(ex.geometry) == pe
    if method == "ternary":      # no pruning: every tile of every layer is kept (fully dense)
        assert all(l.nonzero_tiles == l.layout.rows * l.layout.cols for l in ex.layers)
    else:
        assert sum(l.nonzero_tiles for l in ex.layers) < sum(l.layout.rows * l.layout.cols for l in ex.layers)
    _check_whole_network(ex, 3)


@pytest.mark.parametrize("layer,keep", [("conv2", 0), ("conv2", 5), ("fc", 1)])
def test_accelerator_skips_rows_without_tiles(export, tmp_path, layer, keep):
    """Rows past ``keep`` lose every tile: they cost no op (a group with no tile at all costs one)
    and their outputs (activations, or logits of the last layer) are the requantized bias."""
    pruned = _prune_more(export.path, tmp_path / "p", layer, keep)
    lay = next(l for l in pruned.layers if l.spec.name == layer)
    assert lay.nonzero_tiles == int(lay.rowptr[keep])
    acc = _check_whole_network(pruned, 2)
    m = next(x for x in acc.plan.cycles["layers"] if x["name"] == layer)
    positions = lay.spec.out_h * lay.spec.out_w * (4 if lay.spec.pool else 1)
    g = pruned.geometry
    rpg = lay.layout.rows if layer == "fc" else g.G // g.P
    per_row = np.diff(lay.rowptr)
    groups_all_empty = sum(int(per_row[a:a + rpg].sum() == 0) for a in range(0, lay.layout.rows, rpg))
    assert m["ops"] == positions * (lay.nonzero_tiles * lay.layout.words_per_tile + groups_all_empty)


def test_generated_verilog_passes_verilator_lint(quick_run, tmp_path):
    """`verilator --lint-only` with only the warning classes Amaranth's Verilog raises by
    construction switched off (hw/cosim.py: KEPT_VERILATOR_WARNINGS)."""
    import subprocess
    from ternpe.flow.cosim import KEPT_VERILATOR_WARNINGS
    from ternpe.flow.generate import generate
    from ternpe.tools import require, tool_env
    env = tool_env()
    require("verilator", env=env)
    out = generate(quick_run["export"], tmp_path, log=lambda *a: None)
    cmd = ["verilator", "--lint-only", *(f"-Wno-{w}" for w in KEPT_VERILATOR_WARNINGS), str(out / "ternpe_top.v")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "%Warning" not in p.stderr, p.stderr[:3000]
