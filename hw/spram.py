"""A single-port RAM: one address, a read or a write each cycle; read data the cycle after.

On the iCE40 UP5K it is one ``SB_SPRAM256KA`` (16 bits x 16k words, 256 kbit; not initialised
by the bitstream, so it holds only data written after configuration); elsewhere (simulation,
other devices) an Amaranth memory with the same timing. The read data holds its value while
writes happen, as the SPRAM's does.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SinglePortRAM", "SPRAM_WIDTH", "SPRAM_DEPTH", "fits_spram"]

SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384


def fits_spram(width: int, depth: int, lane_bits: int) -> bool:
    """One SB_SPRAM256KA holds a ``width`` x ``depth`` RAM written in ``lane_bits`` lanes: its
    write mask is per nibble, so lanes must be whole nibbles unless there is only one."""
    return width <= SPRAM_WIDTH and depth <= SPRAM_DEPTH and (lane_bits % 4 == 0 or width == lane_bits)


class SinglePortRAM(wiring.Component):
    """A single-port RAM with lane write enables: an iCE40 SPRAM, or a memory Yosys maps.

    Parameters
    ----------
    width, depth : int
    lane_bits : int
        Write granularity: ``wen`` has one bit per ``lane_bits`` of data.
    spram : bool
        Instantiate ``SB_SPRAM256KA`` (``width <= 16``, ``depth <= 16384``, ``lane_bits`` a
        multiple of 4 or ``width // lane_bits == 1``).

    Members
    -------
    addr : In(range(depth))
    wdata : In(width)
    wen : In(width // lane_bits)
        Lanes to write; all zero: a read.
    rdata : Out(width)
    """

    def __init__(self, *, width: int, depth: int, lane_bits: int, spram: bool):
        if spram and not fits_spram(width, depth, lane_bits):
            raise ValueError(f"a {width} x {depth} RAM with {lane_bits}-bit lanes does not map to one SB_SPRAM256KA")
        self.width, self.depth, self.lane_bits, self.spram = width, depth, lane_bits, spram
        super().__init__({"addr": In(range(depth)), "wdata": In(width), "wen": In(width // lane_bits),
                          "rdata": Out(width)})

    def elaborate(self, platform):
        m = Module()
        if not self.spram:
            m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
            rd, wr = mem.read_port(), mem.write_port(granularity=self.lane_bits)
            m.d.comb += [rd.addr.eq(self.addr), wr.addr.eq(self.addr), wr.data.eq(self.wdata), wr.en.eq(self.wen),
                         rd.en.eq(~self.wen.any()), self.rdata.eq(rd.data)]
            return m
        # nibble write mask from the lanes; unused nibbles never written
        nib = [0] * 4
        for lane in range(len(self.wen)):
            for b in range(lane * self.lane_bits, (lane + 1) * self.lane_bits):
                nib[b // 4] = lane
        used = -(-self.width // 4)
        mask = Signal(4)
        m.d.comb += mask.eq(sum((self.wen[nib[n]] << n) for n in range(used)) if used else 0)
        dout, din = Signal(16), Signal(16)
        m.d.comb += [din.eq(self.wdata), self.rdata.eq(dout[:self.width])]
        m.submodules.spram = Instance(
            "SB_SPRAM256KA", i_ADDRESS=self.addr, i_DATAIN=din, i_MASKWREN=mask, i_WREN=self.wen.any(),
            i_CHIPSELECT=Const(1), i_CLOCK=ClockSignal("sync"),
            i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1), o_DATAOUT=dout)
        return m
