"""``ternpe import``: a QONNX model (Brevitas, FINN, hls4ml, or ternpe's own) as a run that
``ternpe export`` takes like a trained one; and ``ternpe export --qonnx``: an export as QONNX.

An imported run holds the graph as given (``model.onnx``), ``config.json`` (where it came from,
the data set of its golden vectors, the array it is exported for, the input's scale) and
``metrics.json``: the accuracy of the graph as qonnx executes it and of the folded integer
model, how the two agree layer by layer, cycles and speedup over dense on the array.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import numpy as np

from ternpe.contract import ArrayGeometry, ContractError, TileLayout, check_array
from ternpe.cycles import cycle_model
from ternpe.image import ExportError, golden_vectors, load_export, write_export
from ternpe.outdir import check_dir, replace_dir
from .data import load_dataset
from .qonnx_in import QonnxError, agreement, as_contract_layout, fold_qonnx, read_qonnx, run_graph
from .qonnx_out import integer_model_to_qonnx

__all__ = ["import_qonnx", "is_imported_run", "export_imported", "write_qonnx", "check_qonnx"]

#: Images a qonnx run of the graph takes at once.
BATCH = 64


def is_imported_run(run_dir) -> bool:
    cfg = pathlib.Path(run_dir) / "config.json"
    return (pathlib.Path(run_dir) / "model.onnx").is_file() and cfg.is_file() and "imported" in cfg.read_text()


def _row_tiles(im, geometry: ArrayGeometry) -> list:
    rows = []
    for spec, w in zip(im.specs, im.weights):
        tiles = TileLayout(spec, geometry).tile_array(np.asarray(w, np.int64))
        rows.append(tiles.reshape(tiles.shape[0], tiles.shape[1], -1).any(axis=2).sum(axis=1).tolist())
    return rows


def _fold(onnx_path, input_scale: float | None, batch: int = BATCH):
    mw = read_qonnx(onnx_path, batch=batch)
    return mw, fold_qonnx(mw, input_scale=input_scale)


def import_qonnx(src, out, *, dataset: str, data_dir=None, pe: str = "1x16", input_scale: float | None = None,
                 force: bool = False, log=print) -> pathlib.Path:
    """Fold the QONNX graph ``src``, measure it on ``dataset``'s test split and write the run ``out``."""
    src = pathlib.Path(src)
    out = check_dir(out, "run", force=force, error=QonnxError)
    geometry = ArrayGeometry.parse(pe)
    ds = load_dataset(dataset, data_dir)
    mw, fold = _fold(src, input_scale)
    scale = fold.input_scale
    shape = tuple(mw.get_tensor_shape(mw.graph.input[0].name)[1:])
    if (shape[1], shape[2], shape[0]) != ds.shape:
        raise QonnxError(f"{src} takes images of {shape[1]}x{shape[2]}x{shape[0]} (HxWxC); {dataset}'s are "
                         f"{'x'.join(map(str, ds.shape))}: give the data set it was trained on (--dataset)")
    im = fold.model
    try:
        check_array(geometry, im.specs)
    except ContractError as e:
        raise QonnxError(f"--pe {pe}: {e}") from None
    log(f"ternpe import: {len(im.specs)} layers ({', '.join(s.name for s in im.specs)}), checking against qonnx "
        f"on {len(ds.x_test)} test images")
    graph_classes = np.argmax(run_graph(mw, ds.x_test, input_scale=scale)[mw.graph.output[0].name], axis=1)
    agree = agreement(mw, fold, ds.x_test[:BATCH], input_scale=scale)
    classes = im.predict(ds.x_test)
    rows = _row_tiles(im, geometry)
    sparse, dense = cycle_model(im.specs, geometry, rows)["total"], cycle_model(im.specs, geometry)["total"]
    cfg = {"imported": str(src), "sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "dataset": dataset,
           "data_dir": data_dir, "pe": pe, "input_scale": scale, "act_bits": im.act_bits, "arch": "qonnx",
           "method": "imported"}
    metrics = {"method": "imported", "dataset": dataset, "arch": "qonnx", "pe": str(geometry),
               "graph_accuracy": float(np.mean(graph_classes == ds.y_test)),
               "integer_accuracy": float(np.mean(classes == ds.y_test)),
               "classes_equal_graph": float(np.mean(graph_classes == classes)),
               "agreement": agree, "notes": fold.notes, "cycles": sparse, "dense_cycles": dense,
               "speedup": dense / sparse,
               "layers": [{"name": s.name, "nonzero_tiles": int(sum(r)), "tiles": TileLayout(s, geometry).count}
                          for s, r in zip(im.specs, rows)]}

    def fill(tmp):
        shutil.copyfile(src, tmp / "model.onnx")
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    path = replace_dir(out, fill, "run", log=log)
    log(f"ternpe import: graph accuracy {metrics['graph_accuracy']:.3f}, integer model {metrics['integer_accuracy']:.3f} "
        f"(same class on {metrics['classes_equal_graph']:.1%} of {len(ds.x_test)}); {sparse} cycles at {pe}, "
        f"{metrics['speedup']:.2f}x fewer than dense -> {path}")
    for note in fold.notes:
        log(f"ternpe import: note: {note}")
    return path


def export_imported(run_dir, out, *, samples: int, force: bool = False, qonnx: bool = False, log=print):
    """``ternpe export`` of an imported run: the graph folded again, golden vectors from its data set."""
    run_dir = pathlib.Path(run_dir)
    out = check_dir(out, "export", force=force, error=ExportError)
    cfg = json.loads((run_dir / "config.json").read_text())
    digest = hashlib.sha256((run_dir / "model.onnx").read_bytes()).hexdigest()
    if digest != cfg.get("sha256"):
        raise ExportError(f"{run_dir}/model.onnx changed since it was imported; import it again")
    _, fold = _fold(run_dir / "model.onnx", cfg["input_scale"], batch=1)
    im, ds = fold.model, load_dataset(cfg["dataset"], cfg.get("data_dir"))
    samples = min(samples, len(ds.x_test))
    x = ds.x_test[:samples]
    golden = golden_vectors(x, ds.y_test[:samples], im.run(x))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    meta = {"run": str(run_dir), "imported": cfg["imported"], "dataset": cfg["dataset"], "data_dir": cfg.get("data_dir"),
            "arch": "qonnx", "method": "imported", "cycles": metrics.get("cycles"), "speedup": metrics.get("speedup"),
            "integer_accuracy": metrics.get("integer_accuracy")}

    def fill(tmp):
        write_export(tmp, geometry=ArrayGeometry.parse(cfg["pe"]), act_bits=im.act_bits, specs=im.specs,
                     weights=im.weights, requants=im.requants, golden=golden, logit_scale=im.logit_scale, meta=meta)
        load_export(tmp)
        if qonnx:
            write_qonnx(tmp, tmp / "qonnx.onnx")
    return replace_dir(out, fill, "export", log=log)


def write_qonnx(export_dir, path) -> pathlib.Path:
    """Write export ``export_dir`` as a QONNX graph at ``path``, checked by executing it with qonnx
    on the export's golden inputs: every layer's integers must come out equal."""
    import onnx
    ex = load_export(export_dir)
    model = integer_model_to_qonnx([l.spec for l in ex.layers], [l.dense_weights() for l in ex.layers],
                                   [l.channel_requant() for l in ex.layers], act_bits=ex.act_bits,
                                   input_shape=ex.input_shape, logit_scale=ex.manifest["formats"]["logit_scale"])
    onnx.save(model, str(path))
    check_qonnx(path, ex)
    return pathlib.Path(path)


def check_qonnx(path, ex) -> None:
    """Execute the QONNX graph ``path`` with qonnx on export ``ex``'s golden inputs; raise unless
    every layer's output is the golden integers."""
    mw = read_qonnx(path, batch=min(BATCH, len(ex.golden["inputs"])))
    fold = fold_qonnx(mw)
    ran = run_graph(mw, ex.golden["inputs"], input_scale=fold.input_scale, tensors=fold.layer_tensors)
    for i, (layer, t) in enumerate(zip(ex.layers, fold.layer_tensors, strict=True)):
        want = ex.golden[f"layer{i}"]
        if not np.array_equal(as_contract_layout(ran[t], want.shape), want):
            raise ExportError(f"{path}: qonnx's execution of layer {layer.spec.name} differs from the integer model")
