"""``ternpe report``: one self-contained HTML page of a run, its export and its builds."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "write one HTML page of a run: training, cycles, tile maps, resources, fmax, simulations"
#: What an interrupted `ternpe report` leaves behind (said after Ctrl-C).
INTERRUPTED = "the page is written whole or not at all: any old one is as it was"
DESCRIPTION = ("Write a single self-contained HTML page (figures embedded, no network, no JavaScript) with what "
               "a run produced: the training curves (accuracy, tile density, speedup and cycles per epoch), the "
               "cycles per layer dense against pruned, each layer's tile map; with --export, the layers as "
               "exported and every `ternpe sim` / `ternpe verify` run on the export, bit-exact or not; with "
               "--build, the resources against the device, the memory plan, fmax and clock, and the "
               "inferences per second of compute and of the host link.")

_EPILOG = """\
examples:
  ternpe report runs/mnist                                   # the run alone: runs/mnist/report.html
  ternpe report runs/mnist --export exports/mnist            # + the export's tile maps and simulations
  ternpe report runs/mnist --export exports/mnist --build bitstreams/icebreaker/mnist.report.json
  ternpe report runs/mnist --export exports/mnist --build bitstreams/ulx3s --build bitstreams/upduino

--build takes the .report.json `ternpe build` writes beside a bitstream, or the board's
directory holding <export name>.report.json; give it once per board. The page replaces only a
page ternpe wrote (--force moves anything else aside). `make demo` writes runs/<dataset>/report.html.
"""


def add_parser(sub) -> None:
    r = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run", help="run directory written by `ternpe train` (it needs metrics.json and history.json)")
    r.add_argument("--export", default=None, help="export directory written by `ternpe export` from this run: "
                                                  "its tile index, cycles and recorded simulations")
    r.add_argument("--build", action="append", default=[], metavar="REPORT",
                   help="a build's report (bitstreams/<board>/<export>.report.json, or bitstreams/<board>): "
                        "resources, memory plan, fmax, inferences/s; repeat for several boards")
    r.add_argument("--out", default=None, help="the HTML file to write (default: RUN/report.html)")
    r.add_argument("--force", action="store_true",
                   help="when --out is a file ternpe did not write, move it aside to <file>.old-<date>-<time> "
                        "instead of refusing; nothing is deleted")


def run(a) -> int:
    from ternpe.report import write_report
    write_report(a.run, export=a.export, builds=a.build, out=a.out, force=a.force)
    return 0
