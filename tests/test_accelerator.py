"""The whole accelerator (hw/accelerator.py) on trained exports, against the golden outputs and
the cycle model; many random networks are in test_networks.py."""

import numpy as np
import pytest

from ternpe.flow.sim import simulate
from ternpe.hw.accelerator import Accelerator
from ternpe.hw.plan import plan_accelerator
from ternpe.image import densified, load_export, rewrite_export


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def export(quick_run):
    return load_export(quick_run["export"])


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


