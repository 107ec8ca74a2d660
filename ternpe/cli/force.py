"""``--force`` of the commands that write a directory (train, export, generate, sim, build,
verify): what is in the way is moved aside, never deleted (:mod:`ternpe.outdir`)."""

from __future__ import annotations


def add_force_option(parser, what: str, also: str = "") -> None:
    """``--force`` on ``parser``; ``what`` names the directory it concerns (``--out``), ``also``
    says what else it allows."""
    parser.add_argument("--force", action="store_true",
                        help=f"when {what} is a file or a directory that ternpe did not write (it replaces or "
                             f"reuses only its own), move it aside to <dir>.old-<date>-<time> instead of "
                             f"refusing; nothing is deleted{also}")
