"""``ternpe generate``: the accelerator's Verilog for an export."""

from __future__ import annotations

import argparse

NAME = "generate"
HELP = "generate the accelerator's Verilog for an export"
#: What an interrupted `ternpe generate` leaves behind (said after Ctrl-C).
INTERRUPTED = "--out may hold part of the Verilog: run generate again before using it"
DESCRIPTION = ("Generate the Verilog of the accelerator for an exported network: a P x G ternary PE array, the "
               "sparse-tile weight buffer, the requantizers and the controller, with the analytic cycle count.")

_EPILOG = """\
examples:
  ternpe generate exports/digits --out build/digits/rtl --device up5k
  ternpe generate exports/mnist --device ecp5-85f --pe auto --out build/mnist/rtl
  ternpe generate exports/mnist --pe 1x16 --image-lanes 4 --out build/mnist4/rtl   # 4 images at once

prints the cycles (beside dense, latency, throughput) and, with --device, the memory
plan; writes ternpe_top.v and ternpe_top.json (cycles per layer, fit, memory bits, ports)."""


def add_parser(sub) -> None:
    gen = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                         epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("export", help="export directory written by `ternpe export`")
    gen.add_argument("--out", required=True, help="directory for the Verilog")
    from .force import add_force_option
    add_force_option(gen, "--out")
    from .array import add_array_options
    add_array_options(gen)
    from ternpe.devices import DEVICES
    gen.add_argument("--device", default=None, help=f"check the fit and print the memory plan: {', '.join(DEVICES)} "
                                                    "(default: the device of the board the network was trained for)")


def run(a) -> int:
    from ternpe.flow.generate import generate
    from .boards import board, export_board
    trained_for = export_board(a.export) if a.device is None else None
    if trained_for:
        a.device = board(trained_for).device
    generate(a.export, a.out, pe=a.pe, device=a.device, images=a.image_lanes, force=a.force)
    return 0
