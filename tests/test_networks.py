"""The whole accelerator over many networks, not one: bit-exact against the integer model and
cycles == the cycle model, in amaranth.sim. Each network is a seeded random export (no
training); the trained ones are covered in test_hw.py and gateware_tests/."""

import numpy as np
import pytest

from ternpe.contract import ArrayGeometry
from ternpe.cycles import drain_cycles
from ternpe.hw.accelerator import Accelerator
from ternpe.hw.plan import ROM_LOGIC_BITS, AcceleratorOptions, plan_accelerator
from ternpe.image import group_channels, widen
from ternpe.model.randnet import random_export, random_specs
from ternpe.flow.sim import simulate

NETWORKS = {
    "digits-cnn": ((8, 8, 1), "c16,p,c32,p,fc10", "1x16"),
    "mnist-28x28": ((28, 28, 1), "c8,p,c16,p,fc10", "8x8"),
    "rgb-32x32": ((32, 32, 3), "c8,p,c16,p,fc10", "8x8"),
    "five-layers-1x1": ((8, 8, 2), "c16,p,c16k1,c32,p,fc16,fc10", "4x16"),
    "stride-2": ((10, 10, 1), "c16,c32s2,fc10", "2x16"),
    "no-pool-hidden-fc": ((6, 6, 3), "c8,c8,fc16,fc5", "2x8"),
    "5x5-kernels": ((12, 12, 1), "c16k5,p,c16k5,p,fc10", "4x16"),
    "residual-identity": ((8, 8, 3), "c16,c16,c16r,fc10", "2x16"),
    "residual-option-a-narrow-pe": ((8, 8, 3), "c8,c8,c8r,c16s2,c16r,fc5", "1x8"),
    "residual-option-a-wide-pe": ((8, 8, 2), "c16,p,c16,c16r,c32s2,c32r,c32,c32r,fc10", "16x16"),
}


def check(ex, n=2, options=None, **kw):
    plan = plan_accelerator(ex, AcceleratorOptions(**(options or {})))
    res = simulate(Accelerator(plan), ex.golden["inputs"][:n], **kw)
    assert res["logits"].tolist() == ex.golden["logits"][:n].tolist()
    assert res["classes"].tolist() == ex.golden["classes"][:n].tolist()
    model = plan.cycles
    assert res["cycles"].tolist() == [model["total"]] * n
    return res, model


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_bit_exact_and_cycles_follow_the_model(name, tmp_path):
    shape, layers, pe = NETWORKS[name]
    ex = random_export(tmp_path / name, shape=shape, layers=layers, pe=pe, density=0.6, seed=len(name))
    check(ex)


# the ECP5 options (flow.resources.accelerator_options), with banks of 16 words so that even these
# small networks spread their weights and activations over several banks; a requantizer ROM word
# past ROM_LOGIC_BITS (8x8 and 16x16 here) is split by channel
ECP5_OPTIONS = {"index_in_logic": True, "ram_bank": 16, "write_reg": 2, "operand_reg": True, "requant_slices": True}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_with_the_ecp5_pipeline(name, tmp_path):
    """Every named network with the ECP5 build's options: the tile list in LUTs, banked memories,
    two write stages and two registers after each activation bank; the cycles are the model's
    with the 3 cycles of drain per layer these add."""
    shape, layers, pe = NETWORKS[name]
    ex = random_export(tmp_path / name, shape=shape, layers=layers, pe=pe, density=0.6, seed=len(name) + 1)
    _, model = check(ex, options=ECP5_OPTIONS)
    assert model["total"] == plan_accelerator(ex).cycles["total"] + 3 * len(ex.layers)
    plan = plan_accelerator(ex, AcceleratorOptions(**ECP5_OPTIONS))
    assert plan.requant_sliced == (plan.memory_shapes["requantizer constants"][0] > ROM_LOGIC_BITS)


@pytest.mark.parametrize("seed", range(3))
def test_random_wide_networks_with_the_ecp5_pipeline(seed, tmp_path):
    """Seeded random networks (residual blocks at random places) on 8- and 16-PE arrays with the
    ECP5 options: the requantizer ROM split by channel, each slice on its own address register."""
    rng = np.random.default_rng(300 + seed)
    G = 16
    P = int(rng.choice([8, 16]))
    shape, layers = random_specs(rng, G, residual=bool(seed % 2 == 0))
    ex = random_export(tmp_path / "net", shape=shape, layers=layers, pe=f"{P}x{G}",
                       density=float(rng.uniform(0.2, 1)), seed=seed)
    assert plan_accelerator(ex, AcceleratorOptions(**ECP5_OPTIONS)).requant_sliced
    check(ex, options=ECP5_OPTIONS)


@pytest.mark.parametrize("seed", range(6))
def test_random_networks(seed, tmp_path):
    """Odd seeds with the iCE40's memory options (logits and requantizer constants in block RAM)."""
    rng = np.random.default_rng(100 + seed)
    G = int(rng.choice([8, 16]))
    P = int(rng.choice([1, 2, 4]))
    shape, layers = random_specs(rng, G)
    ex = random_export(tmp_path / "net", shape=shape, layers=layers, pe=f"{P}x{G}", density=float(rng.uniform(0.2, 1)),
                       seed=seed)
    check(ex, options={"logit_ram": bool(seed % 2), "requant_bram": bool(seed % 2)})


@pytest.mark.parametrize("name,images,seed", [("digits-cnn", 1, 1), ("no-pool-hidden-fc", 1, 7),
                                              ("residual-option-a-wide-pe", 1, 2), ("five-layers-1x1", 2, 3),
                                              ("stride-2", 3, 4)])
def test_the_ice40_memory_options(name, images, seed, tmp_path):
    """The iCE40's options, bit-exact with the cycles of the others. The logits in a block RAM, a
    word per tile row, read a cycle after the argmax fetches: from 1 to 16 logits a word (classes
    that fill a word and classes that do not), on image lanes too; rows without tiles keep their
    constants from the memory's initial contents (the 2x8 network has one). The requantizer
    constants in two ROMs, the bias and shift read three cycles after the multipliers (a
    residual network's shortcut multiplier with the early ones)."""
    shape, layers, pe = NETWORKS[name]
    ex = random_export(tmp_path / name, shape=shape, layers=layers, pe=pe, density=0.3, samples=images + 1, seed=seed)
    ice = {"logit_ram": True, "requant_bram": True}
    _, model = check(ex, n=images + 1, options={**ice, "images": images}, overlap=images > 1)
    assert model == plan_accelerator(ex, AcceleratorOptions(images=images)).cycles
    plan = plan_accelerator(ex, AcceleratorOptions(**ice))
    assert plan.memory_shapes["logits"] == (plan.geometry.P * plan.logit_bits, ex.layers[-1].layout.rows)
    P, rows = plan.geometry.P, sum(l.layout.rows for l in ex.layers)
    assert plan.memory_shapes["requantizer constants"] == (P * 16 * (1 + ex.has_residual), rows)
    assert plan.memory_shapes["requantizer bias and shift"] == (P * (plan.bias_bits + 5), rows)
    if name == "no-pool-hidden-fc":
        assert plan.programs[-1].empty_rows, "the case must have a last-layer row without tiles"


@pytest.mark.parametrize("seed", range(5))
def test_random_residual_networks(seed, tmp_path):
    """Residual blocks (identity and option A) at random places, widths, geometries and densities:
    the shortcut read, its channel padding and the empty rows that still pass the requantizer."""
    rng = np.random.default_rng(200 + seed)
    G = int(rng.choice([8, 16]))
    P = int(rng.choice([1, 2, 4, 8]))
    shape, layers = random_specs(rng, G, residual=True)
    ex = random_export(tmp_path / "net", shape=shape, layers=layers, pe=f"{min(P, G)}x{G}",
                       density=float(rng.uniform(0.2, 1)), seed=seed)
    # odd seeds: the bias and shift read late; even ones: a wide ROM split by channel
    check(ex, options={"requant_bram": bool(seed % 2), "requant_slices": not seed % 2})


@pytest.mark.parametrize("pe,bank,write_reg,operand_reg", [("1x1", 16, 2, True), ("1x2", 4, 1, False),
                                                         ("2x8", 8, 2, True), ("4x16", 16, 2, True),
                                                         ("1x16", 32, 1, True), ("8x8", 512, 0, False)])
def test_memories_in_many_banks_and_short_pipelines(pe, bank, write_reg, operand_reg, tmp_path):
    """The weight ROM and the activation memory split into banks of ``bank`` words (registered,
    then muxed), with the activation write registered once or twice more and the activation read
    registered twice in its bank (the ECP5 options), down to 1-lane arrays whose pipeline is too short to
    register the shortcut's mux: bit-exact, and the cycles are the model's with the drain these
    options add (a cycle per stage)."""
    g = ArrayGeometry.parse(pe)
    G = g.G
    ex = random_export(tmp_path / "n", shape=(6, 6, 1), layers=f"c{G},c{G},c{G}r,c{2 * G}s2,c{2 * G}r,fc3", pe=pe,
                       density=0.7, seed=bank)
    plan = plan_accelerator(ex, AcceleratorOptions(ram_bank=bank, write_reg=write_reg, operand_reg=operand_reg))
    extra = write_reg + operand_reg
    assert plan.drain == drain_cycles(g) + extra
    res = simulate(Accelerator(plan), ex.golden["inputs"][:2])
    assert res["logits"].tolist() == ex.golden["logits"][:2].tolist()
    base = plan_accelerator(ex).cycles["total"]
    assert res["cycles"].tolist() == [plan.cycles["total"]] * 2 == [base + extra * len(ex.layers)] * 2
    words = plan.weight_words
    assert bank >= 512 or words > 2 * bank, "the test must span several banks"


@pytest.mark.parametrize("factor", [2, 4])
def test_widened_array_is_bit_exact_and_faster(factor, tmp_path):
    """--pe P'xG at generate time: the same export on a wider array. A wide tile is skipped only
    when all its parts are pruned, so the cycles fall by at most the factor; the channels are
    grouped first, which never costs cycles against the trained order."""
    ex = random_export(tmp_path / "n", shape=(8, 8, 1), layers="c16,p,c32,p,fc10", pe="2x16", density=0.5, seed=7)
    g = ArrayGeometry(2 * factor, 16)
    wide = widen(ex, g)
    assert wide.geometry.P == 2 * factor
    orders = wide.manifest["channel_orders"]
    assert orders[-1] is None                                   # the logits keep the classes' order
    assert any(o is not None for o in orders)                   # this network's channels were regrouped
    for i, (narrow_l, wide_l) in enumerate(zip(ex.layers, wide.layers)):
        if i and orders[i - 1] is not None:
            continue                # its input was reordered: its columns moved (the simulation checks it)
        # a wide tile is non-zero iff one of its parts is: channel order[j] sits in wide row j // P'
        order = np.arange(narrow_l.spec.cout) if orders[i] is None else np.asarray(orders[i])
        live = np.zeros((narrow_l.layout.rows * narrow_l.layout.geometry.P, narrow_l.layout.cols), bool)
        rows = np.repeat(np.arange(narrow_l.layout.rows), np.diff(narrow_l.rowptr))
        for r, c, t in zip(rows, narrow_l.cols, narrow_l.tiles):
            live[r * 2:(r + 1) * 2, c] |= (t != 0).any(axis=(1, 2))
        parts = np.zeros((wide_l.layout.rows, wide_l.layout.cols), bool)
        for j, ch in enumerate(order):
            parts[j // g.P] |= live[ch]
        got = np.zeros_like(parts)
        got[np.repeat(np.arange(wide_l.layout.rows), np.diff(wide_l.rowptr)), wide_l.cols] = True
        assert (got == parts).all()
    _, m_wide = check(wide)                                      # bit-exact, every layer, in the new order
    assert wide.golden["logits"].tolist() == ex.golden["logits"].tolist()
    m_narrow = plan_accelerator(ex).cycles
    assert m_wide["total"] < m_narrow["total"]
    assert m_narrow["total"] / m_wide["total"] <= factor
    assert m_wide["total"] <= _consecutive_cycles(ex, g)


@pytest.mark.parametrize("seed,layers", [(0, "c16,c16,c16r,c32s2,c32,c32r,fc10"),
                                         (1, "c16,c16,c16r,c16,c16r,c32s2,c32r,c32,c32r,fc10"),
                                         (2, "c16,c32,c32,c32r,c64s2,c64,c64r,fc10"),
                                         (3, "c16,p,c16,c16r,c32s2,c32r,c32,c32r,fc10")])
def test_widened_residual_network_shares_orders_across_shortcuts(seed, layers, tmp_path):
    """In a residual network the maps a shortcut joins share one order: an identity shortcut's
    source and sum the same, a pad shortcut's sum holds the source's order shifted by its
    offset. Within that, channels are regrouped; bit-exact in the new order, never slower."""
    ex = random_export(tmp_path / "n", shape=(8, 8, 2), layers=layers, pe="2x16", density=0.4, seed=seed)
    g = ArrayGeometry(8, 16)
    wide = widen(ex, g)
    orders = wide.manifest["channel_orders"]

    def order(t):
        return np.arange(ex.layers[t].spec.cout) if orders[t] is None else np.asarray(orders[t])
    assert orders[-1] is None
    joined = 0
    for j, l in enumerate(ex.layers):
        r = l.spec.residual
        if r is None or r == 0:
            continue
        src, off = order(r - 1), l.spec.shortcut_offset(ex.layers[r - 1].spec.cout)
        assert order(j)[off:off + len(src)].tolist() == (src + off).tolist(), f"layer {j}: shortcut order broken"
        pad = sorted(set(range(l.spec.cout)) - set(range(off, off + len(src))))
        assert sorted(order(j)[:off].tolist() + order(j)[off + len(src):].tolist()) == pad
        joined += 1
        if l.spec.shortcut == "pad":        # these networks' pad shortcuts carry a regrouped order on
            assert orders[r - 1] is not None
    assert joined
    assert any(o is not None for o in orders), "nothing was regrouped"
    check(wide)
    assert wide.golden["logits"].tolist() == ex.golden["logits"].tolist()
    assert plan_accelerator(wide).cycles["total"] <= _consecutive_cycles(ex, g)


def _consecutive_cycles(ex, g):
    """Cycles on ``g`` with the channels in their trained order (no grouping)."""
    from ternpe.image import _cycles
    return _cycles(ex, g, [l.dense_weights() for l in ex.layers])


def test_channel_grouping_puts_channels_pruned_alike_together():
    """Hand-made masks: the fullest channel starts a tile and takes the channel that adds the
    fewest columns (ties: the fuller, then the lower index); empty channels come last."""
    m = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 1]], bool)
    assert group_channels(m, 2).tolist() == [5, 0, 1, 4, 2, 3]      # 5 tiles; the trained order has 6


def test_channel_grouping_gives_every_activation_word_a_live_tile():
    """Rows sharing an activation word with no tile still cost an op per position: with two words
    of two 2-channel rows each and two live tiles, each word gets one."""
    m = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]], bool)
    assert group_channels(m, 2).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]            # live rows together
    spread = group_channels(m, 2, per_word=2).tolist()
    assert [set(spread[k:k + 2]) for k in (0, 4)] == [{0, 1}, {2, 3}]           # one live row per word
    assert set(spread[2:4]) | set(spread[6:8]) == {4, 5, 6, 7}


@pytest.mark.parametrize("seed", range(20))
def test_channel_grouping_finds_the_grouping_when_one_exists(seed):
    """Seeded random masks made of a few column patterns, each on a multiple of P channels, then
    shuffled: the grouping puts every pattern's channels in tiles of their own (the fewest tiles)."""
    rng = np.random.default_rng(seed)
    P = int(rng.choice([2, 4, 8]))
    cols = int(rng.integers(1, 12))
    patterns = rng.random((int(rng.integers(1, 6)), cols)) < rng.random()
    counts = [P * int(rng.integers(1, 4)) for _ in patterns]
    masks = np.repeat(patterns, counts, axis=0)
    masks = masks[rng.permutation(len(masks))]
    order = group_channels(masks, P)
    assert sorted(order.tolist()) == list(range(len(masks)))
    grouped = masks[order].reshape(-1, P, cols)
    assert int(grouped.any(axis=1).sum()) == sum(c // P * int(p.sum()) for p, c in zip(patterns, counts))


def test_next_image_loads_while_this_one_computes(tmp_path):
    """Back-to-back images: the classes come out ``throughput`` cycles apart, not load + compute."""
    ex = random_export(tmp_path / "n", shape=(8, 8, 1), layers="c16,p,c32,p,fc10", pe="2x16", density=0.7,
                       samples=3, seed=3)
    res, model = check(ex, n=3, overlap=True)
    gaps = np.diff(res["done_at"])
    assert gaps.tolist() == [model["throughput"]] * 2
    assert res["done_at"][0] == model["latency"]
    assert model["throughput"] < model["load"] + model["total"]


def test_widening_is_checked(tmp_path):
    from ternpe.image import ExportError
    ex = random_export(tmp_path / "n", shape=(8, 8, 1), layers="c16,p,c32,p,fc10", pe="2x16", seed=1)
    with pytest.raises(ExportError, match=r"--pe 3x16: P'=3 must be a multiple of the trained P=2 .* --pe 4x16"):
        widen(ex, ArrayGeometry(3, 16))
    with pytest.raises(ExportError, match="--pe 4x8: G is fixed by training"):
        widen(ex, ArrayGeometry(4, 8))
    assert widen(ex, ex.geometry) is ex


def test_dense_baseline_of_the_speedup(tmp_path):
    """densified(): every tile kept; its cycles are those of the same network refilled to density 1."""
    from ternpe.image import densified, with_tile_density
    ex = random_export(tmp_path / "n", shape=(8, 8, 1), layers="c16,p,c32,p,fc10", pe="1x16", density=0.4, seed=2)
    full = with_tile_density(ex.path, tmp_path / "full", 1.0)
    assert all(l.nonzero_tiles == l.layout.count for l in densified(ex).layers)
    cyc = lambda e: plan_accelerator(e).cycles["total"]
    assert cyc(densified(ex)) == cyc(full) == plan_accelerator(ex).dense_cycles > cyc(ex)


def test_pe_auto_picks_the_fastest_array_and_lanes_that_fit(tmp_path):
    """--pe auto: of every array P' x G (P' from the trained P to G) with 1, 2, ... image lanes,
    the one with the fewest cycles per image that fits (logic to AUTO_FILL, block RAMs to
    AUTO_BRAM_FILL) and that the input stream still feeds; checked against a brute-force search,
    on every device and small ones (one whose block RAM fill binds)."""
    import dataclasses
    from ternpe.devices import DEVICES
    from ternpe.flow.resources import (AUTO_BRAM_FILL, FitError, auto_bram_fill, auto_fill, auto_plan, estimate,
                                       over_budget, plan_for_device, with_images)
    ex = random_export(tmp_path / "n", shape=(8, 8, 1), layers="c16,p,c32,p,fc10", pe="1x16", seed=4)
    for dev in [*DEVICES.values(), dataclasses.replace(DEVICES["ecp5-85f"], name="small", lut=12000),
                dataclasses.replace(DEVICES["ecp5-85f"], name="tiny", lut=6000, ff=6000),
                dataclasses.replace(DEVICES["ecp5-85f"], name="ecp5-85f", bram=30)]:
        plan, limit = auto_plan(ex, dev)
        assert plan.options == with_images(plan_for_device(widen(ex, plan.geometry), dev), plan.images).options

        def fits(p):
            e, have = estimate(p, dev), dev.as_dict()
            return (all(e[k] <= have[k] for k in ("spram", "dsp")) and e["bram"] <= auto_bram_fill(dev) * have["bram"]
                    and all(e[k] is None or e[k] <= auto_fill(dev) * have[k] for k in ("lut", "ff")))
        fitting = [p for P in (1, 2, 4, 8, 16) for n in range(1, 40)
                   for p in [with_images(plan_for_device(widen(ex, ArrayGeometry(P, 16)), dev), n)]
                   if fits(p) and (n == 1 or not p.cycles["load_bound"])]
        if not fitting:         # the trained array alone is past the fill: taken as it is
            assert (plan.geometry, plan.images) == (ex.geometry, 1) and "alone needs more than" in limit, dev.name
            continue
        assert fits(plan)
        best = min(fitting, key=lambda p: p.cycles["per_image"])
        assert plan.cycles["per_image"] == best.cycles["per_image"], (dev.name, plan.summary(), best.summary())
        nxt = with_images(plan, plan.images + 1)
        if fits(nxt):
            assert nxt.cycles["load_bound"] and limit.startswith("the input stream")
        elif (dev.name, dev.bram) == ("ecp5-85f", 30):
            # the lane after it wants more than the share of the block RAMs --pe auto fills
            assert f"BRAM of 30 ({AUTO_BRAM_FILL['ecp5-85f']:.0%} filled at most)" in limit, limit
        else:
            assert limit.startswith(f"{plan.geometry} with {plan.images + 1} image lanes would need ")
        for n in (2, 3):        # lanes given: the fastest array with n lanes within the same shares
            with_n = [p for p in fitting if p.images == n]
            trained = with_images(plan_for_device(ex, dev), n)
            if not with_n and over_budget(estimate(trained, dev), dev):    # not even on the whole device
                with pytest.raises(FitError, match=f"does not fit {dev.name}"):
                    auto_plan(ex, dev, images=n)
                continue
            given, lim = auto_plan(ex, dev, images=n)
            if with_n:
                assert fits(given) and given.images == n and lim == f"--image-lanes {n} (given)", dev.name
                assert given.cycles["per_image"] == min(p.cycles["per_image"] for p in with_n)
            else:
                assert (given.geometry, given.images) == (ex.geometry, n) and "alone needs more than" in lim
    small = plan_for_device(ex, "ecp5-85f")
    assert auto_plan(ex, "ecp5-85f", images=3)[0].images == 3
    assert small.images == 1


@pytest.mark.parametrize("name,images", [("digits-cnn", 2), ("residual-option-a-narrow-pe", 2), ("5x5-kernels", 4),
                                         ("rgb-32x32", 3), ("residual-identity", 4)])
@pytest.mark.long
def test_image_lanes(name, images, tmp_path):
    """N image lanes in lockstep on one controller and one weight ROM: every image bit-exact (a
    batch that is not full is filled with blank images), the batch's cycles, latency and
    throughput the model's, with the ECP5 options on the odd cases."""
    shape, layers, pe = NETWORKS[name]
    ex = random_export(tmp_path / name, shape=shape, layers=layers, pe=pe, density=0.6, samples=images + 1,
                       seed=images + len(name))
    options = {"images": images, **(ECP5_OPTIONS if images % 2 else {})}
    res, model = check(ex, n=images + 1, options=options, overlap=True)
    single = plan_accelerator(ex, AcceleratorOptions(**{**options, "images": 1})).cycles
    # the layers cost what one image's do, with three cycles of drain for the lanes' own operand,
    # write-back and logit-row registers; the argmax runs once per image
    assert model["total"] == single["total"] + 3 * len(ex.layers) + (images - 1) * single["argmax"]
    assert res["done_at"][images - 1] == model["latency"]
    gap = res["done_at"][images] - res["done_at"][0]
    # where the input stream is the bound, the model's throughput is a lower bound
    assert gap >= model["throughput"] if model["load_bound"] else gap == model["throughput"]
    assert model["load_bound"] == (name == "rgb-32x32")
    if not model["load_bound"]:
        assert model["per_image"] < single["throughput"] / (images - 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_random_networks_on_image_lanes(seed, tmp_path):
    rng = np.random.default_rng(300 + seed)
    G = int(rng.choice([8, 16]))
    P = int(rng.choice([1, 2, 4]))
    shape, layers = random_specs(rng, G, residual=bool(seed % 2))
    ex = random_export(tmp_path / "net", shape=shape, layers=layers, pe=f"{min(P, G)}x{G}",
                       density=float(rng.uniform(0.2, 1)), samples=3, seed=seed)
    check(ex, n=3, options={"images": int(rng.choice([2, 3, 4]))})
