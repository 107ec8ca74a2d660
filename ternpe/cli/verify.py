"""``ternpe verify``: simulate the netlist inside an iCE40 bitstream against the golden outputs."""

from __future__ import annotations

import argparse
import sys

NAME = "verify"
HELP = "simulate the netlist inside an iCE40 bitstream against the golden outputs"
#: What an interrupted `ternpe verify` leaves behind (said after Ctrl-C).
INTERRUPTED = "its work directory holds a stopped simulation (no result.json), which the next `ternpe verify` starts afresh"
DESCRIPTION = ("Unpack an iCE40 bitstream (iceunpack), recover the netlist of the configured fabric with its "
               "block RAM contents, SPRAMs and DSPs (icebox_vlog, Debian's fpga-icestorm), and simulate it "
               "with Icarus behind a bit-level UART at the bitstream's own baud divisor: the export id (INFO), "
               "then every golden input through the host-link protocol. Reports bit-exact, or each mismatch. "
               "This checks the file you flash, after synthesis, placement, routing and packing. ECP5 "
               "bitstreams cannot be turned back into a netlist (no tool does it).")

_EPILOG = """\
examples:
  ternpe verify bitstreams/icebreaker/digits.bin --export exports/digits
  ternpe verify bitstreams/upduino/mnist.bin --export exports/mnist --samples 4

The board, clock and baud rate come from the build report beside the bitstream; its timing
is said first, and a bitstream that failed timing is refused unless --force.
Icarus runs the recovered netlist at about 1,600 cycles/s: a digits sample (8x8)
takes about 10 s, an MNIST sample (28x28, 784 bytes over the UART) about a minute.
"""


def add_parser(sub) -> None:
    from .boards import board_names
    vf = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    vf.add_argument("bitstream", help="an iCE40 .bin written by `ternpe build`")
    vf.add_argument("--export", required=True, help="the export the bitstream was built from")
    vf.add_argument("--board", default=None,
                    help=f"{board_names('ice40', sep=' or ')} (default: from the build report)")
    vf.add_argument("--samples", type=int, default=None, help="golden inputs to run (default: all)")
    vf.add_argument("--work-dir", default=None, help="where the netlist and the simulation go "
                                                     "(default: build/verify/<board>/<bitstream name>; an existing directory must be an earlier verify run's)")
    from .force import add_force_option
    add_force_option(vf, "--work-dir", also="; and verify a bitstream whose build report says timing failed "
                                             "(refused without it)")


def run(a) -> int:
    from ternpe.flow.verify import build_report, timing_status, verify_bitstream
    met, timing = timing_status(build_report(a.bitstream))
    print(f"ternpe verify: {a.bitstream}: {timing}")
    if met is False and not a.force:
        print(f"ternpe verify: error: {a.bitstream} failed timing: the board may compute wrong answers at its "
              f"clock, and a netlist simulation cannot show it (it has no delays). Rebuild with a lower --clock, "
              f"or verify its logic anyway with --force", file=sys.stderr)
        return 1
    r = verify_bitstream(a.bitstream, a.export, board_name=a.board, samples=a.samples, work_dir=a.work_dir,
                         force=a.force)
    from ternpe.simlog import append_record
    append_record(a.export, {
        "command": "verify", "simulator": "icarus", "design": f"the netlist inside {a.bitstream}",
        "samples": r["samples"], "bit_exact": bool(r["ok"]), "cycles": [r["cycles"]] if r.get("cycles") else [],
        "failure": None if r["ok"] else f"{len(r['mismatches'])} mismatch(es)"},
        log=lambda msg: print(msg, file=sys.stderr))
    for m in r["mismatches"][:10]:
        where = m["what"] if m["sample"] is None else f"sample {m['sample']} {m['what']}"
        print(f"  MISMATCH {where}: board {m['board']}, golden {m['golden']}")
    if r["ok"]:
        print(f"ternpe verify: {a.bitstream}: bit-exact on {r['samples']} golden input(s) (logits, class and "
              f"{r['cycles']} cycles each; export id matches), {r['sim_seconds']:.0f} s of simulation"
              + ("; but it missed timing: the logic is right, the board may still be wrong at its clock"
                 if met is False else ""))
        return 0
    print(f"ternpe verify: {a.bitstream}: {len(r['mismatches'])} mismatch(es) in {r['samples']} golden input(s); "
          f"the simulation is in {r['work_dir']}", file=sys.stderr)
    return 1
