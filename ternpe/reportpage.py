"""The HTML of ``ternpe report`` (:mod:`ternpe.report` reads what it shows): one page, its
figures embedded as base64 PNGs (:mod:`ternpe.figures`), its style inline; no JavaScript, no
network."""

from __future__ import annotations

import base64
import html
import re
import time

from . import figures
from .report import GENERATOR, Report

__all__ = ["render"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.sub { color: #555; margin-top: 0; } .note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.n { text-align: right; white-space: nowrap; } th { background: #f2f2f2; }
#sims td:first-child { white-space: nowrap; }
.ok { color: #176b1a; font-weight: bold; } .bad { color: #b00020; font-weight: bold; }
img.figure { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.maps { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.key { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #888; vertical-align: middle; }
"""


def _e(v) -> str:
    return html.escape(str(v))


def _num(v, fmt: str = ",") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "&ndash;"
    return format(v, fmt)


def _status(ok) -> str:
    if ok is None:
        return "&ndash;"
    return '<span class="ok">bit-exact</span>' if ok else '<span class="bad">MISMATCH</span>'


def _img(fig, alt: str, ident: str) -> str:
    data = base64.b64encode(figures.png(fig)).decode()
    return f'<img id="{_e(ident)}" class="figure" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


#: A cell that starts with a figure (after any tags) is right-aligned.
_NUMERIC = re.compile(r"^(<[^>]+>)*([\d.,]|&ndash;)")


def _table(ident: str, head: list, rows: list) -> str:
    """A table; ``rows`` hold HTML already escaped; figures are right-aligned, text left."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i and _NUMERIC.match(str(c)) else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table id="{_e(ident)}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def _header(rep: Report) -> str:
    m, c = rep.metrics, rep.config
    what = ", ".join(f"{k} {_e(v)}" for k, v in (
        ("dataset", m.get("dataset")), ("arch", m.get("arch")), ("PE", m.get("pe")), ("method", m.get("method")),
        ("cost", m.get("cost")), ("lambda", c.get("lam")), ("seed", c.get("seed"))) if v is not None)
    where = [f"run <code>{_e(rep.run)}</code>"]
    if rep.export:
        where.append(f"export <code>{_e(rep.export)}</code>")
    where += [f"build <code>{_e(p)}</code>" for p, _ in rep.builds]
    return (f"<h1>ternpe report: {_e(rep.run.resolve().name)}</h1><p class=sub>{what}</p>"
            f"<p class=note>{'; '.join(where)}; written {time.strftime('%Y-%m-%d %H:%M')}</p>")


def _sims_line(rep: Report) -> str:
    runs = [(r.get("simulator", "?"), r.get("bit_exact")) for r in rep.sims]
    runs += [(f"{b['board']} bitstream verify", b["verified"]["ok"]) for _, b in rep.builds if b.get("verified")]
    if not runs:
        return "none recorded"
    bad = sum(not ok for _, ok in runs)
    return (f'<span class="ok">all {len(runs)} bit-exact</span>' if not bad else
            f'<span class="bad">{bad} of {len(runs)} with mismatches</span>')


def _summary(rep: Report) -> str:
    m = rep.metrics
    dense, pruned = rep.totals
    rows = [["accuracy (float / ternary, pruned / integer = hardware)",
             " / ".join(_num(m.get(k), ".4f") for k in ("float_accuracy", "accuracy", "integer_accuracy"))],
            ["tile density (kept / all tiles)", _num(m.get("group_density"), ".3f")],
            ["cycles per inference (pruned / dense)", f"{_num(pruned)} / {_num(dense)}"],
            ["speedup over dense (cycles)", f'<span id="speedup">{_num(dense / pruned, ".2f")}x</span>'
             if dense and pruned else "&ndash;"],
            ["compression (weights / storage)",
             f"{_num(m.get('compression_rate'), '.1f')}x / {_num(m.get('storage_compression'), '.1f')}x"]]
    for _, b in rep.builds:
        rows.append([f"{_e(b['board'])}: clock / fmax (MHz)",
                     f"{_num(b['clock_mhz'], '.2f')} / {_num(b.get('fmax_mhz'), '.2f')}"])
        rows.append([f"{_e(b['board'])}: inferences/s (compute / host link)",
                     " / ".join(_num(b.get(k), ",.0f") for k in ("inferences_per_s_compute", "inferences_per_s_link"))])
    rows.append(["simulations on the export", _sims_line(rep)])
    return "<h2>Key figures</h2>" + _table("summary", ["", "value"], rows)


def _imported(rep: Report) -> str:
    """An imported run's section: where the graph came from and how the integer model agrees with it."""
    c, m = rep.config, rep.metrics
    agree = m.get("agreement", {})
    rows = [[_e(l.get("layer")), _num(l.get("equal"), ".4%"), _num(l.get("max_diff_steps"), ".3g")]
            for l in agree.get("layers", [])]
    notes = "".join(f"<li>{_e(n)}</li>" for n in m.get("notes", []))
    return ("<h2>Imported from QONNX</h2>"
            f"<p class=note>graph <code>{_e(c.get('imported'))}</code> (sha256 {_e(str(c.get('sha256'))[:16])}...), "
            f"input = pixel x {_num(c.get('input_scale'), '.6g')}. On the {_e(c.get('dataset'))} test split the graph "
            f"(executed by qonnx) scores {_num(m.get('graph_accuracy'), '.4f')}, the integer model "
            f"{_num(m.get('integer_accuracy'), '.4f')}, the same class on {_num(m.get('classes_equal_graph'), '.2%')}."
            f" Per layer, on {_num(agree.get('samples'))} images: activations equal to the graph's, the largest "
            f"difference in steps (the logits: real values, never equal).</p>"
            + _table("agreement", ["layer", "equal", "largest difference (steps)"], rows)
            + (f"<ul class=note>{notes}</ul>" if notes else ""))


def _training(rep: Report) -> str:
    if "imported" in rep.config:
        return _imported(rep)
    if not rep.history:
        return "<h2>Training</h2><p>history.json holds no epochs.</p>"
    fig, labels = figures.history_figure(rep.history, rep.totals[0])
    return ("<h2>Training</h2>" + _img(fig, "training curves: " + ", ".join(labels), "fig-training") +
            f"<p class=note>{len(rep.history)} epochs; train time {_num(rep.metrics.get('train_seconds'), ',.0f')} s."
            " The right panel's right axis: cycles per inference (dense cycles / speedup).</p>")


def _cycles(rep: Report) -> str:
    ls = rep.layers
    out = "<h2>Cycles per layer</h2>"
    if all(l["dense"] and l["pruned"] for l in ls):
        fig = figures.layer_cycles_figure([l["name"] for l in ls], [l["dense"] for l in ls], [l["pruned"] for l in ls])
        out += _img(fig, "cycles per layer, dense against pruned", "fig-cycles")
    rows = [[_e(l["name"]), _e(l["kind"]), f"{l['kept']:,} / {l['tiles']:,}", _num(l["kept"] / l["tiles"], ".3f"),
             _num(l["dense"]), _num(l["pruned"]),
             f"{l['dense'] / l['pruned']:.2f}x" if l["dense"] and l["pruned"] else "&ndash;"] for l in ls]
    dense, pruned = rep.totals
    rows.append(["<b>network</b> (with argmax)", "", "", "", _num(dense), _num(pruned),
                 f"{dense / pruned:.2f}x" if dense and pruned else "&ndash;"])
    head = ["layer", "kind", "tiles kept", "density", "dense cycles", "pruned cycles", "speedup"]
    return out + _table("layers", head, rows) + f"<p class=note>From {_e(rep.source)}.</p>"


def _tile_maps(rep: Report) -> str:
    imgs = []
    for l in rep.layers:
        fig = figures.tile_map_figure(l["tile_map"], f"{l['name']}: {l['kept']}/{l['tiles']} tiles kept")
        imgs.append(_img(fig, f"tile map of {l['name']}", f"fig-tiles-{_slug(l['name'])}"))
    return ('<h2>Tile maps</h2><p>Rows: groups of P output channels (tile rows); columns: groups of G input '
            'lanes (tile columns). <span class="key" style="background:#000"></span> black = kept tile, '
            '<span class="key" style="background:#fff"></span> white = pruned tile (costs no cycle).</p>'
            f'<div class="maps">{"".join(imgs)}</div>')


def _build_figures(b: dict) -> list:
    """The build's clock, fmax, cycles and throughput, as table rows."""
    v = b.get("verified")
    rows = [["bitstream", f"<code>{_e(b.get('bitstream'))}</code> ({_num(b.get('bitstream_bytes'))} bytes)"],
            ["PE array", _e(b.get("geometry"))],
            ["clock (MHz)", _num(b["clock_mhz"], ".2f")],
            ["fmax (MHz)", f"{_num(b.get('fmax_mhz'), '.2f')} (timing "
             f"{'met' if b.get('timing_met') else '<span class=bad>FAILED</span>'})"],
            ["cycles per inference (dense)", f"{_num(b.get('cycles_per_inference'))} ({_num(b.get('dense_cycles'))})"],
            ["latency (cycles, input in to class out)", _num(b.get("latency_cycles"))],
            ["inferences/s, compute", _num(b.get("inferences_per_s_compute"), ",.0f")],
            [f"inferences/s, host link ({_num(b.get('baud'))} baud, "
             f"{_num(b.get('uart_bytes_per_inference'), ',.0f')} bytes each)",
             _num(b.get("inferences_per_s_link"), ",.0f")]]
    if b.get("inferences_per_s_link_rle"):
        rows.append(["inferences/s, host link, run-length coded images", _num(b["inferences_per_s_link_rle"], ",.0f")])
    rows.append(["bitstream verified (its netlist on Icarus)",
                 f"{_status(v['ok'])} on {v['samples']} golden input(s)" if v else "not verified"])
    rows.append(["build time (s)", _num(b.get("build_s"), ",.0f")])
    return rows


def _build(b: dict) -> str:
    board = _slug(str(b["board"]))
    res = {k: v for k, v in b["resources"].items() if isinstance(v, dict) and v.get("available")}
    planned = b.get("planned", {})
    out = f"<h2>Build: {_e(b['board'])}</h2>" + _table(f"build-{board}", ["", "value"], _build_figures(b))
    if res:
        fig = figures.resources_figure({k: v["used"] for k, v in res.items()},
                                       {k: v["available"] for k, v in res.items()}, f"resources on the {b['board']}")
        out += _img(fig, f"resources of the {b['board']} build", f"fig-resources-{board}")
        out += _table(f"resources-{board}", ["resource", "used", "planned", "available", "used %"],
                      [[_e(k), _num(v["used"]), _num(planned.get(k)), _num(v["available"]),
                        _num(100 * v["used"] / v["available"], ".1f")] for k, v in res.items()])
    mem = b.get("memory_plan") or {}
    if mem:
        out += "<h3>Memory plan</h3>" + _table(
            f"memory-{board}", ["memory", "width (bits)", "depth (words)", "in", "blocks"],
            [[_e(k), _num(v.get("width")), _num(v.get("depth")), _e(v.get("in")), _num(v.get("blocks"))]
             for k, v in mem.items()])
    return out


def _sims(rep: Report) -> str:
    rows = []
    for r in rep.sims:
        cyc = r.get("cycles") or []
        model = r.get("model_cycles")
        cyc_s = ", ".join(_num(c) for c in cyc) + (
            "" if model is None else " (= model)" if cyc == [model] else f" (model {_num(model)})")
        rows.append([_e(r.get("time", "")), _e(f"ternpe {r.get('command', 'sim')}"), _e(r.get("simulator", "")),
                     _e(r.get("design", "")), _e(r.get("geometry") or ""), _e(r.get("device") or ""),
                     f"{_num(r.get('samples_ok', r.get('samples') if r.get('bit_exact') else None))} / "
                     f"{_num(r.get('samples'))}", _status(r.get("bit_exact")), cyc_s, _e(r.get("failure") or "")])
    for _, b in rep.builds:
        v = b.get("verified")
        if v:
            rows.append(["", "ternpe build", "icarus", _e(f"the netlist inside {b.get('bitstream')}"),
                         _e(b.get("geometry", "")), _e(b["board"]), f"&ndash; / {_num(v['samples'])}",
                         _status(v["ok"]), "", _e("; ".join(map(str, v.get("mismatches", [])[:2])))])
    if not rows:
        why = ("no `ternpe sim` or `ternpe verify` has been run on this export since it was written"
               if rep.export else "give --export to list the simulations run on the export")
        return f'<h2>Simulations</h2><p id="sims">None recorded: {why}.</p>'
    head = ["when", "command", "simulator", "design", "PE", "device", "samples ok", "status", "cycles", "failure"]
    return "<h2>Simulations</h2>" + _table("sims", head, rows)


def render(rep: Report) -> str:
    """The page of ``rep``, as HTML text."""
    body = [_header(rep), _summary(rep), _training(rep), _cycles(rep), _tile_maps(rep)]
    body += [_build(b) for _, b in rep.builds]
    body.append(_sims(rep))
    title = f"ternpe report: {rep.run.resolve().name}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body) +
            "\n</body></html>\n")
