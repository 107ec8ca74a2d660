"""The demo on every board: clock, fmax, resources, inferences per second, bitstream, build time.

    python bench/boards.py [EXPORT] [--build]

Reads bitstreams/<board>/<export>.report.json (``make bitstreams`` writes them); ``--build``
builds every board first (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", nargs="?", default=str(ROOT / "exports" / "digits"))
    ap.add_argument("--reports", default=str(ROOT / "bitstreams"), help="where <board>/<export>.report.json are")
    ap.add_argument("--build", action="store_true", help="build every board's bitstream first")
    args = ap.parse_args(argv)
    from ternpe.hw.boards import BOARDS
    name = pathlib.Path(args.export).resolve().name
    if args.build:
        from ternpe.flow.build import build
        for b in BOARDS:
            build(args.export, b, out_dir=ROOT / "bitstreams", build_root=ROOT / "build" / "boards")
    from ternpe.image import load_export
    ex = load_export(args.export, check_golden=False)
    # dense-equivalent work: every multiply-accumulate of the dense network counts 2 operations
    macs = sum(l.spec.out_h * (2 if l.spec.pool else 1) * l.spec.out_w * (2 if l.spec.pool else 1)
               * l.spec.cout * l.spec.cin * l.spec.k * l.spec.k for l in ex.layers)
    print(f"{name}: {macs:,} dense MACs per inference; GOP/s = 2 x MACs x inferences/s (compute)\n")
    print("| board | PE | clock MHz | fmax MHz | LUT | BRAM | SPRAM | DSP | cycles (dense) | inferences/s compute "
          "| GOP/s | GOP/s per 1k LUT | inferences/s over UART | bitstream bytes | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    missing = []
    for b in BOARDS:
        f = pathlib.Path(args.reports) / b / f"{name}.report.json"
        if not f.exists():
            missing.append(b)
            continue
        r = json.loads(f.read_text())
        res = r["resources"]
        u = lambda k: f"{res[k]['used']}/{res[k]['available']}" if k in res else "-"     # noqa: E731
        gops = 2 * macs * r["inferences_per_s_compute"] / 1e9
        print(f"| {b} | {r['geometry']} | {r['clock_mhz']:.2f} | {r['fmax_mhz']:.2f} | {u('lut')} | {u('bram')} | "
              f"{u('spram')} | {u('dsp')} | {r['cycles_per_inference']} ({r.get('dense_cycles', '-')}) | "
              f"{r['inferences_per_s_compute']:,.0f} | {gops:.3f} | {gops / res['lut']['used'] * 1000:.4f} | "
              f"{r['inferences_per_s_link']:,.0f} | {r['bitstream_bytes']:,} | {r['build_s']:.0f} |")
    if missing:
        print(f"\nno report for {', '.join(missing)}: run `make bitstreams` or `python bench/boards.py --build`",
              file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
