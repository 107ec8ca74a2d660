"""A simulated board: :class:`~ternpe.hw.boardcore.BoardCore` in amaranth.sim behind a bit-level
UART model, with the interface of a serial port (``write``/``read``), so the host runtime
(:mod:`ternpe.flow.host`) talks to it exactly as it talks to a real board.
"""

from __future__ import annotations

import collections
import random

from amaranth.sim import Simulator

from ternpe.hw.boardcore import BoardCore
from ternpe.link import UART_DATA_BITS, UART_FRAME_BITS, LinkError, encode_infer, wrap_seq

__all__ = ["SimTransport", "fuzz_link", "reply_timeout", "quiet_clocks"]


def reply_timeout(core: BoardCore) -> int:
    """Clocks a simulated read waits by default: the longest a well-behaved exchange can take
    (a whole request and reply on the line, the inference, the board's timeout and quiet
    period), twice over. Both simulated boards use it."""
    from ternpe.link import CMD_INFER, reply_length, request_length
    fmt = core.link.format
    line = (request_length(fmt, CMD_INFER) + reply_length(fmt, CMD_INFER)) * UART_FRAME_BITS * core.divisor
    return 2 * (line + core.link.plan.cycles["latency"] + core.link.timeout_cycles + core.link.quiet_cycles)


def quiet_clocks(core: BoardCore) -> int:
    """Clocks a host waits after a broken request: the board's quiet period twice over, and two
    byte times."""
    return 2 * core.link.quiet_cycles + 2 * UART_FRAME_BITS * core.divisor


class SimTransport:
    """A serial port whose other end is :class:`BoardCore` in amaranth.sim, built from ``plan``
    (:class:`~ternpe.hw.plan.AcceleratorPlan`: the array, the device options and the image lanes of
    the board simulated; a request carries ``plan.images`` images).

    ``divisor`` clocks per bit (small, so simulations are short); ``timeout`` of :meth:`read` is
    in simulated clock cycles.
    """

    def __init__(self, plan, *, divisor: int = 4, timeout_cycles: int = 4000):
        self.core = BoardCore(plan, divisor=divisor, timeout_cycles=timeout_cycles)
        self.divisor = divisor
        self.reply_timeout = reply_timeout(self.core)
        self.period = 1e-7
        self.to_board = collections.deque()
        self.from_board = bytearray()
        self.clocks = 0
        self._line_busy_until = 0          # the clock by which the bytes written are on the line
        self.sim = Simulator(self.core)
        self.sim.add_clock(self.period)
        self.sim.add_testbench(self._uart, background=True)
        self._now = 0.0

    async def _uart(self, ctx):
        d = self.divisor
        levels = collections.deque()         # the rx line, one entry per clock
        recv, recv_timer, recv_bits = False, 0, []
        while True:
            # host -> board: start bit, the data bits LSB first, stop bit, each d clocks
            if not levels and self.to_board:
                b = self.to_board.popleft()
                for bit in [0] + [b >> i & 1 for i in range(UART_DATA_BITS)] + [1]:
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
                    if len(recv_bits) == UART_DATA_BITS + 1:      # the data bits and the stop bit
                        data, stop = recv_bits[:UART_DATA_BITS], recv_bits[UART_DATA_BITS]
                        if stop:
                            self.from_board.append(sum(bit << i for i, bit in enumerate(data)))
                        recv = False
            await ctx.tick()
            self.clocks += 1

    def write(self, data: bytes) -> None:
        self.to_board.extend(data)
        self._line_busy_until = max(self._line_busy_until, self.clocks) + len(data) * UART_FRAME_BITS * self.divisor

    def _wait_for(self, n: int, timeout: float | None) -> None:
        """Run the simulation until the board has sent ``n`` bytes, or raise
        :class:`~ternpe.link.LinkError` after ``timeout`` clocks (default: :attr:`reply_timeout`)."""
        timeout = self.reply_timeout if timeout is None else timeout
        start = self.clocks
        while len(self.from_board) < n:
            if self.clocks - start > timeout:
                raise LinkError(f"no reply from the simulated board: {len(self.from_board)} of {n} bytes "
                                f"after {timeout} clocks")
            self._now += 256 * self.period
            self.sim.run_until(self._now)

    def read(self, n: int, timeout: float | None = None) -> bytes:
        """``n`` bytes from the board, or :class:`~ternpe.link.LinkError` after ``timeout`` clocks."""
        self._wait_for(n, timeout)
        out = bytes(self.from_board[:n])
        del self.from_board[:n]
        return out

    def read_some(self, timeout: float | None = None) -> bytes:
        """What the board has sent (at least one byte), or :class:`~ternpe.link.LinkError`."""
        self._wait_for(1, timeout)
        out = bytes(self.from_board)
        self.from_board.clear()
        return out

    def discard_input(self) -> None:
        self.from_board.clear()

    def quiet(self) -> None:
        """Wait until the bytes written are all on the line, then out the board's quiet period after a
        broken request (twice over); then discard input. (A non-ok reply may come before the end of
        a long request: a request sent at once would follow its tail and be dropped with it.)"""
        self.idle(max(0, self._line_busy_until - self.clocks) + quiet_clocks(self.core))
        self.from_board.clear()

    def idle(self, clocks: int) -> None:
        """Let the board run ``clocks`` cycles with nothing sent."""
        self._now += clocks * self.period
        self.sim.run_until(self._now)

    def close(self) -> None:
        pass


def fuzz_link(ex, t, b, *, frames: int, seed: int, progress=None) -> dict:
    """``frames`` random exchanges between the host runtime ``b`` and the simulated board ``t``
    running ``ex``: clean requests, and requests after noise, after a truncated request, after
    a whole request sent back to back, after a stray byte, with a bit flipped on the line, or
    followed by noise. With image lanes a request carries 1 to ``b.fmt.images`` images (the
    batch filled with blank ones). Returns counts: ``ok`` (the golden answer for every image),
    ``error`` (a clear LinkError), ``wrong`` (anything else: must be 0)."""
    rng = random.Random(seed)
    n, N = len(ex.golden["inputs"]), b.fmt.images

    def foreign_seq() -> int:
        # an injected request stands for an earlier request of this host (or noise): its SEQ is
        # never one the host is about to use (the next request and its retries). A request of
        # another host carrying the same SEQ could not be told apart by any protocol.
        return wrap_seq(b.seq + 64 + rng.randrange(128))

    def foreign_request() -> bytes:
        return encode_infer([ex.golden["inputs"][rng.randrange(n)] for _ in range(N)], seq=foreign_seq())
    counts = {"ok": 0, "error": 0, "wrong": 0}
    for _ in (progress or range)(frames):
        ks = [rng.randrange(n)]
        if N > 1:                   # (with one lane the draws are those of the single-image fuzz)
            ks += [rng.randrange(n) for _ in range(rng.randrange(N))]
        kind = rng.choice(["clean", "clean", "noise-before", "noise-after", "truncated-before", "flip",
                           "back-to-back", "stray"])
        if kind == "noise-before":
            t.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))))
        elif kind == "truncated-before":
            other = foreign_request()
            t.write(other[:rng.randrange(2, len(other))])
        elif kind == "back-to-back":
            t.write(foreign_request())
        elif kind == "stray":
            t.write(rng.choice([b"T", b"TP", b"t", b"tp"]))
        if kind == "flip":
            # a bit flipped on the line inside this request (its first attempt only)
            real_write = t.write

            def flipped(data):
                data = bytearray(data)
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                del t.write                    # back to the real one for the retries
                real_write(bytes(data))
            t.write = flipped
        try:
            rs = b.infer_batch([ex.golden["inputs"][k] for k in ks])
            good = len(rs) == len(ks) and all(
                r["logits"] == [int(v) for v in ex.golden["logits"][k]] and r["class"] == int(ex.golden["classes"][k])
                for k, r in zip(ks, rs))
            counts["ok" if good else "wrong"] += 1
            if not good:
                counts.setdefault("wrong_kinds", []).append(kind)
        except LinkError:
            counts["error"] += 1
        if kind == "noise-after":
            t.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))))
    return counts
