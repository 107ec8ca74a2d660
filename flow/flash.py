"""``ternpe flash``: program a bitstream with iceprog or openFPGALoader."""

from __future__ import annotations

import pathlib
import subprocess

from ternpe.flow.tools import ToolError, require, tool_env
from ternpe.hw.boards import BOARDS
from .verify import build_report, timing_status

__all__ = ["FlashError", "flash", "flash_command"]

#: openFPGALoader board names
_OFL_BOARD = {"icebreaker": "ice40_generic", "upduino": "ice40_generic", "ulx3s": "ulx3s", "orangecrab": "orangecrab"}


#: what iceprog and openFPGALoader say when no board is plugged in (or it cannot be opened)
_NO_BOARD = ("unable to open", "not found", "no device", "can't find", "cannot find", "no such device",
             "failed to open", "usb_open")


class FlashError(RuntimeError):
    """No board answered, or the programmer failed; the message says what to check."""


def flash_command(bitstream, board_name: str, env: dict) -> list:
    board = BOARDS[board_name]
    if board.programmer == "iceprog":
        try:
            return [require("iceprog", env=env)["iceprog"], str(bitstream)]
        except ToolError:
            pass          # no iceprog: openFPGALoader programs iCE40 boards too
    ofl = env.get("OPENFPGALOADER", "openFPGALoader")
    require(ofl, env=env)
    return [ofl, "-b", _OFL_BOARD[board_name], *(["-f"] if board.family == "ice40" else []), str(bitstream)]


def flash(bitstream, board_name: str, *, force: bool = False, log=print) -> None:
    """Program ``bitstream``, saying its timing. Refuses one whose build report (``<name>.report.json``
    beside it) says timing failed or verification failed, or that has no report, unless ``force``."""
    if board_name not in BOARDS:
        raise FlashError(f"--board must be one of {', '.join(BOARDS)}, not {board_name!r}")
    path = pathlib.Path(bitstream)
    ext = BOARDS[board_name].bitstream_ext
    if not path.is_file():
        raise FlashError(f"{path} does not exist: build it with `ternpe build EXPORT --board {board_name}`")
    if path.suffix != f".{ext}":
        raise FlashError(f"{path} is not a .{ext} bitstream, which {board_name} takes")
    try:
        rep = build_report(path, FlashError)
    except FlashError:
        if not force:
            raise
        rep = {}
    met, timing = timing_status(rep)
    log(f"ternpe flash: {path}: {timing}" + (" (flashing anyway: --force)" if force and not met else ""))
    if not force:
        if not rep:
            raise FlashError(f"{path} has no build report ({path.stem}.report.json): it was not built by `ternpe "
                             f"build`, so its timing is unknown. Rebuild it, or flash it anyway with --force")
        if not met:
            raise FlashError(f"{path} {timing}: it may compute wrong answers. Rebuild with a lower --clock, or "
                             f"flash anyway with --force")
        ver = rep.get("verified")
        if isinstance(ver, dict) and not ver.get("ok"):
            raise FlashError(f"{path}: its netlist, simulated from the bitstream, differs from the golden outputs "
                             f"(`ternpe verify` says why): it computes wrong answers. Rebuild, or flash anyway "
                             f"with --force")
        if rep.get("board") not in (None, board_name):
            raise FlashError(f"{path} was built for {rep.get('board')}, not {board_name}")
    env = tool_env()
    cmd = flash_command(path, board_name, env)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        out = (p.stdout + p.stderr).strip()
        hint = ("no board found: is it plugged in, and may this user open it? (udev rules for the FTDI "
                "chip, or run as root)")
        if not any(words in out.lower() for words in _NO_BOARD):
            hint = "the programmer failed (its output is below)"
        raise FlashError(f"{hint}\n  {' '.join(cmd)}\n  {out[-1500:]}")
