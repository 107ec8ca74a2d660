"""``ternpe export``: ROM images, tile index, requantizer constants and golden vectors of a run."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export ROM images and golden vectors of a trained run"
#: What an interrupted `ternpe export` leaves behind (said after Ctrl-C).
INTERRUPTED = "nothing was written to --out (an export is written beside it and renamed into place only when whole)"
DESCRIPTION = ("Export a trained run as ROM images of its non-zero tiles, the tile index, the requantization "
               "constants and golden test vectors.")

_EPILOG = """\
writes manifest.json, per layer <layer>.{weights,rowptr,cols,mult,bias}.hex ($readmemh
text: non-zero tiles only, CSR tile index, requantizer constants) and golden.npz (test
inputs, every layer's integer output, logits, classes). The export is read back and
checked against the integer model before the command returns. docs/contract.md
describes the format. --qonnx adds qonnx.onnx: the integer model as a QONNX graph
(ternary weights as 2-bit signed narrow Quant nodes, the requantizers in exact double
arithmetic), executed with qonnx on the golden inputs to the same integers before it is
kept; FINN, hls4ml and `ternpe import` read it (docs/qonnx.md).

example:
  ternpe export runs/digits --out exports/digits
  ternpe export runs/digits --out exports/digits --qonnx
"""


def add_parser(sub) -> None:
    e = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run", help="run directory written by `ternpe train` or `ternpe import`")
    e.add_argument("--out", required=True, help="export directory to write")
    e.add_argument("--samples", type=int, default=64, help="golden test vectors to include (default: %(default)s)")
    e.add_argument("--qonnx", action="store_true",
                   help="also write qonnx.onnx, the integer model as QONNX (checked by executing it with qonnx)")
    from .force import add_force_option
    add_force_option(e, "--out")


def run(a) -> int:
    from ternpe.model.export import export_run
    export_run(a.run, a.out, samples=a.samples, force=a.force, qonnx=a.qonnx)
    return 0
