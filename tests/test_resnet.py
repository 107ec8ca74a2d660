"""Residual blocks and the average pool in the contract, the integer model and the export
(ResNet-20, option A shortcuts), on CIFAR-shaped synthetic data (32x32x3)."""

import dataclasses

import numpy as np
import pytest
import torch

from ternpe.contract import (ArrayGeometry, ContractError, LayerSpec, RequantParams, conv_accumulate,
                             gap_fc_weights, requant_params, requantize, run_integer_network, shortcut_map)


def _rand_net(rng, shortcut):
    """conv(3->8) -> conv(8->c, s) -> conv(c->c, residual=1) -> fc, random weights and requantizers."""
    c, s = (16, 2) if shortcut == "pad" else (8, 1)
    specs = [LayerSpec("a", "conv", 3, 8, in_h=8, in_w=8, k=3, pad=1),
             LayerSpec("b", "conv", 8, c, in_h=8, in_w=8, k=3, stride=s, pad=1),
             LayerSpec("c", "conv", c, c, in_h=8 // s, in_w=8 // s, k=3, pad=1, residual=1, shortcut=shortcut),
             LayerSpec("fc", "fc", (8 // s) ** 2 * c, 5, relu=False)]
    weights = [rng.integers(-1, 2, sp.weight_shape) for sp in specs]
    requants = [requant_params(rng.uniform(0.001, 0.01, sp.cout), rng.uniform(-2, 2, sp.cout),
                               res_real=rng.uniform(0.5, 1.5) if sp.residual is not None else None) for sp in specs]
    return specs, weights, requants


@pytest.mark.parametrize("shortcut", ["identity", "pad"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_residual_layer_adds_the_shortcut_in_the_requantizer(shortcut, seed):
    rng = np.random.default_rng(seed)
    specs, weights, requants = _rand_net(rng, shortcut)
    x = rng.integers(0, 256, (3, 8, 8, 3))
    outs = run_integer_network(x, specs, weights, requants, act_bits=8)
    # by hand: layer c's accumulator, plus layer b's *input* (outs[0]) as the shortcut
    src = outs[0]
    if shortcut == "pad":
        src = np.concatenate([np.zeros((3, 4, 4, 4), np.int64), src[:, ::2, ::2, :], np.zeros((3, 4, 4, 4), np.int64)], 3)
    rq = requants[2]
    acc = conv_accumulate(outs[1], weights[2], specs[2])
    want = np.clip((acc * rq.mult + rq.bias + src * rq.res_mult) >> rq.shift, 0, 255)
    np.testing.assert_array_equal(outs[2], want)
    assert (outs[2] != requantize(acc, rq, relu=True, act_bits=8)).any(), "the shortcut must change the output"


def test_requant_params_keep_both_multipliers_in_range():
    rq = requant_params(np.array([1e-4, 0.5]), np.zeros(2), res_real=np.array([3.0, 0.2]))
    limit = (1 << 15) - 1
    assert np.abs(rq.mult).max() <= limit and np.abs(rq.res_mult).max() <= limit
    # the larger of the two keeps 15 significant bits
    assert max(abs(int(rq.mult[0])), abs(int(rq.res_mult[0]))) > limit // 2


def test_shortcut_and_residual_are_checked():
    with pytest.raises(ContractError, match="residual add ends a conv layer"):
        LayerSpec("c", "conv", 8, 8, in_h=4, in_w=4, k=3, pad=1, residual=0, pool=2)
    with pytest.raises(ContractError, match="shortcut must be"):
        LayerSpec("c", "conv", 8, 8, in_h=4, in_w=4, k=3, pad=1, residual=0, shortcut="conv1x1")
    spec = LayerSpec("c", "conv", 8, 8, in_h=4, in_w=4, k=3, pad=1, residual=0)
    with pytest.raises(ContractError, match="does not match its output"):
        shortcut_map(np.zeros((1, 8, 8, 8)), spec)
    rng = np.random.default_rng(0)
    specs, weights, requants = _rand_net(rng, "identity")
    bad = [*specs[:2], dataclasses.replace(specs[2], residual=3), specs[3]]
    with pytest.raises(ContractError, match="not an earlier layer"):
        run_integer_network(rng.integers(0, 256, (1, 8, 8, 3)), bad, weights, requants, act_bits=8)
    with pytest.raises(ContractError, match="needs a requantizer with res_mult"):
        requantize(np.zeros((1, 8)), RequantParams(np.ones(8, np.int64), np.zeros(8, np.int64), np.zeros(8, np.int64)),
                   relu=True, act_bits=8, shortcut=np.zeros((1, 8)))


def test_average_pool_then_fc_is_an_fc_over_the_flattened_map():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (4, 4, 4, 16))
    w = rng.integers(-1, 2, (10, 16))
    spec = LayerSpec("fc", "fc", 4 * 4 * 16, 10, relu=False)
    acc = conv_accumulate(x, gap_fc_weights(w, 16), spec)
    np.testing.assert_array_equal(acc, x.sum(axis=(1, 2)) @ w.T)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    from ternpe.model.data import synthetic
    from ternpe.model.train import TrainConfig, train
    torch.set_num_threads(1)
    ds = synthetic(n=192, size=32, classes=10, channels=3, name="synthetic-rgb32")
    cfg = TrainConfig(dataset="synthetic-rgb32", arch="resnet20", epochs_float=5, epochs_ternary=2, epochs_finetune=1,
                      lam=1.0, seed=0)
    net, metrics = train(cfg, tmp_path_factory.mktemp("rn") / "run", dataset=ds, log=lambda *a: None)
    return net.eval(), metrics, ds


def test_resnet_folds_block_by_block(resnet):
    """Each block fed the integer model's own input: its two quantized activations equal the
    integer model's to within one step (rounding ties), nearly all exactly; the logits agree."""
    from ternpe.model.fold import INPUT_SCALE, fold
    net, metrics, ds = resnet
    im = fold(net)
    assert [s.residual for s in im.specs][2::2][:9] == [1, 3, 5, 7, 9, 11, 13, 15, 17]
    assert [s.shortcut for s in im.specs][2:20:2] == ["identity"] * 3 + ["pad", "identity", "identity"] * 2
    x = ds.x_test[:16]
    outs = im.run(x)

    def f(a, step):
        return torch.from_numpy(a.astype(np.float64) * step).float().permute(0, 3, 1, 2)

    def q(t, step):
        return np.round(t.detach().double().numpy().transpose(0, 2, 3, 1) / step)
    with torch.no_grad():
        stem = net.a0(torch.relu(net.bn1(net.conv1(f(x, INPUT_SCALE)))))
        checks = [(outs[0], q(stem, net.a0.step))]
        for k, b in enumerate(net.layers):
            src = outs[2 * k]                       # the block's input, as the integer model holds it
            step_in = net.a0.step if k == 0 else net.layers[k - 1].a2.step
            mid = []
            h = b.a1.register_forward_hook(lambda m, i, o: mid.append(o))
            y = b(f(src, step_in))
            h.remove()
            checks += [(outs[2 * k + 1], q(mid[0], b.a1.step)), (outs[2 * k + 2], q(y, b.a2.step))]
        pooled = torch.nn.functional.adaptive_avg_pool2d(f(outs[-2], net.layers[-1].a2.step), 1).flatten(1)
        logits = net.fc(pooled).double().numpy()
    for i, (got, want) in enumerate(checks):
        assert (got > 0).mean() > 0.05 and got.max() > 16, f"layer {i} is (nearly) all zero: nothing compared"
        diff = np.abs(got - want)
        assert diff.max() <= 2, f"layer {i} differs by {diff.max()} steps"
        assert (diff == 0).mean() > 0.95, f"layer {i}: only {(diff == 0).mean():.3f} exact"
    np.testing.assert_allclose(outs[-1] * im.logit_scale, logits, atol=4 * im.logit_scale + 1e-3 * np.abs(logits).max())
    assert metrics["integer_accuracy"] is not None and metrics["exportable"]


def test_resnet_export_round_trip_and_cycles(resnet, tmp_path):
    from ternpe.cycles import cycle_model
    from ternpe.image import ExportError, golden_vectors, load_export, write_export, write_manifest
    from ternpe.model.fold import fold
    net, metrics, ds = resnet
    im = fold(net)
    x = ds.x_test[:6]
    outs = im.run(x)
    golden = golden_vectors(x, ds.y_test[:6], outs)
    write_export(tmp_path / "e", geometry=ArrayGeometry.parse("1x16"), act_bits=8, specs=im.specs, weights=im.weights,
                 requants=im.requants, golden=golden, logit_scale=im.logit_scale)
    ex = load_export(tmp_path / "e")        # reruns the integer model from the image: residuals round-trip
    assert [l.spec.residual for l in ex.layers] == [s.residual for s in im.specs]
    assert (tmp_path / "e" / "s2b1c2.res_mult.hex").is_file()
    # the training's cycle figure is the cycle model's over the exported tiles (the pooled fc: 64 x its tiles)
    rows = [np.diff(l.rowptr) for l in ex.layers]
    assert cycle_model([l.spec for l in ex.layers], ex.geometry, rows)["total"] == metrics["cycles"]
    # a wrong shortcut multiplier is caught by the golden check, naming the layer
    import json
    f = tmp_path / "e" / "s1b2c2.res_mult.hex"
    lines = f.read_text().split()
    lines[0] = format((int(lines[0], 16) + 4096) % (1 << 16), "04x")
    f.write_text("\n".join(lines) + "\n")
    man = json.loads((tmp_path / "e" / "manifest.json").read_text())
    from ternpe.image import _sha256
    man["files"]["s1b2c2.res_mult.hex"] = _sha256(f)
    write_manifest(tmp_path / "e", man)
    with pytest.raises(ExportError, match="s1b2c2: the image does not reproduce the golden output"):
        load_export(tmp_path / "e")


def test_generate_says_the_hardware_does_not_run_residual_layers_yet(resnet, tmp_path):
    from ternpe.flow.generate import generate
    from ternpe.model.fold import fold
    from ternpe.image import golden_vectors, write_export
    from ternpe.hw.accelerator import GenerateError
    net, _, ds = resnet
    im = fold(net)
    x = ds.x_test[:2]
    outs = im.run(x)
    write_export(tmp_path / "e", geometry=ArrayGeometry.parse("1x16"), act_bits=8, specs=im.specs, weights=im.weights,
                 requants=im.requants, logit_scale=im.logit_scale,
                 golden=golden_vectors(x, ds.y_test[:2], outs))
    with pytest.raises(GenerateError, match="residual add"):
        generate(tmp_path / "e", tmp_path / "v")


def test_the_pooled_classifier_costs_its_tiles_at_every_pixel(resnet):
    """--cost cycles weighs a classifier tile by the 64 copies the hardware runs."""
    from ternpe.cycles import tile_cycles
    from ternpe.model.train import _Groups
    net, _, _ = resnet
    g = _Groups(net, ArrayGeometry.parse("1x16"), "cycles")
    fc, last = g.layers[-1], g.layers[-2]
    assert fc.repeats == 64
    want = 64 * tile_cycles(fc.spec, g.geometry) / tile_cycles(last.spec, g.geometry)
    assert g.weights[-1] / g.weights[-2] == pytest.approx(want)
