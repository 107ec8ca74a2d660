"""Fit the resource model's logic-cell coefficients to real nextpnr runs and print its error.

    python bench/resources.py [--runs FILE] [--build] [--family ice40|ecp5]

``--build`` builds every (export, board, array) point below with ``ternpe build`` (Yosys and
nextpnr, several minutes each family) and stores what nextpnr reported in ``bench/resource_runs.json``;
without it, the stored runs are used. ``--family`` keeps to one family's boards; with ``--build``
it re-measures that family's points, replacing its stored runs (after a change to the hardware). Prints the non-negative least-squares coefficients per family (paste
them into ``flow/resources.py``'s ``COEFFICIENTS``) and, per run, the model against nextpnr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from scipy.optimize import nnls

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: (export, board, array): the demo exports, and seeded random networks of other shapes
RANDOM = {"rand-g8": ((8, 8, 1), "c16,p,c32,p,fc10", "1x8"), "rand-rgb": ((12, 12, 3), "c16,p,c16,p,fc10", "1x16"),
          "rand-deep": ((8, 8, 2), "c16,p,c32,c32k1,fc16,fc10", "1x16")}
POINTS = [("digits", "icebreaker", "1x16"), ("digits", "icebreaker", "2x16"), ("mnist", "icebreaker", "1x16"),
          ("rand-g8", "icebreaker", "1x8"), ("rand-g8", "icebreaker", "2x8"), ("rand-rgb", "icebreaker", "1x16"),
          ("rand-deep", "icebreaker", "1x16"),
          ("digits", "ulx3s", "1x16"), ("digits", "ulx3s", "4x16"), ("digits", "ulx3s", "16x16"),
          ("mnist", "ulx3s", "1x16"), ("mnist", "ulx3s", "4x16"), ("mnist", "ulx3s", "16x16"),
          ("rand-g8", "ulx3s", "8x8"), ("rand-rgb", "ulx3s", "8x16")]


def export_dir(name: str) -> pathlib.Path:
    if name not in RANDOM:
        return ROOT / "exports" / name
    d = ROOT / "build" / "resource-fit" / "exports" / name
    if not (d / "manifest.json").exists():
        from ternpe.model.randnet import random_export
        shape, layers, pe = RANDOM[name]
        random_export(d, shape=shape, layers=layers, pe=pe, seed=5)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "bench" / "resource_runs.json"))
    ap.add_argument("--build", action="store_true", help="run the builds (else read --runs)")
    ap.add_argument("--family", choices=("ice40", "ecp5"), default=None,
                    help="only this family's boards; with --build, its stored runs are measured again")
    args = ap.parse_args(argv)
    from ternpe.flow.generate import prepare
    from ternpe.flow.resources import COEFFICIENTS, features
    from ternpe.hw.boards import BOARDS
    runs_path = pathlib.Path(args.runs)
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else []
    families = (args.family,) if args.family else ("ice40", "ecp5")
    if args.build and args.family:
        runs = [r for r in runs if BOARDS[r["board"]].family != args.family]
    if args.build:
        from ternpe.flow.build import BuildError, build
        done = {(r["export"], r["board"], r["pe"]) for r in runs}
        for name, board, pe in POINTS:
            if (name, board, pe) in done or BOARDS[board].family not in families:
                continue
            # a low clock: one placer run each (the resources do not depend on it; fmax is reported)
            try:
                r = build(export_dir(name), board, out_dir=ROOT / "build" / "resource-fit", pe=pe,
                          build_root=ROOT / "build" / "resource-fit", check_logic=False, progress=False, verify_samples=0,
                          clock_mhz=24 if BOARDS[board].family == "ice40" else 75)
            except BuildError as e:        # more logic than the device has: nextpnr cannot place it
                print(f"{name} {board} {pe}: {str(e).splitlines()[-1]}", flush=True)
                continue
            runs.append({"export": name, "board": board, "pe": pe, "lut": r["resources"]["lut"]["used"],
                         "ff": r["resources"].get("ff", {}).get("used"), "fmax_mhz": r["fmax_mhz"]})
            print(runs[-1], flush=True)
            runs_path.write_text(json.dumps(runs, indent=1) + "\n")
    if not runs:
        print(f"no runs in {runs_path}: run with --build", file=sys.stderr)
        return 1
    for family in families:
        rows = [r for r in runs if BOARDS[r["board"]].family == family]
        if not rows:
            continue
        X = np.array([[1.0, *features(prepare(export_dir(r["export"]), pe=r["pe"])[0])] for r in rows])
        print(f"\n{family}:")
        for key in ("lut", "ff"):
            if rows[0].get(key) is None:
                continue
            y = np.array([r[key] for r in rows], float)
            # non-negative: a design never shrinks with more lanes or PEs (a free fit of these few
            # builds gave the iCE40 PEs a negative cost)
            coef, _ = nnls(X, y)
            print(f"  fitted {key}: {tuple(round(float(c), 2) for c in coef)}")
            cur = COEFFICIENTS[family].get(key)
            model = X @ np.array(cur) if cur else X @ coef
            print(f"  {'export':<8}{'PE':>7}{'nextpnr':>9}{'model':>9}{'error':>8}   (model = flow/resources.py)")
            for r, m in zip(rows, model):
                print(f"  {r['export']:<8}{r['pe']:>7}{r[key]:>9}{m:>9.0f}{(m - r[key]) / r[key] * 100:>7.1f}%")
            err = np.abs(model - y) / y * 100
            print(f"  {key}: mean |error| {err.mean():.1f}%, max {err.max():.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
