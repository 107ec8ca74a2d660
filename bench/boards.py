"""The demo on every board: array and image lanes, clock, fmax, resources, cycles per image and
speedup over dense, inferences per second of compute and over the link, dense-equivalent GOP/s
and GOP/s per 1k LUT, beside the figures of the previous release.

    python bench/boards.py [EXPORT] [--build] [--pe auto]

Reads bitstreams/<board>/<export>.report.json (``make bitstreams`` writes them); ``--build``
builds every board first (minutes; ``--pe auto``: each board's array and image lanes chosen by
the resource model). The previous release's figures are bench/results/boards-release.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", nargs="?", default=str(ROOT / "exports" / "mnist"))
    ap.add_argument("--reports", default=str(ROOT / "bitstreams"), help="where <board>/<export>.report.json are")
    ap.add_argument("--build", action="store_true", help="build every board's bitstream first")
    ap.add_argument("--pe", default=None, help="with --build: the array (auto: chosen per board)")
    args = ap.parse_args(argv)
    from ternpe.hw.boards import BOARDS
    name = pathlib.Path(args.export).resolve().name
    if args.build:
        from ternpe.flow.build import build
        for b in BOARDS:
            build(args.export, b, out_dir=ROOT / "bitstreams", build_root=ROOT / "build" / "boards", pe=args.pe)
    from ternpe.image import load_export
    ex = load_export(args.export, check_golden=False)
    # dense-equivalent work: every multiply-accumulate of the dense network counts 2 operations
    macs = sum(l.spec.out_h * (2 if l.spec.pool else 1) * l.spec.out_w * (2 if l.spec.pool else 1)
               * l.spec.cout * l.spec.cin * l.spec.k * l.spec.k for l in ex.layers)
    print(f"{name}: {macs:,} dense MACs per inference; GOP/s = 2 x MACs x inferences/s (compute)\n")
    release = json.loads((ROOT / "bench" / "results" / "boards-release.json").read_text())
    print("| board | PE x image lanes | clock MHz | fmax MHz | LUT | BRAM | DSP | cycles per image (speedup vs dense) "
          "| inferences/s compute | over UART (run-length coded) | GOP/s | GOP/s per 1k LUT | previous release: PE, inferences/s, "
          "GOP/s per 1k LUT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    missing = []
    for b in BOARDS:
        f = pathlib.Path(args.reports) / b / f"{name}.report.json"
        if not f.exists():
            missing.append(b)
            continue
        r = json.loads(f.read_text())
        print(_row(b, r, macs, release["reports"].get(f"{b}/{name}")))
    if missing:
        print(f"\nno report for {', '.join(missing)}: run `make bitstreams` or `python bench/boards.py --build`",
              file=sys.stderr)
    return 1 if missing else 0


def _row(board: str, r: dict, macs: int, old: dict | None) -> str:
    res = r["resources"]
    u = lambda k: f"{res[k]['used']}/{res[k]['available']}" if k in res else "-"     # noqa: E731
    lanes = r.get("image_lanes", 1)
    per_image = r.get("cycles_per_image", r["cycles_per_inference"])
    speedup = r["dense_cycles"] / r["cycles_per_inference"]
    gops = 2 * macs * r["inferences_per_s_compute"] / 1e9
    rle = f"{r['inferences_per_s_link_rle']:,.0f}" if "inferences_per_s_link_rle" in r else "-"
    was = "-"
    if old:
        old_gops = 2 * macs * old["inferences_per_s_compute"] / 1e9
        was = f"{old['geometry']} x {old['image_lanes']}, {old['inferences_per_s_compute']:,.0f}, " \
              f"{old_gops / old['lut'] * 1000:.4f}"
    return (f"| {board} | {r['geometry']} x {lanes} | {r['clock_mhz']:.2f} | {r['fmax_mhz']:.2f} | {u('lut')} | "
            f"{u('bram')} | {u('dsp')} | {per_image:,.0f} ({speedup:.2f}x) | {r['inferences_per_s_compute']:,.0f} | "
            f"{r['inferences_per_s_link']:,.0f} ({rle}) | {gops:.3f} | {gops / res['lut']['used'] * 1000:.4f} | {was} |")


if __name__ == "__main__":
    sys.exit(main())
