"""Session fixtures shared by tests/ and gateware_tests/: short training runs and their exports."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """The ``long`` tests and the groups that keep to one worker (``xdist_group``: bitstream
    verify, formal, distributed training) first: pytest-xdist's ``--dist loadgroup`` (make test)
    hands out work in collection order, so they start at once and the short tests fill in around
    them, instead of a group of several minutes starting last on one worker while the other idles."""
    def first(item):
        return item.get_closest_marker("long") is not None or item.get_closest_marker("xdist_group") is not None
    items.sort(key=lambda item: not first(item))        # stable: each part keeps its order


@pytest.fixture(scope="session", autouse=True)
def _unused_elaboratables_warn():
    """Amaranth stays silent about blocks built and never elaborated until a process has
    elaborated something; elaborate a trivial module first, so that in every test worker a
    block that is built and then refused (left unused) fails the test that leaves it, whatever
    ran before it on that worker."""
    from amaranth.hdl import Fragment, Module
    Fragment.get(Module(), None)


def _train_and_export(root, *, pe="1x16", method="wpc", lam=10.0, seed=3, samples=16):
    import torch
    torch.set_num_threads(1)
    from ternpe.model.export import export_run
    from ternpe.model.train import TrainConfig, train
    cfg = TrainConfig(dataset="synthetic", method=method, lam=lam, pe=pe, epochs_float=4, epochs_ternary=6,
                      epochs_finetune=2, seed=seed)
    net, metrics = train(cfg, root / "run", log=lambda *a: None)
    export_run(root / "run", root / "export", samples=samples, log=lambda *a: None)
    return {"root": root, "run": root / "run", "export": root / "export", "net": net, "metrics": metrics, "cfg": cfg}


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """A short WPC run on the synthetic set (1x16 array), written to disk, and its export."""
    return _train_and_export(tmp_path_factory.mktemp("quick"))


@pytest.fixture(scope="session")
def make_export(tmp_path_factory):
    """``make_export(pe=..., method=..., lam=...)`` -> a run and export on the synthetic set, cached per session."""
    cache = {}

    def make(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            name = "-".join(f"{v}" for _, v in key) or "default"
            cache[key] = _train_and_export(tmp_path_factory.mktemp(name.replace(".", "_")), **kw)
        return cache[key]
    return make
