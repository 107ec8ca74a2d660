"""Co-simulation speed on one export: amaranth.sim, cocotb + Icarus, cocotb + Verilator, in one run.

    python bench/cosim.py [EXPORT] [--samples N]

EXPORT defaults to exports/digits (``make demo`` writes it). Each simulator runs the same golden
samples through the top's streams (loading, computing, output) and is checked bit-exact. The
figure is simulated clock cycles per wall second of the simulation itself; generation and
build time are listed apart. The cocotb benches run twice: watching the debug taps every
cycle (the per-layer comparison, as `ternpe sim` does) and checking logits and class only, as
amaranth.sim does.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", nargs="?", default=str(ROOT / "exports" / "digits"))
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args(argv)
    from ternpe.hw.accelerator import Accelerator
    from ternpe.hw.plan import plan_accelerator
    from ternpe.flow.cosim import run_cosim
    from ternpe.flow.sim import simulate
    from ternpe.image import load_export
    if not (pathlib.Path(args.export) / "manifest.json").exists():
        print(f"bench/cosim.py: {args.export} is not an export; run `make demo` first", file=sys.stderr)
        return 1
    ex = load_export(args.export)
    n = min(args.samples, len(ex.golden["inputs"]))
    rows = []
    t0 = time.perf_counter()
    acc = Accelerator(plan_accelerator(ex))
    t1 = time.perf_counter()
    res = simulate(acc, ex.golden["inputs"][:n])
    wall = time.perf_counter() - t1
    ok = (res["logits"] == ex.golden["logits"][:n]).all()
    rows.append(("amaranth.sim", res["clocks"], wall, t1 - t0, ok))
    with tempfile.TemporaryDirectory(dir=ROOT / "build" if (ROOT / "build").is_dir() else None) as tmp:
        for sim in ("icarus", "verilator"):
            for taps in (True, False):
                r = run_cosim(args.export, simulator=sim, build_dir=pathlib.Path(tmp) / sim, samples=n, taps=taps)
                rows.append((f"cocotb + {sim}{'' if taps else ' (logits only)'}", r["clocks"], r["wall_s"],
                             r["total_s"] - r["wall_s"], all(x["ok"] for x in r["results"])))
    print(f"## {args.export}: {n} golden samples, {int(res['cycles'][0])} compute cycles per inference\n")
    print("| simulator | clock cycles | simulation s | cycles / wall s | generate + build s | bit-exact |")
    print("|---|---|---|---|---|---|")
    for name, clocks, wall, build, ok in rows:
        print(f"| {name} | {clocks} | {wall:.1f} | {clocks / wall:,.0f} | {build:.1f} | {'yes' if ok else 'NO'} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
