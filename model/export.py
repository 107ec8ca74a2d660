"""``ternpe export``: a trained run -> ROM images, tile index, requantizers and golden vectors."""

from __future__ import annotations

import pathlib


from ternpe.contract import ArrayGeometry
from ternpe.outdir import check_dir, replace_dir
from ternpe.image import ExportError, golden_vectors, load_export, write_export
from .data import load_dataset
from .fold import calibrate_activations, fold
from .imported import export_imported, is_imported_run, write_qonnx
from .train import _tensors, load_run

__all__ = ["export_run"]


def export_run(run_dir, out, *, samples: int = 64, force: bool = False, qonnx: bool = False,
               log=print) -> pathlib.Path:
    """Export the run ``run_dir`` (trained, or imported from QONNX) to ``out``, which must be new,
    empty or an export (:mod:`ternpe.outdir`); ``force``: anything else there is moved aside.
    ``qonnx``: the export also holds ``qonnx.onnx``, the integer model as QONNX, checked by
    executing it with qonnx on the golden inputs."""
    if samples < 1:
        raise ExportError("--samples must be >= 1")
    if is_imported_run(run_dir):
        path = export_imported(run_dir, out, samples=samples, force=force, qonnx=qonnx, log=log)
        _summary(path, log)
        return path
    out = check_dir(out, "export", force=force, error=ExportError)
    net, cfg, metrics = load_run(run_dir)
    if not net.folds:
        raise ExportError(f"{run_dir}: --arch {cfg.arch} does not fold into the integer model")
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    calibrate_activations(net, _tensors(ds)[0])      # no-op for a trained ternary run
    im = fold(net)
    if not im.ternary:
        bad = [s.name for s in im.specs if not s.ternary]
        raise ExportError(f"layers {', '.join(bad)} are not ternary (method {cfg.method}, --first-last "
                          f"{cfg.first_last}): the hardware is addition-only; train with a ternary method "
                          f"and --first-last ternary")
    if samples > len(ds.x_test):
        log(f"ternpe export: --samples {samples}, but the test split has {len(ds.x_test)} images: "
            f"writing {len(ds.x_test)}")
        samples = len(ds.x_test)
    x = ds.x_test[:samples]
    outs = im.run(x)
    golden = golden_vectors(x, ds.y_test[:samples], outs)
    geometry = ArrayGeometry.parse(cfg.pe)
    meta = {"run": str(run_dir), "dataset": cfg.dataset, "data_dir": cfg.data_dir, "arch": cfg.arch, "width": cfg.width, "method": cfg.method,
            "cost": cfg.cost, "lam": cfg.lam, "seed": cfg.seed, "cycles": metrics.get("cycles"),
            "speedup": metrics.get("speedup"), "board": cfg.board,
            "integer_accuracy": metrics.get("integer_accuracy"), "float_accuracy": metrics.get("float_accuracy")}
    # written beside, read back exactly, then renamed over the old export: never half an export
    def fill(tmp):
        write_export(tmp, geometry=geometry, act_bits=im.act_bits, specs=im.specs, weights=im.weights,
                     requants=im.requants, golden=golden, logit_scale=im.logit_scale, meta=meta)
        load_export(tmp)          # refuse to leave behind an export that does not read back exactly
        if qonnx:
            write_qonnx(tmp, tmp / "qonnx.onnx")
    path = replace_dir(out, fill, "export", log=log)
    _summary(path, log)
    return path


def _summary(path, log) -> None:
    ex = load_export(path)
    samples = len(ex.golden["inputs"])
    nnz = sum(l.nonzero_tiles for l in ex.layers)
    total = sum(l.layout.count for l in ex.layers)
    log(f"ternpe export: {len(ex.layers)} layers, {nnz}/{total} non-zero tiles, {samples} golden samples "
        f"-> {path}" + ("; qonnx.onnx checked with qonnx" if (path / "qonnx.onnx").is_file() else ""))
