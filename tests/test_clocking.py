"""A board's clock and UART rate (hw/boards.py BoardTop.clocking): the PLL's nearest clock, and the
board's baud rate, or where that clock cannot make it within 2%, the fastest of the rates its
USB-serial side makes that the clock can."""

import numpy as np
import pytest

from ternpe.hw.boards import BOARDS, BoardTop
from ternpe.hw.uart import divisor


@pytest.mark.parametrize("mhz,f_out,baud,div", [(None, 30e6, 6_000_000, 5), (36, 36e6, 6_000_000, 6),
                                                (32, 31.875e6, 4_000_000, 8), (33, 33e6, 3_000_000, 11)])
def test_icebreaker_takes_the_fastest_rate_its_clock_makes(mhz, f_out, baud, div):
    _, f, b, d = BoardTop.clocking(BOARDS["icebreaker"], None if mhz is None else mhz * 1e6)
    assert (f, b, d) == (f_out, baud, div)


def test_every_clock_gets_a_rate_the_ft2232h_makes_within_two_percent():
    board = BOARDS["icebreaker"]
    for mhz in np.arange(20.0, 48.0, 0.25):
        _, f, b, d = BoardTop.clocking(board, mhz * 1e6)
        assert b in (board.baud,) + board.bauds and 12_000_000 % b == 0
        assert abs(f / d - b) / b <= 0.02 and d == divisor(f, b)
        # nothing faster in the list is made by that clock
        for faster in [r for r in (board.baud,) + board.bauds if r > b]:
            with pytest.raises(ValueError):
                divisor(f, faster)


def test_a_board_without_other_rates_names_its_rate():
    with pytest.raises(ValueError, match=r"makes none of upduino's UART rates \(3 Mbaud\) within 2%"):
        BoardTop.clocking(BOARDS["upduino"], 31.875e6)
    # a rate asked for is taken or refused as it is
    assert BoardTop.clocking(BOARDS["upduino"], 30e6, 1_000_000)[2:] == (1_000_000, 30)
    with pytest.raises(ValueError, match="cannot make 6000000 baud"):
        BoardTop.clocking(BOARDS["icebreaker"], 31.875e6, 6_000_000)
