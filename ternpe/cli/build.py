"""``ternpe build``: a bitstream of an export for a board."""

from __future__ import annotations

import argparse

NAME = "build"
HELP = "build a bitstream of an export for a board"
#: What an interrupted `ternpe build` leaves behind (said after Ctrl-C).
INTERRUPTED = ("no bitstream is half-written (it is renamed into place when whole); the board build directory "
               "holds a stopped build, which the next `ternpe build` builds again")
DESCRIPTION = ("Build the accelerator of an export, with its UART host link, a PLL and status LEDs, into a "
               "bitstream for a board (Yosys, nextpnr and icepack/ecppack from the venv). Checks the memories "
               "fit before synthesis; fails when timing does not close at the board's clock. An iCE40 "
               "bitstream is then verified (`ternpe verify` on --verify-samples golden inputs) before it "
               "replaces the old one; a failed one is kept as <export>.timing-failed.bin or "
               "<export>.verify-failed.bin.")

_EPILOG = """\
{boards}

writes <out>/<board>/<export>.bin (.bit on ECP5) and <export>.report.json: resources used and
available, fmax and clock, cycles and inferences per second, bitstream size, build time.

example:
  ternpe build exports/digits --board icebreaker
"""


def add_parser(sub) -> None:
    from .boards import board_names, board_table
    bd = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                        epilog=_EPILOG.format(boards=board_table()),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    bd.add_argument("export", help="export directory written by `ternpe export`")
    bd.add_argument("--board", default=None, help=board_names() + " (default: the board the network was trained "
                                                                   "for, `ternpe train --board`)")
    from .array import add_array_options
    add_array_options(bd)
    bd.add_argument("--clock", type=float, default=None, help="accelerator clock in MHz (default: the board's, "
                                                              "chosen by measurement)")
    bd.add_argument("--out", default="bitstreams", help="where <board>/<export>.bin|bit and .report.json go "
                                                        "(default: %(default)s)")
    bd.add_argument("--build-dir", default="build/boards", help="intermediate files, in <build-dir>/<board>/<export> "
                                                                "(default: %(default)s)")
    from .force import add_force_option
    add_force_option(bd, "<build-dir>/<board>/<export>")
    bd.add_argument("--verify-samples", type=int, default=2, metavar="N",
                    help="iCE40: simulate the netlist unpacked from the new bitstream on N golden inputs before "
                         "it replaces the old one (`ternpe verify`; 0 skips it; default: %(default)s)")


def run(a) -> int:
    from ternpe.flow.build import build
    if a.verify_samples < 0:
        raise ValueError(f"--verify-samples must be >= 0, not {a.verify_samples}")
    from .boards import board_names, export_board
    a.board = a.board or export_board(a.export)
    if a.board is None:
        raise ValueError(f"give --board ({board_names()}): {a.export} was not trained for a board")
    r = build(a.export, a.board, out_dir=a.out, build_root=a.build_dir, clock_mhz=a.clock, pe=a.pe, images=a.image_lanes,
              verify_samples=a.verify_samples, force=a.force)
    res = r["resources"]
    lanes = f" x {r['image_lanes']} image lanes" if r["image_lanes"] > 1 else ""
    print(f"ternpe build: {r['bitstream']} ({r['bitstream_bytes']:,} bytes, {r['build_s']:.0f} s), PE {r['geometry']}{lanes}")
    print(f"  clock {r['clock_mhz']:.2f} MHz (fmax {r['fmax_mhz']:.2f} MHz, timing met)")
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"  {k:<6} {v['used']:>6} / {v['available']}")
    print(f"  {r['cycles_per_image']:,.0f} cycles per image ({r['speedup_vs_dense']:.2f}x fewer than dense; a batch "
          f"every {r['throughput_cycles']} with the next loading meanwhile): {r['inferences_per_s_compute']:,.0f} "
          f"inferences/s compute, {r['inferences_per_s_link']:,.0f}/s over the {r['baud'] / 1e6:g} Mbaud link "
          f"({r['inferences_per_s_link_rle']:,.0f}/s with the images run-length coded, as the host sends them)")
    from ternpe.hw.boards import BOARDS
    if r["baud"] != BOARDS[a.board].baud:
        print(f"  the UART runs at {r['baud'] / 1e6:g} Mbaud (this clock cannot make the board's "
              f"{BOARDS[a.board].baud / 1e6:g}): talk to it with `ternpe run --board {a.board} --baud {r['baud']}`")
    if r["verified"]:
        print(f"  verified: the netlist unpacked from the bitstream is bit-exact on {r['verified']['samples']} golden "
              f"input(s) (`ternpe verify` runs them all)")
    return 0
