"""Boards: the accelerator with its host link, a PLL and LEDs, built to a bitstream with Yosys/nextpnr.

Every board runs :class:`~ternpe.hw.boardcore.BoardCore` (UART + host link + accelerator) in one
clock domain driven by a PLL. The clock of each board was chosen by measurement: the highest PLL
frequency at which nextpnr closes timing on the digits demo (see docs/demo.md, "Clock targets");
``ternpe build --clock`` overrides it and the build fails when timing does not close.
"""

from __future__ import annotations

import dataclasses
import importlib

from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.build import Attrs, Pins, Resource, Subsignal

from .boardcore import BoardCore
from .uart import divisor
from ternpe.devices import DEVICES

__all__ = ["BOARDS", "Board", "BoardTop", "ice40_pll", "ecp5_pll"]


@dataclasses.dataclass(frozen=True)
class Board:
    name: str
    platform: str            # amaranth_boards module:class
    family: str              # ice40 | ecp5
    clk_in_hz: float
    clock_hz: float          # the accelerator's clock (PLL output), chosen by measurement
    baud: int
    device: str              # a ternpe.devices.DEVICES key
    programmer: str          # iceprog | openFPGALoader
    uart_note: str = "the board's USB-serial bridge"
    uart_pins: tuple = ()    # (rx, tx) pins when the board has no UART resource
    bitstream_ext: str = "bin"
    bauds: tuple = ()        # slower rates its USB-serial side makes, fastest first: a clock that
                             # cannot make ``baud`` takes the first of these it can

    @property
    def resources(self) -> dict:
        """What the device has: lut, ff, bram, spram, dsp."""
        return DEVICES[self.device].as_dict()

    def platform_class(self):
        mod, cls = self.platform.split(":")
        return getattr(importlib.import_module(mod), cls)


BOARDS = {b.name: b for b in [
    # the iCEBreaker's FT2232H makes 12 Mbaud / n: 6 Mbaud is 5 clocks a bit at 30 MHz (12 would be 2.5)
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40", 12e6, 30e6, 6_000_000,
          "up5k", "iceprog", uart_note="the FT2232H's second channel",
          bauds=tuple(12_000_000 // n for n in (3, 4, 5, 6, 8, 10, 12))),
    Board("upduino", "amaranth_boards.upduino_v3:UpduinoV3Platform", "ice40", 12e6, 30e6, 3_000_000, "up5k",
          "iceprog", uart_note="a 3.3 V USB-serial adapter on header pins 2 (board RX) and 46 (board TX)",
          uart_pins=("2", "46")),
    Board("ulx3s", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5", 25e6, 100e6, 3_000_000,
          "ecp5-85f", "openFPGALoader", bitstream_ext="bit"),
    Board("orangecrab", "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "ecp5", 48e6, 125e6,
          3_000_000, "ecp5-25f", "openFPGALoader",
          uart_note="a 3.3 V USB-serial adapter on feather pins 0 (board RX, N17) and 1 (board TX, M18)",
          uart_pins=("N17", "M18"), bitstream_ext="bit"),
]}


def ice40_pll(f_in: float, f_out: float) -> dict:
    """SB_PLL40 divider settings (simple feedback) giving the highest frequency <= ``f_out``."""
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if f <= f_out * (1 + 1e-9) and (best is None or f > best["f_out"]):
                    filt = next(i for i, lim in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 1e12), 1) if f_pfd < lim)
                    best = {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filt, "f_out": f}
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {f_out / 1e6} MHz from {f_in / 1e6} MHz")
    return best


def ecp5_pll(f_in: float, f_out: float) -> dict:
    """EHXPLLL settings (CLKOP feedback) giving the frequency closest to ``f_out`` from below."""
    best = None
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            f = f_pfd * clkfb
            if f > f_out * (1 + 1e-9):
                break
            for clkop in range(1, 129):
                if 400e6 <= f * clkop <= 800e6:
                    if best is None or f > best["f_out"]:
                        best = {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop, "f_out": f}
                    break
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {f_out / 1e6} MHz from {f_in / 1e6} MHz")
    return best


class BoardTop(Elaboratable):
    """The bitstream's top: PLL -> ``sync``, UART pins, LEDs, :class:`BoardCore`.

    Parameters
    ----------
    plan : ternpe.hw.plan.AcceleratorPlan
        The accelerator, planned with the board's device options.
    board : Board
    clock_hz, baud : optional
        The accelerator clock (the PLL's nearest) and the UART rate; the board's own by default.
    """

    @staticmethod
    def clocking(board: Board, clock_hz: float | None = None, baud: int | None = None) -> tuple:
        """``(pll, clock_hz, baud, divisor)`` of ``board`` at ``clock_hz`` (the PLL's nearest) and
        ``baud``; :class:`ValueError` when no PLL setting or UART divisor makes them. Without
        ``baud``: the board's rate, or where the clock cannot make it, the fastest of
        ``board.bauds`` that it can."""
        pll = (ice40_pll if board.family == "ice40" else ecp5_pll)(board.clk_in_hz, clock_hz or board.clock_hz)
        f = pll["f_out"]
        if baud is None:
            rates = (board.baud,) + board.bauds
            for b in rates:
                try:
                    return pll, f, b, divisor(f, b)
                except ValueError:
                    continue
            raise ValueError(f"a {f / 1e6:.3f} MHz clock makes none of {board.name}'s UART rates "
                             f"({', '.join(f'{b / 1e6:g}' for b in rates)} Mbaud) within 2%")
        return pll, f, baud, divisor(f, baud)

    def __new__(cls, plan, board: Board, *, clock_hz: float | None = None, baud: int | None = None):
        cls.clocking(board, clock_hz, baud)      # before the top exists: a refused top is never left unused
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, plan, board: Board, *, clock_hz: float | None = None, baud: int | None = None):
        self.board = board
        self.pll, self.clock_hz, self.baud, self.divisor = self.clocking(board, clock_hz, baud)
        self.plan = plan
        self.core = BoardCore(plan, divisor=self.divisor, timeout_cycles=int(self.clock_hz * 0.05))

    def elaborate(self, platform):
        m = Module()
        b = self.board
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        if b.family == "ice40":
            p = self.pll
            params = dict(p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                          p_FILTER_RANGE=p["FILTER_RANGE"], i_RESETB=Const(1), i_BYPASS=Const(0),
                          o_LOCK=locked)
            if b.name == "upduino":       # no clock pin by default: the 48 MHz oscillator / 4 feeds the PLL
                hf = Signal()
                m.submodules.hfosc = Instance("SB_HFOSC", p_CLKHF_DIV="0b10", i_CLKHFEN=Const(1),
                                              i_CLKHFPU=Const(1), o_CLKHF=hf)
                m.submodules.pll = Instance("SB_PLL40_CORE", i_REFERENCECLK=hf, o_PLLOUTGLOBAL=cd.clk, **params)
            else:
                clk_pin = platform.request(platform.default_clk, dir="-")
                m.submodules.pll = Instance("SB_PLL40_PAD", i_PACKAGEPIN=clk_pin.io, o_PLLOUTGLOBAL=cd.clk,
                                            **params)
        else:
            p = self.pll
            clk_in = platform.request(platform.default_clk, dir="i").i
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=str(b.clk_in_hz / 1e6), a_FREQUENCY_PIN_CLKOP=str(self.clock_hz / 1e6),
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in, o_CLKOP=cd.clk, i_CLKFB=cd.clk,
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
                o_LOCK=locked)
        platform.add_clock_constraint(cd.clk, self.clock_hz)
        # hold the logic in reset until the PLL locks
        m.d.comb += cd.rst.eq(~locked)

        m.submodules.core = core = self.core
        if b.uart_pins:
            platform.add_resources([Resource("ternpe_uart", 0, Subsignal("rx", Pins(b.uart_pins[0], dir="i")),
                                             Subsignal("tx", Pins(b.uart_pins[1], dir="o")),
                                             Attrs(**({"IO_STANDARD": "SB_LVCMOS"} if b.family == "ice40"
                                                      else {"IO_TYPE": "LVCMOS33"})))])
            uart = platform.request("ternpe_uart", 0)
        else:
            uart = platform.request("uart", 0)
        m.d.comb += [core.rx.eq(uart.rx.i), uart.tx.o.eq(core.tx)]
        if b.name == "ulx3s":
            m.d.comb += platform.request("uart_tx_enable", 0).o.eq(1)

        # status: one LED lit while a request runs, another (or red) after an error
        if b.name in ("upduino", "orangecrab"):
            rgb = platform.request("rgb_led", 0)
            m.d.comb += [rgb.g.o.eq(core.busy), rgb.r.o.eq(core.error), rgb.b.o.eq(0)]
        else:
            m.d.comb += [platform.request("led", 0).o.eq(core.error), platform.request("led", 1).o.eq(core.busy)]
        return m
