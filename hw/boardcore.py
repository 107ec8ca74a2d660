"""The board's logic without the board: UART + host link + accelerator.

:class:`BoardCore` is what every board top instantiates around its pins, and what
:class:`ternpe.flow.simboard.SimTransport` simulates behind a bit-level UART model.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternpe.link import QUIET_BYTES, UART_DATA_BITS, UART_FRAME_BITS
from .hostlink import HostLink
from .uart import UARTRx, UARTTx

__all__ = ["BoardCore"]


class BoardCore(wiring.Component):
    """UART receiver and transmitter, the host link and the accelerator: a board without its pins.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        The accelerator.
    divisor : int
        Clocks per UART bit.
    timeout_cycles : int
        Longest gap between two bytes of a request.

    Members
    -------
    rx : In(1)
        The serial line from the host (idle high).
    tx : Out(1)
        The serial line to the host.
    busy, error : Out(1)
        The host link's, for LEDs.
    """

    def __init__(self, plan, *, divisor: int, timeout_cycles: int):
        self.divisor = divisor
        self.link = HostLink(plan, timeout_cycles=timeout_cycles,
                             quiet_cycles=QUIET_BYTES * UART_FRAME_BITS * divisor)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.submodules.link = link = self.link
        # the received byte is registered once more before the link: the receiver's logic stays by
        # its pin, and only this register's output crosses the die to the parser (on the ULX3S at
        # 4x16 x 5 lanes the receiver's valid, placed by the parser, made the critical path:
        # 9.3 ns of routing inside the receiver, 91.56 MHz on placer seed 1). Same semantics as
        # the receiver's own: a byte not taken before the next one is replaced by it.
        held, byte = Signal(name="rx_held"), Signal(UART_DATA_BITS, name="rx_byte")
        m.d.comb += [urx.data.ready.eq(1), link.rx.valid.eq(held), link.rx.payload.eq(byte)]
        with m.If(link.rx.ready):
            m.d.sync += held.eq(0)
        with m.If(urx.data.valid):
            m.d.sync += [held.eq(1), byte.eq(urx.data.payload)]
        wiring.connect(m, link.tx, utx.data)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.busy.eq(link.busy), self.error.eq(link.error)]
        return m
