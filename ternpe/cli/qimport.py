"""``ternpe import``: a QONNX model (Brevitas, FINN, hls4ml, or ternpe's own) as a run."""

from __future__ import annotations

import argparse

NAME = "import"
HELP = "import a QONNX model (Brevitas, FINN, hls4ml) as a run that export takes"
#: What an interrupted `ternpe import` leaves behind (said after Ctrl-C).
INTERRUPTED = "nothing was written to --out (a run is written beside it and renamed into place only when whole)"
DESCRIPTION = ("Fold a QONNX graph with ternary weights into ternpe's integer model, check it against the graph "
               "as qonnx executes it, and write a run directory that `ternpe export` takes like a trained one.")

_EPILOG = """\
what it takes (after qonnx's cleanup): Conv (group 1, square kernel), Gemm or MatMul whose
weight is a Quant of 2 bits, signed, narrow ({-1, 0, +1} x a scale per tensor or per
channel) or a BipolarQuant; then BatchNormalization, Relu, Mul/Div/Add/Sub by constants,
an Add of an earlier layer's input (a residual block; ResNet option A through Slice and
Pad), MaxPool 2x2; an unsigned 8-bit activation Quant (learned scales are folded into the
requantizers); Flatten/Reshape or GlobalAveragePool before the classifier. The graph's
input is the image as pixel * --input-scale (1/255 by default: a network trained on
pixel / 255). Anything else is refused with the node's name, its op and why.

writes model.onnx (the graph as given), config.json and metrics.json: the graph's accuracy
as qonnx executes it, the folded integer model's, how many classes and activations agree
(where the graph rounds in float32, the integer model in fixed point, a value on a
rounding edge may land one step apart: metrics.json says how often), and the cycles and
speedup over dense on --pe.

examples (examples/brevitas_digits.py trains a Brevitas ternary CNN on the digits):
  .venv/bin/python examples/brevitas_digits.py --out runs/brevitas.onnx
  ternpe import runs/brevitas.onnx --dataset digits --out runs/brevitas
  ternpe export runs/brevitas --out exports/brevitas
  ternpe sim exports/brevitas --simulator verilator --samples 8
"""


def _scale(text: str) -> float:
    """``1/255`` or ``0.0039``: a positive scale."""
    try:
        num, _, den = text.partition("/")
        v = float(num) / (float(den) if den else 1.0)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 1/255") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the input scale must be > 0")
    return v


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the QONNX file (.onnx)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--dataset", required=True,
                   help="the data set the model takes (its test split gives the accuracy and the golden vectors): "
                        "digits, mnist, fashion-mnist, cifar10, synthetic, synthetic-rgb32")
    p.add_argument("--data-dir", default=None, help="directory of the data set's files (full mnist, cifar10)")
    p.add_argument("--pe", default="1x16", help="array geometry PxG the run is exported for (default: %(default)s)")
    p.add_argument("--input-scale", type=_scale, default=None,
                   help="the graph's input is pixel * this (default: 1/255; 1 for a graph ternpe wrote)")
    from .force import add_force_option
    add_force_option(p, "--out")


def run(a) -> int:
    from ternpe.model.imported import import_qonnx
    import_qonnx(a.model, a.out, dataset=a.dataset, data_dir=a.data_dir, pe=a.pe, input_scale=a.input_scale,
                 force=a.force)
    return 0
