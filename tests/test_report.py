"""``ternpe report``: one self-contained HTML page per run, rendered by headless Chromium; the
simulation records it lists; its refusals; the tile-map figure's key, ticks and size."""

import base64
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from ternpe.cli import main
from ternpe.report import GENERATOR

#: Debian's headless Chromium (tools/debian-packages.sh installs the first).
BROWSERS = ("chromium-headless-shell", "chromium")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    why = ("no headless Chromium on PATH (chromium-headless-shell or chromium): run tools/debian-packages.sh "
           "(or apt-get install chromium-headless-shell)")
    sudo = shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    if shutil.which("apt-get") is None or (os.geteuid() != 0 and not sudo):
        pytest.skip(why + "; apt is not usable here (not root, no passwordless sudo, or no apt-get)")
    pytest.fail(why)


def _chromium(*args, timeout=120):
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _page_errors(stderr: str, page: str) -> list:
    """Chromium's log lines about the page: console messages, load failures (its other lines are
    about the machine: no D-Bus, no GPU)."""
    return [ln for ln in stderr.splitlines()
            if "CONSOLE" in ln or "net::ERR" in ln or "Uncaught" in ln or (page in ln and "ERROR" in ln)]


def _build_report(export) -> dict:
    """A build report as `ternpe build` writes it (the fields the page reads), for an iCEBreaker."""
    return {"board": "icebreaker", "export": str(export), "geometry": "1x16", "bitstream": "bitstreams/icebreaker/x.bin",
            "bitstream_bytes": 104090, "clock_mhz": 30.0, "fmax_mhz": 33.25, "timing_met": True,
            "cycles_per_inference": 1234, "dense_cycles": 2345, "latency_cycles": 1500, "baud": 3000000,
            "inferences_per_s_compute": 24311.0, "uart_bytes_per_inference": 120, "inferences_per_s_link": 2400.0,
            "resources": {"lut": {"used": 3100, "available": 5280}, "ff": {"used": 1900, "available": 5280},
                          "bram": {"used": 20, "available": 30}, "spram": {"used": 0, "available": 4},
                          "dsp": {"used": 2, "available": 8}},
            "planned": {"lut": 3000, "ff": 1800, "bram": 20, "spram": 0, "dsp": 2},
            "memory_plan": {"weights": {"width": 32, "depth": 300, "in": "bram", "blocks": 4},
                            "activations": {"width": 128, "depth": 50, "in": "bram", "blocks": 8}},
            "verified": {"ok": True, "samples": 2, "mismatches": []}, "build_s": 61.0}


@pytest.fixture
def reported(quick_run, tmp_path):
    """A copy of the quick run and its export, two simulation records on the export, a build
    report, and the page `ternpe report` writes of them."""
    from ternpe.simlog import append_record
    run, export = tmp_path / "run", tmp_path / "export"
    shutil.copytree(quick_run["run"], run)
    shutil.copytree(quick_run["export"], export)
    (export / "sims.json").unlink(missing_ok=True)          # what other tests simulated on the shared export
    append_record(export, {"command": "sim", "simulator": "verilator", "design": "generated Verilog", "samples": 4,
                           "samples_ok": 4, "bit_exact": True, "cycles": [1234], "model_cycles": 1234})
    append_record(export, {"command": "sim", "simulator": "icarus", "design": "generated Verilog", "samples": 2,
                           "samples_ok": 1, "bit_exact": False, "cycles": [1234], "model_cycles": 1234,
                           "failure": "sample 1: layer fc is the first that differs"})
    build = tmp_path / "icebreaker" / "export.report.json"
    build.parent.mkdir()
    build.write_text(json.dumps(_build_report(export)))
    assert main(["report", str(run), "--export", str(export), "--build", str(build.parent)]) == 0
    page = run / "report.html"
    return {"run": run, "export": export, "build": build, "page": page, "html": page.read_text(),
            "metrics": json.loads((run / "metrics.json").read_text())}


def _expected_speedup(export) -> str:
    from ternpe.cycles import cycle_model
    from ternpe.image import load_export
    ex = load_export(export, check_golden=False)
    specs = [l.spec for l in ex.layers]
    pruned = cycle_model(specs, ex.geometry, [np.diff(l.rowptr) for l in ex.layers])["total"]
    return f"{cycle_model(specs, ex.geometry)['total'] / pruned:.2f}x"


def test_report_is_one_self_contained_page_with_every_figure(reported):
    text, m = reported["html"], reported["metrics"]
    assert GENERATOR in text and "<script" not in text.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text), "the page must need no network"
    imgs = re.findall(r'<img id="([^"]+)"[^>]* src="data:image/png;base64,([^"]+)"', text)
    ids = [i for i, _ in imgs]
    names = [l["name"] for l in m["layers"]]
    assert ids == (["fig-training", "fig-cycles"] + [f"fig-tiles-{n}" for n in names] + ["fig-resources-icebreaker"])
    for _, data in imgs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{m['accuracy']:.4f}" in text and _expected_speedup(reported["export"]) in text
    layers = re.search(r'<table id="layers">.*?</table>', text).group(0)
    for n in names:
        assert f"<tr><td>{n}</td>" in layers
    sims = re.search(r'<table id="sims">.*?</table>', text).group(0)
    assert sims.count("<tr>") == 1 + 3       # head, two `ternpe sim` records, the build's bitstream verify
    assert "MISMATCH" in sims and "layer fc is the first that differs" in sims and "bit-exact" in sims
    assert "1 of 3 with mismatches" in text
    for figure in ("33.25", "24,311", "2,400", "3,100", "5,280", "memory-icebreaker", "black = kept"):
        assert figure in text, figure


def test_headless_chromium_renders_the_page_without_errors(reported, tmp_path):
    page = reported["page"]
    # a copy of the page with a probe that writes, into the DOM, the size each image decoded to
    probe = tmp_path / "probe.html"
    probe.write_text(reported["html"].replace("</body>", "<script>for (const i of document.images) "
                                              "i.setAttribute('data-decoded', i.naturalWidth + 'x' + i.naturalHeight)"
                                              "</script></body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _page_errors(dom.stderr, probe.name), _page_errors(dom.stderr, probe.name)
    decoded = re.findall(r'<img id="([^"]+)"[^>]*data-decoded="(\d+)x(\d+)"', dom.stdout)
    assert len(decoded) == reported["html"].count("<img ") and len(decoded) >= 5
    assert all(int(w) > 50 and int(h) > 50 for _, w, h in decoded), decoded
    assert '<table id="layers">' in dom.stdout and "ternpe report: run" in dom.stdout

    shot = tmp_path / "report.png"
    r = _chromium("--window-size=1200,3000", f"--screenshot={shot}", page.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert not _page_errors(r.stderr, page.name), _page_errors(r.stderr, page.name)
    from PIL import Image
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (3000, 1200)
    assert (pixels[:2000] < 128).mean() > 0.02, "the screenshot is (nearly) blank"


def test_report_replaces_only_its_own_page(reported, tmp_path, capsys):
    run = str(reported["run"])
    assert main(["report", run]) == 0                      # its own page: replaced, without the export now
    assert 'id="fig-cycles"' in (reported["page"]).read_text()
    other = tmp_path / "notes.html"
    other.write_text("<html>mine</html>")
    assert main(["report", run, "--out", str(other)]) == 1
    assert "is not a ternpe report" in capsys.readouterr().err and other.read_text() == "<html>mine</html>"
    assert main(["report", run, "--out", str(other), "--force"]) == 0
    assert GENERATOR in other.read_text()
    assert [p.read_text() for p in tmp_path.glob("notes.html.old-*")] == ["<html>mine</html>"]


@pytest.mark.parametrize("case,fix", [
    ("missing run", "no such directory"),
    ("run without history", "has no history.json"),
    ("export that is not one", "is not an export"),
    ("build that is not one", "not a build report"),
    ("out is a directory", "is a directory"),
])
def test_report_errors_say_what_is_wrong(reported, tmp_path, capsys, case, fix):
    run, export = reported["run"], reported["export"]
    argv = {"missing run": [str(tmp_path / "nope")],
            "run without history": [str(run)],
            "export that is not one": [str(run), "--export", str(run)],
            "build that is not one": [str(run), "--build", str(run / "metrics.json")],
            "out is a directory": [str(run), "--out", str(tmp_path)]}[case]
    if case == "run without history":
        (run / "history.json").unlink()
    before = reported["page"].read_text()
    assert main(["report", *argv]) == 1
    err = " ".join(capsys.readouterr().err.split())           # the message is wrapped at 100 columns
    assert err.startswith("ternpe report: error:") and fix in err, err
    assert reported["page"].read_text() == before


def test_simulation_records_append_and_refuse_a_corrupt_list(tmp_path):
    from ternpe.simlog import SIMLOG, append_record, read_records
    assert read_records(tmp_path) == []
    assert append_record(tmp_path, {"simulator": "icarus", "bit_exact": True})
    assert append_record(tmp_path, {"simulator": "verilator", "bit_exact": False})
    assert [r["simulator"] for r in read_records(tmp_path)] == ["icarus", "verilator"]
    assert "time" in read_records(tmp_path)[0] and not list(tmp_path.glob(".*.part"))
    (tmp_path / SIMLOG).write_text("{not json")
    said = []
    assert not append_record(tmp_path, {"simulator": "icarus"}, log=said.append)
    assert "not recorded" in said[0] and (tmp_path / SIMLOG).read_text() == "{not json"


def test_sim_command_records_its_run(tmp_path):
    import argparse
    from ternpe.cli.sim import _record
    from ternpe.simlog import read_records
    a = argparse.Namespace(export=str(tmp_path), simulator="verilator", valid_gap=0.0, ready_gap=0.3)
    res = {"results": [{"ok": True}, {"ok": False}], "geometry": "1x16", "cycles": [900, 900], "model_cycles": 900}
    _record(a, res, "up5k", "sample 1: layer fc is the first that differs")
    (r,) = read_records(tmp_path)
    assert (r["samples"], r["samples_ok"], r["bit_exact"], r["cycles"], r["device"]) == (2, 1, False, [900], "up5k")
    assert r["stalls"] == {"valid_gap": 0.0, "ready_gap": 0.3}


@pytest.mark.parametrize("shape", [(16, 1), (32, 1), (10, 98), (64, 36)])
def test_tile_map_has_a_key_integer_ticks_and_a_readable_size(shape):
    from PIL import Image
    import io
    from ternpe.figures import KEPT, PRUNED, png, tile_map_figure
    fig = tile_map_figure(np.random.default_rng(0).integers(0, 2, shape), "layer: some tiles kept")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [KEPT, PRUNED]
    for ticks, n in ((ax.get_xticks(), shape[1]), (ax.get_yticks(), shape[0])):
        shown = [t for t in ticks if -0.5 <= t <= n - 0.5]
        assert shown and all(float(t).is_integer() for t in shown), ticks
    w, h = Image.open(io.BytesIO(png(fig))).size
    assert 150 <= w <= 1000 and 150 <= h <= 600, (w, h)
