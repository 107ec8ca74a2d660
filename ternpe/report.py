"""One report per run: a single self-contained HTML page (``ternpe report``) with what a run, its
export and its builds produced: the training curves (accuracy, tile density, speedup and
cycles), the cycles per layer dense against pruned, the tile maps, the memory plan and the
resources against the device, fmax and clock, the inferences per second of compute and of the
host link, and every simulation run on the export, bit-exact or not.

It reads JSON and the export's files only (``history.json``, ``metrics.json``, ``manifest.json``
and the tile index, ``<board>/<export>.report.json``, the export's ``sims.json``): no torch,
no Amaranth. Figures are PNGs drawn by :mod:`ternpe.figures`, embedded as base64 ``data:``
URIs; the page needs no network and no JavaScript.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from .cycles import cycle_model
from .outdir import move_aside, write_whole

__all__ = ["ReportError", "GENERATOR", "Report", "load_report", "write_report", "check_out"]

#: The mark in a page's head by which ternpe knows a report it wrote (and may replace).
GENERATOR = '<meta name="generator" content="ternpe report">'


class ReportError(ValueError):
    pass


@dataclasses.dataclass
class Report:
    """What a page shows: the run (config, history, metrics), per layer its tile map and cycles,
    the builds' reports and the simulations recorded on the export."""
    run: pathlib.Path
    config: dict
    history: list
    metrics: dict
    layers: list                  # {"name", "kind", "tile_map", "tiles", "kept", "dense", "pruned"}
    source: str                   # where the layers' tiles and cycles come from
    totals: tuple                 # (dense, pruned) cycles per inference of the whole network
    export: pathlib.Path | None = None
    manifest: dict | None = None
    builds: list = dataclasses.field(default_factory=list)      # (path, report dict)
    sims: list = dataclasses.field(default_factory=list)


def _read_json(path: pathlib.Path, what: str, fix: str):
    if not path.is_file():
        raise ReportError(f"{path.parent} has no {path.name}: {what}; {fix}")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not JSON ({e}); {fix}") from None


def load_run(run) -> tuple:
    """``(config, history, metrics)`` of a run directory, or a ReportError saying what is missing."""
    run = pathlib.Path(run)
    if not run.is_dir():
        raise ReportError(f"run {run}: no such directory; give the directory `ternpe train --out {run}` wrote "
                          f"(make one with that command)")
    fix = f"train the run again (`ternpe train --out {run}`)"
    config = _read_json(run / "config.json", "it is not a ternpe run", fix) if (run / "config.json").exists() else {}
    if isinstance(config, dict) and "imported" in config:        # `ternpe import`: no training, no tile maps
        fix = f"import it again (`ternpe import {config['imported']} --out {run} ...`)"
        metrics = _read_json(run / "metrics.json", "it is not a finished import", fix)
        if not isinstance(metrics, dict) or "agreement" not in metrics:
            raise ReportError(f"{run / 'metrics.json'}: not an imported run's metrics (no agreement); {fix}")
        return config, [], metrics
    metrics = _read_json(run / "metrics.json", "it is not a finished ternpe run", fix)
    history = _read_json(run / "history.json", "a run without its training history cannot be reported", fix)
    if not isinstance(history, list) or not all(isinstance(h, dict) and "test_accuracy" in h for h in history):
        raise ReportError(f"{run / 'history.json'}: not a training history (a list of epochs); {fix}")
    if not isinstance(metrics, dict) or "layers" not in metrics:
        raise ReportError(f"{run / 'metrics.json'}: not a run's metrics (no layers); {fix}")
    return config, history, metrics


def layers_of_run(metrics: dict) -> list:
    """Per layer, the tile map and cycles the run recorded (``metrics.json``)."""
    specs = {s["name"]: s for s in metrics.get("layer_specs", [])}
    return [{"name": l["name"], "kind": specs.get(l["name"], {}).get("kind", ""), "tile_map": l["tile_map"],
             "tiles": l["tiles"], "kept": l["nonzero_tiles"], "dense": l.get("dense_cycles"), "pruned": l.get("cycles")}
            for l in metrics["layers"]]


def layers_of_export(ex) -> tuple:
    """Per layer, the tile map read from the export's tile index (row pointers and columns) and
    the cycles of the cycle model on the export's array, pruned and dense; and the network's
    ``(dense, pruned)`` cycles per inference."""
    specs = [l.spec for l in ex.layers]
    pruned = cycle_model(specs, ex.geometry, [np.diff(l.rowptr) for l in ex.layers])
    dense = cycle_model(specs, ex.geometry)
    out = []
    for l, p, d in zip(ex.layers, pruned["layers"], dense["layers"]):
        tmap = np.zeros((l.layout.rows, l.layout.cols), np.int8)
        rows = np.repeat(np.arange(l.layout.rows), np.diff(l.rowptr))
        tmap[rows, l.cols] = 1
        out.append({"name": l.spec.name, "kind": l.spec.kind, "tile_map": tmap, "tiles": int(tmap.size),
                    "kept": int(l.nonzero_tiles), "dense": d["cycles"], "pruned": p["cycles"]})
    return out, (dense["total"], pruned["total"])


def load_export_dir(export):
    """The export (validated by :func:`ternpe.image.load_export`, golden vectors not re-run)."""
    from .image import load_export
    export = pathlib.Path(export)
    if not (export / "manifest.json").is_file():
        raise ReportError(f"--export {export} is not an export: {export / 'manifest.json'} is missing (write one "
                          f"with `ternpe export RUN --out {export}`)")
    try:
        return load_export(export, check_golden=False)
    except ValueError as e:
        raise ReportError(f"--export {export} is not an export ternpe can read: {e}") from None


def load_build(path, export_name: str | None) -> tuple:
    """``(path, report)`` of a build: a ``<board>/<export>.report.json`` written by `ternpe build`,
    or the board's directory (``bitstreams/<board>``) holding the export's report."""
    path = pathlib.Path(path)
    if path.is_dir():
        found = sorted(path.glob(f"{export_name}.report.json" if export_name else "*.report.json"))
        if len(found) != 1:
            named = f"{export_name}.report.json" if export_name else "exactly one *.report.json"
            raise ReportError(f"--build {path}: a directory, but it holds {len(found) or 'no'} "
                              f"{'reports' if len(found) > 1 else 'report'} where {named} was looked for; give "
                              f"the report itself (e.g. --build {path}/NAME.report.json)")
        path = found[0]
    fix = "give the .report.json `ternpe build` wrote beside the bitstream (bitstreams/<board>/<export>.report.json)"
    if not path.is_file():
        raise ReportError(f"--build {path}: no such file; {fix}")
    try:
        rep = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ReportError(f"--build {path}: not JSON, so not a build report; {fix}") from None
    if not isinstance(rep, dict) or not {"board", "resources", "clock_mhz"} <= set(rep):
        raise ReportError(f"--build {path}: not a build report (no board, resources, clock_mhz); {fix}")
    return path, rep


def load_report(run, *, export=None, builds=()) -> Report:
    """Everything a page shows, read and checked before anything is written."""
    config, history, metrics = load_run(run)
    if "imported" in config and export is None:
        raise ReportError(f"{run} was imported from QONNX and keeps no tile maps: give its export (--export; make "
                          f"one with `ternpe export {run} --out EXPORT`)")
    rep = Report(run=pathlib.Path(run), config=config, history=history, metrics=metrics,
                 layers=[] if "imported" in config else layers_of_run(metrics), source="the run's metrics.json (give --export for the export's)",
                 totals=(metrics.get("dense_cycles"), metrics.get("cycles")))
    if export is not None:
        ex = load_export_dir(export)
        from .simlog import read_records
        rep.export, rep.manifest, rep.sims = pathlib.Path(export), ex.manifest, read_records(export)
        rep.layers, rep.totals = layers_of_export(ex)
        rep.source = f"the export's tile index, on its PE {ex.geometry.P}x{ex.geometry.G} array (ternpe.cycles)"
    name = rep.export.resolve().name if rep.export else None
    rep.builds = [load_build(b, name) for b in builds]
    return rep


def check_out(out, *, force: bool = False) -> tuple:
    """``(path, aside)``: the page's path, checked (a symlink's target is written), and whether
    what is there must be moved aside first. A directory is refused; a file that is not a ternpe
    report is refused, or with ``force`` to be moved aside (never deleted). Changes nothing."""
    out = pathlib.Path(out)
    if out.is_symlink():
        out = out.resolve()
    if out.is_dir():
        raise ReportError(f"--out {out} is a directory; give the path of the HTML file to write "
                          f"(e.g. {out}/report.html)")
    aside = False
    if out.exists():
        try:
            head = out.read_bytes()[:4096].decode("utf-8", "replace")
        except OSError as e:
            raise ReportError(f"--out {out}: cannot read it ({e.strerror or e}) to see whether ternpe wrote "
                              f"it") from None
        if GENERATOR not in head:
            if not force:
                raise ReportError(f"--out {out} exists and is not a ternpe report; give another --out, or --force to "
                                  f"move it aside (to {out.name}.old-<date>-<time>)")
            aside = True
    if not out.parent.is_dir():
        raise ReportError(f"--out {out}: its directory {out.parent} does not exist; make it or give another path")
    return out, aside


def write_report(run, *, export=None, builds=(), out=None, force: bool = False, log=print) -> pathlib.Path:
    """Write the page of ``run`` (with ``export`` and the build reports ``builds``) to ``out``
    (default ``<run>/report.html``), whole (:func:`ternpe.outdir.write_whole`); returns its path.
    Everything is read and checked before anything is written or moved."""
    rep = load_report(run, export=export, builds=builds)
    out, aside = check_out(pathlib.Path(run) / "report.html" if out is None else out, force=force)
    from .reportpage import render
    page = render(rep)
    if aside:
        move_aside(out, log)
    path = write_whole(out, page)
    log(f"ternpe report: wrote {path} ({path.stat().st_size / 1e3:,.0f} kB, self-contained; open it in a browser)")
    return path
