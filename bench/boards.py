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
    ap.add_argument("--build", action="store_true", help="build every board's bitstream first")
    args = ap.parse_args(argv)
    from ternpe.hw.boards import BOARDS
    name = pathlib.Path(args.export).resolve().name
    if args.build:
        from ternpe.flow.build import build
        for b in BOARDS:
            build(args.export, b, out_dir=ROOT / "bitstreams", build_root=ROOT / "build" / "boards")
    print("| board | clock MHz | fmax MHz | LUT | BRAM | DSP | inferences/s compute | inferences/s over UART "
          "| bitstream bytes | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    missing = []
    for b in BOARDS:
        f = ROOT / "bitstreams" / b / f"{name}.report.json"
        if not f.exists():
            missing.append(b)
            continue
        r = json.loads(f.read_text())
        res = r["resources"]
        u = lambda k: f"{res[k]['used']}/{res[k]['available']}" if k in res else "-"     # noqa: E731
        print(f"| {b} | {r['clock_mhz']:.2f} | {r['fmax_mhz']:.2f} | {u('lut')} | {u('bram')} | {u('dsp')} | "
              f"{r['inferences_per_s_compute']:,.0f} | {r['inferences_per_s_link']:,.0f} | {r['bitstream_bytes']:,} | "
              f"{r['build_s']:.0f} |")
    if missing:
        print(f"\nno report for {', '.join(missing)}: run `make bitstreams` or `python bench/boards.py --build`",
              file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
