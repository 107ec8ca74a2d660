"""The board's logic without the board: UART + host link + accelerator.

:class:`BoardCore` is what every board top instantiates around its pins, and what
:class:`ternpe.flow.simboard.SimTransport` simulates behind a bit-level UART model.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ternpe.link import QUIET_BYTES, UART_FRAME_BITS
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
        wiring.connect(m, urx.data, link.rx)
        wiring.connect(m, link.tx, utx.data)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.busy.eq(link.busy), self.error.eq(link.error)]
        return m
