"""``ternpe flash``: program a bitstream with iceprog or openFPGALoader."""

from __future__ import annotations

import json
import pathlib
import subprocess

from ternpe.flow.tools import ToolError, require, tool_env
from ternpe.hw.boards import BOARDS

__all__ = ["FlashError", "flash", "flash_command"]

#: openFPGALoader board names
_OFL_BOARD = {"icebreaker": "ice40_generic", "upduino": "ice40_generic", "ulx3s": "ulx3s", "orangecrab": "orangecrab"}


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


def flash(bitstream, board_name: str, *, force: bool = False) -> None:
    """Program ``bitstream``. Refuses one whose build report (``<name>.report.json`` beside it)
    says timing failed or verification failed, or that has no report, unless ``force``."""
    if board_name not in BOARDS:
        raise FlashError(f"--board must be one of {', '.join(BOARDS)}, not {board_name!r}")
    path = pathlib.Path(bitstream)
    ext = BOARDS[board_name].bitstream_ext
    if not path.is_file():
        raise FlashError(f"{path} does not exist: build it with `ternpe build EXPORT --board {board_name}`")
    if path.suffix != f".{ext}":
        raise FlashError(f"{path} is not a .{ext} bitstream, which {board_name} takes")
    report = path.with_name(path.name[:-len(path.suffix)] + ".report.json")
    if not force:
        if not report.is_file():
            raise FlashError(f"{path} has no build report ({report.name}): it was not built by `ternpe build`, so "
                             f"its timing is unknown. Rebuild it, or flash it anyway with --force")
        try:
            rep = json.loads(report.read_text())
        except json.JSONDecodeError:
            raise FlashError(f"{report} is not valid JSON; rebuild, or flash anyway with --force") from None
        if not rep.get("timing_met"):
            raise FlashError(f"{path} missed timing (fmax {rep.get('fmax_mhz')} MHz < clock {rep.get('clock_mhz')} MHz): "
                             f"it may compute wrong answers. Rebuild with a lower --clock, or flash anyway with --force")
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
        if "unable to open" not in out.lower() and "not found" not in out.lower() and "no device" not in out.lower():
            hint = "the programmer failed"
        raise FlashError(f"{hint}\n  {' '.join(cmd)}\n  {out[-1500:]}")
