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


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
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


@pytest.mark.long
def test_resnet20_runs_on_the_accelerator_and_the_up5k_refuses_it(resnet, tmp_path):
    """The trained ResNet-20 on the Verilator board (its Verilog behind the UART host link):
    bit-exact logits and class, cycles = the model's (every layer through the debug taps is
    checked in .ci/run: `make resnet20`). The UP5K says which memories do not fit."""
    from ternpe.flow.generate import prepare
    from ternpe.flow.resources import FitError
    from ternpe.flow.vboard import VerilatorTransport
    from ternpe.flow.host import Board
    from ternpe.hw.plan import MemoryName, plan_accelerator
    from ternpe.model.fold import fold
    from ternpe.image import golden_vectors, load_export, write_export
    net, metrics, ds = resnet
    im = fold(net)
    x = ds.x_test[:2]
    outs = im.run(x)
    write_export(tmp_path / "e", geometry=ArrayGeometry.parse("1x16"), act_bits=8, specs=im.specs, weights=im.weights,
                 requants=im.requants, logit_scale=im.logit_scale,
                 golden=golden_vectors(x, ds.y_test[:2], outs))
    ex = load_export(tmp_path / "e")
    plan = plan_accelerator(ex)
    bits = plan.memory_bits()
    assert bits[MemoryName.SHORTCUT] == bits[MemoryName.ACTIVATIONS]
    t = VerilatorTransport(plan, build_dir=tmp_path / "vboard")
    board = Board(t, t.core.link.format)
    for k in range(2):
        r = board.infer(x[k])
        assert r["logits"] == ex.golden["logits"][k].tolist() and r["class"] == int(ex.golden["classes"][k])
        assert r["cycles"] == plan.cycles["total"] == metrics["cycles"]
    t.close()
    with pytest.raises(FitError, match=r"does not fit up5k:\n  bram: needs \d+, up5k has 30\n.*activations"):
        prepare(tmp_path / "e", device="up5k")
    assert prepare(tmp_path / "e", device="ecp5-85f")[1]["bram"] <= 208


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


def test_cnr_in_a_layer_spec_is_a_residual_block():
    from ternpe.contract import parse_layers
    s = parse_layers("c16,c16,c16r,c32s2,c32r,fc10", (8, 8, 3), 10)
    assert [(x.residual, x.shortcut) for x in s] == [(None, "identity")] * 2 + [(1, "identity"), (None, "identity"),
                                                                                  (3, "pad"), (None, "identity")]
    for bad, why in [("c16,p,c16r", "must follow a conv without a pool"), ("c16r", "must follow a conv"),
                     ("c16,c16,c32r", "halve to that map"), ("c16,c16,c8r", "halve to that map")]:
        with pytest.raises(ContractError, match=why):
            parse_layers(bad, (8, 8, 3), 10)


def _reads_writes(spec, G, read_base, write_base):
    """Per output pixel of a hidden conv layer, in the order the controller runs them: the words
    of the input map its window reads (every pool position, every tap inside the map, every
    channel word) and the words of the output map it writes, as absolute addresses."""
    cw, co = max(1, spec.cin // G), -(-spec.cout // G)
    npool = 2 if spec.pool else 1
    out = []
    for py in range(spec.out_h):
        for px in range(spec.out_w):
            reads = set()
            for qy in range(npool):
                for qx in range(npool):
                    cy, cx = py * npool + qy, px * npool + qx
                    for ky in range(spec.k):
                        for kx in range(spec.k):
                            iy, ix = cy * spec.stride - spec.pad + ky, cx * spec.stride - spec.pad + kx
                            if 0 <= iy < spec.in_h and 0 <= ix < spec.in_w:
                                reads.update(read_base + (iy * spec.in_w + ix) * cw + c for c in range(cw))
            p = py * spec.out_w + px
            out.append((reads, set(range(write_base + p * co, write_base + (p + 1) * co))))
    return out


@pytest.mark.parametrize("seed", range(24))
def test_activation_regions_never_overwrite_a_map_still_to_be_read(seed):
    """Over random networks, residual or not: the words a layer writes hold no map a later layer
    reads (a shortcut, a map kept for one); where a layer's output overlaps its own input (a
    sequential network's placement), no output pixel writes a word that it or a later pixel of
    the layer still reads (checked pixel by pixel against the layer's windows)."""
    from ternpe.contract import parse_layers
    from ternpe.hw.actmem import plan_activations
    from ternpe.model.randnet import random_specs
    rng = np.random.default_rng(seed)
    G = int(rng.choice([8, 16]))
    shape, text = random_specs(rng, G, residual=seed % 3 != 0)
    specs = parse_layers(text, shape, int(text.rsplit("fc", 1)[1]))
    reg = plan_activations(specs, G)
    bases = reg.layer_bases
    n = len(specs)
    words = [-(-s.out_h * s.out_w * s.cout // G) for s in specs]
    span = {k: range(bases[k][1], bases[k][1] + words[k]) for k in range(n - 1)}
    for i in range(n - 1):
        readers = {k: max([k + 1] + [j for j, s in enumerate(specs) if s.residual == k + 1]) for k in range(i)}
        for k, last in readers.items():
            if last > i and not (k == i - 1 and last == i):    # read after layer i, not only as its input
                assert not set(span[i]) & set(span[k]), (text, i, k)
        if i >= 1 and set(span[i]) & set(span[i - 1]):
            assert specs[i].kind == "conv" and specs[i].residual is None, (text, i)
            trace = _reads_writes(specs[i], G, bases[i][0], bases[i][1])
            still_read = set()
            for reads, writes in reversed(trace):
                still_read |= reads
                assert not writes & still_read, (text, i)
    assert max(bases[k][1] + words[k] for k in range(n - 1)) <= reg.depth
    assert min(bases[k][1] for k in range(n - 1)) >= 0
    if any(s.residual is not None for s in specs):
        assert len(reg.buffers) == 3
    else:                                          # never more words than the two ping-pong regions
        assert reg.depth <= max(words[0:n - 1:2]) + max(words[1:n - 1:2] or [1])


def test_overlapping_maps_save_block_rams_on_mnist_shapes():
    """The MNIST CNN's 14x14x16 and 7x7x32 maps: the second starts 3 words below the first and
    overlaps it, 199 words instead of 294 (eight iCE40 block RAMs instead of sixteen)."""
    from ternpe.contract import parse_layers
    from ternpe.hw.actmem import overlap_limit, plan_activations
    specs = parse_layers("c16,p,c32,p,fc10", (28, 28, 1), 10)
    assert overlap_limit(specs, 16, 1) == -3
    act = plan_activations(specs, 16)
    assert act.depth == 199 and act.bases == (3, 0)


def test_a_residual_layer_spec_trains_folds_and_runs(tmp_path):
    """--arch with cNr: SeqNet adds the (quantized) shortcut before the ReLU, as the integer model does;
    each block fed the integer model's own input and shortcut matches it."""
    from ternpe.model.data import synthetic
    from ternpe.model.fold import INPUT_SCALE, fold
    from ternpe.model.train import TrainConfig, train
    torch.set_num_threads(1)
    ds = synthetic(n=96, size=8, classes=4, channels=3, name="synthetic")
    cfg = TrainConfig(dataset="synthetic", arch="c16,c16,c16r,c32s2,c32r,fc4", epochs_float=2, epochs_ternary=1,
                      epochs_finetune=1, seed=0)
    net, metrics = train(cfg, tmp_path / "run", dataset=ds, log=lambda *a: None)
    net.eval()
    im = fold(net)
    assert [s.residual for s in im.specs] == [None, None, 1, None, 3, None]
    x = ds.x_test[:16]
    outs = im.run(x)
    steps = [INPUT_SCALE] + [b.act.step for b in net.blocks[:-1]]
    ins = [x] + outs[:-1]

    def f(a, step):
        return torch.from_numpy(a.astype(np.float64) * step).float().permute(0, 3, 1, 2)
    for i, s in enumerate(im.specs[:-1]):
        with torch.no_grad():
            sc = None if s.residual is None else f(ins[s.residual], steps[s.residual])
            ref = net.block_forward(i, f(ins[i], steps[i]), sc).double().numpy().transpose(0, 2, 3, 1)
        diff = np.abs(outs[i] - np.round(ref / steps[i + 1]))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.98, (s.name, diff.max(), (diff == 0).mean())
        assert outs[i].max() > 8, f"{s.name} is (nearly) all zero: nothing compared"
    with pytest.raises(ValueError, match="adds a shortcut"):
        net.block_forward(2, f(ins[2], steps[2]))
