"""8N1 UART receiver and transmitter, one clock domain, fixed divisor (clocks per bit).

The frame (a start bit, ``UART_DATA_BITS`` data bits least significant first, a stop bit:
``UART_FRAME_BITS`` bit times) is :mod:`ternpe.link`'s, which the host and the simulated boards
use too."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ternpe.link import UART_DATA_BITS, UART_FRAME_BITS

__all__ = ["UARTRx", "UARTTx", "divisor"]


def divisor(clk_hz: float, baud: int) -> int:
    """Clocks per bit; refuses a baud rate the clock cannot make within 2%."""
    d = round(clk_hz / baud)
    if d < 4 or abs(clk_hz / d - baud) / baud > 0.02:
        raise ValueError(f"a {clk_hz / 1e6:.2f} MHz clock cannot make {baud} baud within 2% (divisor {clk_hz / baud:.2f})")
    return d


class UARTRx(wiring.Component):
    """UART receiver: bytes from the serial line, each sampled in the middle of its bits.

    Parameters
    ----------
    divisor : int
        Clocks per bit.

    Members
    -------
    rx : In(1)
        The serial line (idle high). Synchronised here.
    data : Out(stream.Signature(UART_DATA_BITS))
        Received bytes; a byte not taken before the next one completes is dropped (``overrun``).
    frame_error : Out(1)
        Pulses when a stop bit is low (the byte is dropped).
    """

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(UART_DATA_BITS)), "frame_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sync0, rx = Signal(init=1), Signal(init=1)
        m.d.sync += [sync0.eq(self.rx), rx.eq(sync0)]
        timer = Signal(range(d + d // 2 + 1))
        # `timer == 0`, kept in a register of its own (set with every write of the timer): the
        # bit and shift enables come from a flip-flop, not from the counter's compare, so the
        # shift register may lie by the link without a long path through the counter
        zero = Signal(init=1)
        bits = Signal(range(UART_DATA_BITS + 1))
        shreg = Signal(UART_DATA_BITS)
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # to the middle of bit 0
                    m.d.sync += [timer.eq(d + d // 2 - 1), zero.eq(d + d // 2 - 1 == 0), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += [timer.eq(timer - 1), zero.eq(timer == 1)]
                with m.If(zero):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bits.eq(bits + 1), timer.eq(d - 1), zero.eq(d == 1)]
                    with m.If(bits == UART_DATA_BITS - 1):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += [timer.eq(timer - 1), zero.eq(timer == 1)]
                with m.If(zero):
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """UART transmitter: a byte at a time on the serial line, the next taken after its stop bit.

    Parameters
    ----------
    divisor : int
        Clocks per bit.

    Members
    -------
    data : In(stream.Signature(UART_DATA_BITS))
        Bytes to send.
    tx : Out(1)
        The serial line (idle high).
    """

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"data": In(stream.Signature(UART_DATA_BITS)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        shreg = Signal(UART_FRAME_BITS)
        bits = Signal(range(UART_FRAME_BITS + 1))
        # ready is `bits == 0 and timer == 0`, kept in a register of its own (its next value from
        # the counters' next values): the link's reply path starts at a flip-flop, not at the
        # counters' compare (on the ULX3S at 4x16 x 5 lanes that compare began seed 1's critical
        # path into the link's framer, 96.88 MHz)
        idle = Signal(init=1)
        m.d.comb += self.data.ready.eq(idle)
        with m.If(timer != 0):                  # the current bit (the stop bit too) lasts d cycles
            m.d.sync += [timer.eq(timer - 1), idle.eq((timer == 1) & (bits == 0))]
        with m.Elif(bits != 0):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1), bits.eq(bits - 1), timer.eq(d - 1), idle.eq(0)]
        with m.Elif(self.data.valid):
            m.d.sync += [shreg.eq(Cat(0, self.data.payload, 1)), bits.eq(UART_FRAME_BITS), idle.eq(0)]  # start, data, stop
        return m
