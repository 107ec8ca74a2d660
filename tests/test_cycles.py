"""The one cycle model (ternpe.cycles): what hw/ reports and what training weighs and reports.

Its figures are held equal to the simulated cycle counter in tests/test_networks.py and
tests/test_hw.py; here, that it agrees with the controller's tile program and that a tile's
cost is exactly what pruning it saves, over many seeded random networks and geometries.
"""

import numpy as np
import pytest

from ternpe import cycles
from ternpe.contract import ArrayGeometry, TileLayout, parse_layers
from ternpe.hw.weights import tile_program
from ternpe.model.randnet import random_export, random_specs

GEOMETRIES = ["1x16", "2x16", "4x16", "1x8", "8x8"]


@pytest.mark.parametrize("seed", range(10))
def test_ops_follow_the_controllers_tile_program(tmp_path, seed):
    rng = np.random.default_rng(seed)
    pe = GEOMETRIES[seed % len(GEOMETRIES)]
    g = ArrayGeometry.parse(pe)
    shape, layers = random_specs(rng, g.G, residual=seed >= 5)
    ex = random_export(tmp_path / "e", shape=shape, layers=layers, pe=pe, density=float(rng.uniform(0.1, 0.9)),
                       seed=seed)
    n = len(ex.layers)
    model = cycles.cycle_model([l.spec for l in ex.layers], g, [np.diff(l.rowptr) for l in ex.layers])
    for i, (l, lm) in enumerate(zip(ex.layers, model["layers"])):
        rpg = cycles.rows_per_group(g, l.spec, i == n - 1)
        prog = tile_program(l, rows_per_group=rpg)
        ops = prog.ops_per_position * (4 if l.spec.pool else 1) * l.spec.out_h * l.spec.out_w
        assert lm["ops"] == ops, (layers, pe, l.spec.name)


@pytest.mark.parametrize("pe", GEOMETRIES)
def test_a_tile_costs_what_pruning_it_saves(pe):
    g = ArrayGeometry.parse(pe)
    rng = np.random.default_rng(len(pe))
    for trial in range(10):
        shape, text = random_specs(rng, g.G)
        specs = parse_layers(text, shape, int(text.rsplit("fc", 1)[1]))
        rows = [np.array(cycles.dense_row_tiles(s, g)) for s in specs]
        base = cycles.cycle_model(specs, g, rows)["total"]
        assert base == cycles.cycle_model(specs, g)["total"]            # None means dense
        for i, s in enumerate(specs):
            if i == 0 and cycles.window_mode(s, g):
                continue                                             # paced by the patch gatherer
            if TileLayout(s, g).cols < 2:
                continue                                             # emptying a row is a different case
            fewer = [r.copy() for r in rows]
            fewer[i][0] -= 1
            assert base - cycles.cycle_model(specs, g, fewer)["total"] == cycles.tile_cycles(s, g), (text, pe, s.name)


def test_an_empty_row_group_costs_one_op_per_position():
    g = ArrayGeometry(1, 16)
    s = parse_layers("c16,p,c32,fc10", (8, 8, 1), 10)
    conv2 = s[1]
    rpg = cycles.rows_per_group(g, conv2, False)
    assert rpg == 16
    rows = [cycles.dense_row_tiles(x, g) for x in s]
    rows[1] = [0] * 16 + [1] * 16                     # the first word group has no tile at all
    per_pos = cycles.ops_per_position(rows[1], TileLayout(conv2, g).words_per_tile, rpg)
    assert per_pos == 1 + 16 * 9


def test_an_empty_row_of_a_residual_layer_costs_one_op():
    """Its output is the requantized shortcut, not a constant: every row is its own group."""
    g = ArrayGeometry(1, 16)
    s = parse_layers("c16,c16,c16r,fc10", (8, 8, 1), 10)
    assert s[2].residual == 1 and cycles.rows_per_group(g, s[2], False) == 1
    assert cycles.rows_per_group(g, s[1], False) == 16
    rows = [cycles.dense_row_tiles(x, g) for x in s]
    full = cycles.cycle_model(s, g, rows)["total"]
    rows[2] = [0] + [1] * 15
    assert full - cycles.cycle_model(s, g, rows)["total"] == 64 * (9 - 1)


def test_the_model_refuses_mismatched_rows():
    g = ArrayGeometry(1, 16)
    s = parse_layers("c16,p,fc10", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="tile rows"):
        cycles.cycle_model(s, g, [[1] * 3, [8] * 10])
    with pytest.raises(ValueError, match="tile-row lists"):
        cycles.cycle_model(s, g, [[1] * 16])
