"""Shared pieces of the co-simulation tests: the exports they run and the simulators."""

import pytest

from ternpe.image import load_export, with_tile_density

SIMULATORS = ["icarus", "verilator"]


@pytest.fixture(scope="session")
def cosim_export(make_export, tmp_path_factory):
    """``cosim_export(pe, level)``: a synthetic-set export on a ``pe`` array; ``level`` "trained"
    is the WPC run as trained, "sparse" the same network at tile density 0.3."""
    cache = {}

    def get(pe, level):
        if (pe, level) not in cache:
            base = make_export(pe=pe)["export"]
            if level == "trained":
                cache[pe, level] = load_export(base)
            else:
                cache[pe, level] = with_tile_density(base, tmp_path_factory.mktemp(f"sparse-{pe}"), 0.3)
        return cache[pe, level]
    return get
