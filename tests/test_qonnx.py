"""QONNX in and out: ternpe's integer model as a QONNX graph that qonnx executes to the same
integers, read back to the same export; a Brevitas-trained ternary CNN imported, exported and
co-simulated bit-exact; and every graph ternpe cannot map refused with the node and the reason."""

import json
import pathlib
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from ternpe.contract import ArrayGeometry
from ternpe.image import load_export, write_export
from ternpe.model.imported import import_qonnx, write_qonnx
from ternpe.model.qonnx_in import QonnxError, agreement, as_contract_layout, fold_qonnx, read_qonnx, run_graph
from ternpe.model.randnet import random_export, random_specs

ROOT = pathlib.Path(__file__).resolve().parents[1]
GEOMETRIES = ["1x16", "2x16", "1x8", "4x8"]


def _layers(ex):
    return [l.spec for l in ex.layers], [l.dense_weights() for l in ex.layers], [l.channel_requant() for l in ex.layers]


@pytest.mark.parametrize("seed", range(8))
def test_random_networks_go_to_qonnx_and_back_unchanged(tmp_path, seed):
    """Seeded random networks (residual blocks, identity and option A, in half of them): the QONNX
    graph executed by qonnx gives every layer's golden integers (write_qonnx checks it, and so does
    this test), and the graph folds back to the same layers, requantizers and ROM image bytes."""
    rng = np.random.default_rng(100 + seed)
    pe = GEOMETRIES[seed % len(GEOMETRIES)]
    shape, layers = random_specs(rng, ArrayGeometry.parse(pe).G, residual=seed % 2 == 1)
    ex = random_export(tmp_path / "e", shape=shape, layers=layers, pe=pe, density=float(rng.uniform(0.2, 0.9)),
                       samples=5, seed=seed)
    path = write_qonnx(ex.path, tmp_path / "net.onnx")
    mw = read_qonnx(path, batch=5)
    fold = fold_qonnx(mw)
    ran = run_graph(mw, ex.golden["inputs"], input_scale=1.0, tensors=fold.layer_tensors)
    for i, t in enumerate(fold.layer_tensors):
        want = ex.golden[f"layer{i}"]
        assert np.array_equal(as_contract_layout(ran[t], want.shape), want), (layers, i)
    specs, weights, requants = _layers(ex)
    im = fold.model
    assert im.specs == specs and fold.notes == []
    for a, b, wa, wb in zip(requants, im.requants, weights, im.weights):
        assert np.array_equal(wa, wb)
        for f in ("mult", "bias", "shift", "res_mult"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), (layers, f)
    back = write_export(tmp_path / "back", geometry=ex.geometry, act_bits=im.act_bits, specs=im.specs,
                        weights=im.weights, requants=im.requants, golden=ex.golden, logit_scale=im.logit_scale)
    for f in sorted(ex.path.glob("*.hex")):
        assert (back / f.name).read_bytes() == f.read_bytes(), f.name


def test_a_trained_run_goes_to_qonnx_and_back_to_the_same_export(quick_run, tmp_path):
    """ternpe -> QONNX -> ternpe on a trained run: export --qonnx, import the graph, export it
    again: the same ROM images, requantizers and golden outputs; the graph's classes are the
    integer model's on the whole test split."""
    from ternpe.model.export import export_run
    quiet = dict(log=lambda *_: None)
    first = load_export(export_run(quick_run["run"], tmp_path / "first", samples=16, qonnx=True, **quiet))
    run = import_qonnx(first.path / "qonnx.onnx", tmp_path / "run", dataset=quick_run["cfg"].dataset,
                       pe=quick_run["cfg"].pe, **quiet)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes_equal_graph"] == 1.0 and metrics["notes"] == []
    assert all(l["equal"] == 1.0 for l in metrics["agreement"]["layers"])
    again = load_export(export_run(run, tmp_path / "again", samples=16, **quiet))
    for f in sorted(first.path.glob("*.hex")):
        assert (again.path / f.name).read_bytes() == f.read_bytes(), f.name
    for k, v in first.golden.items():
        assert np.array_equal(again.golden[k], v), k


def _brevitas_onnx(tmp_path, epochs=3):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import brevitas_digits
    finally:
        sys.path.pop(0)
    return brevitas_digits.export(brevitas_digits.train(epochs, seed=0, log=lambda *_: None), tmp_path / "b.onnx")


# Brevitas 0.13.4 and torch.onnx warn of their own deprecations while exporting
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
def test_a_brevitas_ternary_cnn_runs_bit_exact_on_verilator(tmp_path):
    """Brevitas-trained (learned activation scales, per-channel weight scales, batch norm) ->
    QONNX -> ternpe import -> export -> Verilator, bit-exact against the golden outputs; the
    folded model gives the graph's class on the test split, and its export goes back to QONNX."""
    from ternpe.flow.cosim import run_cosim
    from ternpe.model.export import export_run
    src = _brevitas_onnx(tmp_path)
    run = import_qonnx(src, tmp_path / "run", dataset="digits", pe="1x8", log=lambda *_: None)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes_equal_graph"] >= 0.99
    assert metrics["agreement"]["layers"][0]["equal"] == 1.0          # the input's step is exactly 1/255
    assert all(l["equal"] > 0.99 for l in metrics["agreement"]["layers"][:-1])
    assert metrics["integer_accuracy"] > 0.5
    ex = load_export(export_run(run, tmp_path / "export", samples=8, qonnx=True, log=lambda *_: None))
    assert (ex.path / "qonnx.onnx").is_file() and ex.manifest["meta"]["imported"] == str(src)
    res = run_cosim(ex.path, simulator="verilator", build_dir=tmp_path / "sim", samples=4, taps=False)
    assert len(res["results"]) == 4 and all(r["ok"] and r["class"] == r["want_class"] for r in res["results"])
    from ternpe.report import write_report              # its page: the import's agreement beside the export's
    page = write_report(run, export=ex.path, log=lambda *_: None).read_text()
    assert "Imported from QONNX" in page and f"{metrics['graph_accuracy']:.4f}" in page and "conv2" in page


def _graph(tmp_path, edit):
    """A two-layer ternpe graph written as QONNX, changed by ``edit(model)``, saved."""
    ex = random_export(tmp_path / "e", shape=(6, 6, 1), layers="c16,p,fc5", pe="1x16", seed=3)
    write_qonnx(ex.path, tmp_path / "ok.onnx")
    model = onnx.load(str(tmp_path / "ok.onnx"))
    edit(model)
    onnx.save(model, str(tmp_path / "bad.onnx"))
    return tmp_path / "bad.onnx"


def _set_init(model, name, value):
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
            return
    raise KeyError(name)


def _insert_after(model, tensor, op):
    """Put a unary ``op`` node on ``tensor``'s way to its consumers."""
    for n in model.graph.node:
        n.input[:] = [f"{tensor}_x" if i == tensor else i for i in n.input]
    model.graph.node.append(helper.make_node(op, [tensor], [f"{tensor}_x"], name=f"my{op}"))


def _attr(model, op, name, value):
    n = next(n for n in model.graph.node if n.op_type == op)
    kept = [a for a in n.attribute if a.name != name]
    del n.attribute[:]
    n.attribute.extend(kept + [helper.make_attribute(name, value)])


BAD = {
    "four-bit weights": (lambda m: _set_init(m, "w0_bitwidth", 4.0), r"weights of 4 bits .* ternary"),
    "an op it cannot map": (lambda m: _insert_after(m, "v0", "Sigmoid"), r"node mySigmoid \(Sigmoid, .*not one of the ops"),
    "a signed activation": (lambda m: _attr_signed(m), r"signed activation quantizer"),
    "6-bit activations": (lambda m: _set_init(m, "q0_bitwidth", 6.0), r"6-bit activations.*8 bits"),
    "a dilated conv": (lambda m: _attr(m, "Conv", "dilations", [2, 2]), r"conv1 \(Conv.*dilated"),
}


def _attr_signed(m):
    for n in m.graph.node:
        if n.output[0] == "q0":
            for a in n.attribute:
                if a.name == "signed":
                    a.CopyFrom(helper.make_attribute("signed", 1))


@pytest.mark.parametrize("case", list(BAD))
def test_graphs_it_cannot_map_are_refused_with_the_node_and_why(tmp_path, case):
    edit, want = BAD[case]
    path = _graph(tmp_path, edit)
    with pytest.raises(QonnxError, match=want):
        fold_qonnx(read_qonnx(path))


def test_files_that_are_not_qonnx_and_shapes_that_do_not_fit_are_refused(tmp_path):
    good = _graph(tmp_path, lambda m: None)
    (tmp_path / "cut.onnx").write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.onnx").write_text("not a model\n")
    for bad in ("cut.onnx", "text.onnx"):
        with pytest.raises(QonnxError, match="is not an ONNX model"):
            read_qonnx(tmp_path / bad)
    with pytest.raises(QonnxError, match="no such file"):
        read_qonnx(tmp_path / "missing.onnx")
    with pytest.raises(QonnxError, match=r"takes images of 6x6x1.*digits.*8x8x1"):
        import_qonnx(good, tmp_path / "run", dataset="digits", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_the_cli_imports_and_says_what_it_cannot(tmp_path, capsys):
    from ternpe.cli import main
    src = tmp_path / "x.onnx"
    src.write_text("no")
    assert main(["import", str(src), "--dataset", "digits", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "ternpe import: error:" in err and "is not an ONNX model" in err
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    out = capsys.readouterr().out
    assert "BipolarQuant" in out and "brevitas_digits.py" in out


def _handmade(rng, *, bipolar: bool, residual: bool):
    """A QONNX graph as FINN's or hls4ml's users write them, not ternpe's nor Brevitas': an input
    Quant, a conv with a BipolarQuant or per-channel ternary Quant weight and a bias, batch norm,
    ReLU, learned 8-bit activation scales, optionally a residual block (conv, BN, Add of the
    block's input, ReLU, Quant), a global average pool, Flatten and a MatMul classifier with a
    per-tensor ternary weight, then Mul and Add by constants."""
    g = {"nodes": [], "inits": []}

    def const(name, v):
        g["inits"].append(numpy_helper.from_array(np.asarray(v, np.float32), name))
        return name

    def node(op, ins, out, domain="", **attrs):
        g["nodes"].append(helper.make_node(op, ins, [out], name=f"my_{out}", domain=domain, **attrs))
        return out

    def quant(x, out, scale, bits, signed, narrow=0):
        return node("Quant", [x, const(f"{out}_s", scale), const(f"{out}_z", 0.0), const(f"{out}_b", bits)], out,
                    domain="qonnx.custom_op.general", signed=signed, narrow=narrow, rounding_mode="ROUND")

    def bn(x, out, c):
        return node("BatchNormalization", [x, const(f"{out}_g", rng.uniform(0.5, 2, c)),
                                           const(f"{out}_b", rng.normal(0, 0.3, c)),
                                           const(f"{out}_m", rng.normal(0, 1, c)), const(f"{out}_v", rng.uniform(0.5, 4, c))],
                    out, epsilon=1e-5)

    def weight(name, shape, per_channel):
        w = rng.normal(0, 1, shape)
        if bipolar and name == "w1":
            return node("BipolarQuant", [const(name, w), const(f"{name}_s", 0.3)], f"{name}_q",
                        domain="qonnx.custom_op.general")
        scale = rng.uniform(0.1, 0.5, (shape[0],) + (1,) * (len(shape) - 1)) if per_channel else 0.2
        return quant(const(name, w), f"{name}_q", scale, 2.0, 1, narrow=1)

    x = quant("x", "xq", 1 / 255, 8.0, 0)
    a = node("Conv", [x, weight("w1", (8, 1, 3, 3), True), const("b1", rng.normal(0, 0.1, 8))], "c1",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = quant(node("Relu", [bn(a, "bn1", 8)], "r1"), "a1", 0.02, 8.0, 0)
    if residual:                          # conv, BN, ReLU, Quant, conv, BN, Add of the block's input
        y = node("Conv", [a, weight("w2", (8, 8, 3, 3), True)], "c2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        y = quant(node("Relu", [bn(y, "bn2", 8)], "r2"), "a2", 0.03, 8.0, 0)
        y = node("Conv", [y, weight("w3c", (8, 8, 3, 3), True)], "c3", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        y = node("Add", [bn(y, "bn3", 8), a], "add3")
        a = quant(node("Relu", [y], "r3"), "a3", 0.03, 8.0, 0)
    a = node("Flatten", [node("GlobalAveragePool", [a], "gap")], "flat", axis=1)
    y = node("MatMul", [a, weight("w3", (8, 5), False)], "mm")     # MatMul takes [in, out]
    y = node("Add", [node("Mul", [y, const("k", 1.5)], "mul"), const("b3", rng.normal(0, 0.1, 5))], "logits")
    graph = helper.make_graph(g["nodes"], "handmade", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                    [4, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [4, 5])], g["inits"])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid("qonnx.custom_op.general", 1)])


@pytest.mark.parametrize("bipolar,residual", [(False, False), (True, False), (False, True), (True, True)])
def test_graphs_written_by_hand_fold_close_to_what_qonnx_computes(tmp_path, bipolar, residual):
    """BipolarQuant and per-channel ternary weights, conv biases, batch norm, learned activation
    scales, a residual add, GlobalAveragePool + MatMul, constants after the classifier: the folded
    integer model gives qonnx's class on random images, and 99% of its activations equal."""
    rng = np.random.default_rng(7 + 2 * bipolar + residual)
    onnx.save(_handmade(rng, bipolar=bipolar, residual=residual), str(tmp_path / "h.onnx"))
    mw = read_qonnx(tmp_path / "h.onnx")
    fold = fold_qonnx(mw)
    specs = fold.model.specs
    assert [s.kind for s in specs] == ["conv"] * (1 + 2 * residual) + ["fc"]
    assert specs[-1].cin == 8 * 8 * 8 and not specs[-1].relu          # the fc repeated at every pixel
    assert [s.residual for s in specs] == ([None, None, 1, None] if residual else [None, None])
    x = rng.integers(0, 256, (64, 8, 8, 1))
    agree = agreement(mw, fold, x, input_scale=fold.input_scale)
    assert agree["classes_equal"] >= 0.95, agree
    # a value on a rounding edge lands one step apart; later layers inherit such steps
    assert agree["layers"][0]["max_diff_steps"] <= 1.0 + 1e-5, agree
    assert all(layer["equal"] >= 0.99 for layer in agree["layers"][:-1]), agree
    assert agree["layers"][-1]["max_rel_diff"] < 0.02, agree
