"""The FPGAs ternpe targets: what each device has. The one place for device data.

Plain Python (no Amaranth, no torch): the resource model, the board tops, ``generate --device``
and ``build --board`` all read it.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Device", "DEVICES", "BRAM_SHAPES"]

#: Block RAM aspect ratios (width, depth) of one block, per family.
BRAM_SHAPES = {"ice40": [(16, 256), (8, 512), (4, 1024), (2, 2048)],
               "ecp5": [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]}


@dataclasses.dataclass(frozen=True)
class Device:
    """One FPGA: logic cells (``lut``: iCE40 LCs / ECP5 LUT4s), flip-flops, block RAMs
    (4 kbit SB_RAM40_4K / 18 kbit DP16KD), SPRAMs (256 kbit, UP5K only), multipliers
    (SB_MAC16 16x16 / MULT18X18D 18x18)."""

    name: str
    family: str
    lut: int
    ff: int
    bram: int
    spram: int
    dsp: int

    def as_dict(self) -> dict:
        return {"lut": self.lut, "ff": self.ff, "bram": self.bram, "spram": self.spram, "dsp": self.dsp}


DEVICES = {d.name: d for d in [
    Device("up5k", "ice40", lut=5280, ff=5280, bram=30, spram=4, dsp=8),
    Device("ecp5-25f", "ecp5", lut=24288, ff=24288, bram=56, spram=0, dsp=28),
    Device("ecp5-85f", "ecp5", lut=83640, ff=83640, bram=208, spram=0, dsp=156),
]}
