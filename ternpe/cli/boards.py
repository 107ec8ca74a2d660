"""The board help of ``build``, ``flash``, ``run`` and ``verify``, written from the board table
(:data:`ternpe.hw.boards.BOARDS`; importing it imports Amaranth, so only these commands' parsers
call it)."""

from __future__ import annotations

import textwrap

__all__ = ["board_names", "board_table", "board", "export_board"]


def board_names(family: str | None = None, sep: str = ", ") -> str:
    """The boards (of ``family``, ice40 or ecp5, when given), as ``--board`` takes them."""
    from ternpe.hw.boards import BOARDS
    return sep.join(name for name, b in BOARDS.items() if family in (None, b.family))


def board_table() -> str:
    """One entry per board: its device, the PLL's clock (the one the bitstream runs at), the host
    link's UART, the programmer and the bitstream file."""
    from ternpe.hw.boards import BOARDS, ecp5_pll, ice40_pll
    lines = ["boards (clock chosen by measurement; the host link is a UART):"]
    for b in BOARDS.values():
        pll = (ice40_pll if b.family == "ice40" else ecp5_pll)(b.clk_in_hz, b.clock_hz)["f_out"]
        text = (f"{b.name:<12} {b.device}, {b.clk_in_hz / 1e6:g} MHz -> PLL {pll / 1e6:g} MHz, UART at "
                f"{b.baud / 1e6:g} Mbaud on {b.uart_note}, {b.programmer}, .{b.bitstream_ext}")
        lines += textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent=" " * 15)
    return "\n".join(lines)


def board(name: str):
    """The :class:`~ternpe.hw.boards.Board` ``--board name`` names, or a clear error."""
    from ternpe.hw.boards import BOARDS
    if name not in BOARDS:
        raise ValueError(f"--board {name}: unknown board; choose one of {', '.join(BOARDS)}")
    return BOARDS[name]


def export_board(export_dir) -> str | None:
    """The board an export's network was trained for (``ternpe train --board``), or None."""
    import json
    import pathlib
    path = pathlib.Path(export_dir) / "manifest.json"
    try:
        return json.loads(path.read_text()).get("meta", {}).get("board")
    except (OSError, ValueError):
        return None          # the command's own load says what is wrong with the export
