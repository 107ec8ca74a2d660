"""bench/study.py's table: means over seeds, Pareto fronts, the fastest point near float, failed cells."""

import importlib.util
import pathlib

import pytest


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def study():
    path = pathlib.Path(__file__).parent.parent / "bench" / "study.py"
    spec = importlib.util.spec_from_file_location("study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cell(row, lam, seed, acc, cycles, dense=1000, fl=0.98):
    return {"dataset": "mnist", "row": row, "lam": lam, "seed": seed, "epochs": None, "integer_accuracy": acc,
            "float_accuracy": fl, "cycles": cycles, "dense_cycles": dense, "speedup": dense / cycles}


def test_table_means_fronts_and_near_float(study):
    rs = [_cell("wpc", 1.0, s, a, c) for s, a, c in ((0, 0.978, 400), (1, 0.976, 420), (2, 0.977, 380))]
    rs += [_cell("wpc", 3.0, s, 0.90, 200) for s in range(3)]
    rs += [_cell("naive", 1.0, s, 0.970, 500) for s in range(3)]
    out = study.table(rs)
    # wpc lambda 1: 97.70 % mean, 400 cycles mean, 2.50x mean speedup, on its front
    line = next(x for x in out.splitlines() if "wpc" in x and "lambda 1 " in x)
    assert "97.70 +- 0.10 %" in line and "400" in line and "2.50x" in line and "front" in line
    # naive is beaten on both axes by wpc lambda 1: not on the common front
    common = out.split("best over all rows")[1]
    assert "naive" not in common and "wpc (lambda 1)" in common and "wpc (lambda 3)" in common
    near = out.split("fastest within")[1].split("best over")[0]
    assert "wpc" in near and "2.50x" in near          # lambda 3 is 8 points below float: not near
    assert "naive" not in near                          # 97.0 is 1 point below float 98.0


def test_failed_cells_are_listed_until_a_rerun_finishes(study):
    ok = [_cell("wpc", 1.0, 0, 0.97, 400)]
    bad = {"dataset": "mnist", "row": "wpc", "lam": 10.0, "seed": 0, "epochs": None, "error": "ContractError: x"}
    out = study.table(ok + [bad])
    assert "failed: mnist wpc lambda 10 seed 0: ContractError: x" in out
    assert "failed" not in study.table(ok + [bad, _cell("wpc", 10.0, 0, 0.1, 100)])


def test_front_keeps_only_undominated_points(study):
    pts = [{"cycles": 100, "acc": 90}, {"cycles": 200, "acc": 95}, {"cycles": 150, "acc": 89},
           {"cycles": 100, "acc": 90}]
    front = study._front(pts)
    assert {(p["cycles"], p["acc"]) for p in front} == {(100, 90), (200, 95)}
