"""The array options every command that turns an export into hardware shares: ``--pe`` and
``--image-lanes`` (generate, sim, build, run --sim)."""

from __future__ import annotations

PE_HELP = ("array P'xG: P' a multiple of the trained P (a wide tile holds P' filters and is skipped when all "
           "of them are pruned in its column; the filters pruned alike are grouped first), or auto: the array "
           "and image lanes with the most inferences/s that fit the device (default: as trained)")

LANES_HELP = ("image lanes: N copies of the array's datapath in lockstep on one controller and one weight ROM, "
              "each computing its own image (N times the throughput, the trained tile still the unit of "
              "skipping; images go in batches of N). With --pe auto: fix N and take the fastest array with N "
              "lanes within the shares of the device's logic and block RAMs that --pe auto fills "
              "(docs/accelerator.md); with --pe P'xG, N is checked against the whole device (default: 1, or --pe auto's "
              "choice)")


def add_array_options(parser, *, what: str = "") -> None:
    """``--pe`` and ``--image-lanes`` on ``parser`` (``what``: a prefix such as "with --sim: ")."""
    parser.add_argument("--pe", default=None, help=what + PE_HELP)
    parser.add_argument("--image-lanes", type=int, default=None, metavar="N", dest="image_lanes",
                        help=what + LANES_HELP)
