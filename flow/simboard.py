"""A simulated board: :class:`~ternpe.hw.boardcore.BoardCore` in amaranth.sim behind a bit-level
UART model, with the interface of a serial port (``write``/``read``), so the host runtime
(:mod:`ternpe.host`) talks to it exactly as it talks to a real board.
"""

from __future__ import annotations

import collections

from amaranth.sim import Simulator

from ternpe.hw.boardcore import BoardCore
from ternpe.link import LinkError

__all__ = ["SimTransport"]


class SimTransport:
    """A serial port whose other end is :class:`BoardCore` in amaranth.sim.

    ``divisor`` clocks per bit (small, so simulations are short); ``timeout`` of :meth:`read` is
    in simulated clock cycles.
    """

    def __init__(self, export, *, divisor: int = 4, timeout_cycles: int = 4000):
        self.core = BoardCore(export, divisor=divisor, timeout_cycles=timeout_cycles)
        self.divisor = divisor
        self.period = 1e-7
        self.to_board = collections.deque()
        self.from_board = bytearray()
        self.clocks = 0
        self.sim = Simulator(self.core)
        self.sim.add_clock(self.period)
        self.sim.add_testbench(self._uart, background=True)
        self._now = 0.0

    async def _uart(self, ctx):
        d = self.divisor
        levels = collections.deque()         # the rx line, one entry per clock
        recv, recv_timer, recv_bits = False, 0, []
        while True:
            # host -> board: start bit, 8 data bits LSB first, stop bit, each d clocks
            if not levels and self.to_board:
                b = self.to_board.popleft()
                for bit in [0] + [b >> i & 1 for i in range(8)] + [1]:
                    levels.extend([bit] * d)
            ctx.set(self.core.rx, levels.popleft() if levels else 1)
            # board -> host: sample in the middle of each bit
            line = ctx.get(self.core.tx)
            if not recv:
                if not line:
                    recv, recv_timer, recv_bits = True, d + d // 2, []
            else:
                recv_timer -= 1
                if recv_timer == 0:
                    recv_bits.append(line)
                    recv_timer = d
                    if len(recv_bits) == 9:          # 8 data bits and the stop bit
                        if recv_bits[8]:
                            self.from_board.append(sum(bit << i for i, bit in enumerate(recv_bits[:8])))
                        recv = False
            await ctx.tick()
            self.clocks += 1

    def write(self, data: bytes) -> None:
        self.to_board.extend(data)

    def read(self, n: int, timeout: float = 200_000) -> bytes:
        """``n`` bytes from the board, or :class:`~ternpe.link.LinkError` after ``timeout`` clocks."""
        start = self.clocks
        while len(self.from_board) < n:
            if self.clocks - start > timeout:
                raise LinkError(f"no reply from the simulated board: {len(self.from_board)} of {n} bytes "
                                f"after {timeout} clocks")
            self._now += 256 * self.period
            self.sim.run_until(self._now)
        out = bytes(self.from_board[:n])
        del self.from_board[:n]
        return out

    def idle(self, clocks: int) -> None:
        """Let the board run ``clocks`` cycles with nothing sent."""
        self._now += clocks * self.period
        self.sim.run_until(self._now)

    def close(self) -> None:
        pass
