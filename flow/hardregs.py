"""Registers moved into the ECP5's hard blocks: a pass over Yosys's JSON netlist, before nextpnr.

Yosys 0.70 maps every memory to a DP16KD with ``REGMODE NOREG`` and every multiply to a
combinational MULT18X18D, leaving the accelerator's pipeline registers beside them in the fabric.
A DP16KD's data leaves its latch 5.6-5.8 ns after the clock (speed grade 6), about 1 ns from its
own output register; a combinational multiplier between two fabric registers carries the routing
to the DSP row and back in one path. This pass gives each block the registers already there:

* **DP16KD output register** (``REGMODE_x = OUTREG``): a read port whose every used data bit feeds
  exactly one flip-flop on the port's clock, with no enable and no reset (the register captures
  every cycle, as the output register does with ``OCE = 1``). The flip-flops are removed; their
  outputs are driven by the block. The read costs the same two cycles as before.
* **MULT18X18D input and output registers** (``REG_INPUTA/B_*``, ``REG_OUTPUT_*``): operands whose
  every bit is a flip-flop (or a constant 0) on one clock, without an enable; a product whose
  every used bit feeds exactly one such flip-flop. The reset of each group goes to one of the
  block's four reset inputs (``RESETMODE`` the flip-flops'). An operand flip-flop that also feeds
  other logic stays for it, and the block takes a copy of its input. Both operands or neither:
  nextpnr times a block with one registered operand as if neither were.

The design computes the same values in the same cycles (the tests simulate the netlist before and
after the pass with the same cell models, bit-exact, cycles equal).
"""

from __future__ import annotations

import collections
import json
import pathlib

__all__ = ["absorb_registers", "absorb_file"]


def _sval(v) -> str:
    """A Yosys JSON parameter as a string (string parameters may carry a trailing space)."""
    return v.rstrip() if isinstance(v, str) else str(v)


def _int(v) -> int:
    """An integer parameter (Yosys JSON writes them as strings of bits)."""
    return int(v, 2) if isinstance(v, str) else int(v)



class _Module:
    """One module's cells with each net bit's driver and readers."""

    def __init__(self, module: dict):
        self.cells = module["cells"]
        self.driver = {}
        self.readers = collections.defaultdict(list)
        for name, cell in self.cells.items():
            for port, bits in cell["connections"].items():
                out = cell.get("port_directions", {}).get(port) == "output"
                for i, b in enumerate(bits):
                    if isinstance(b, int):
                        (self.driver.__setitem__(b, (name, port, i)) if out else
                         self.readers[b].append((name, port, i)))
        for port, info in module.get("ports", {}).items():
            for b in info["bits"]:
                if isinstance(b, int):
                    if info["direction"] == "input":
                        self.driver[b] = ("<port>", port, 0)
                    else:
                        self.readers[b].append(("<port>", port, 0))

    def plain_ff(self, name, clk) -> dict | None:
        """The flip-flop ``name`` if it is a TRELLIS_FF on ``clk`` with no enable and a reset to 0
        (or none): ``{"lsr": net or None, "async": bool}``; else None."""
        c = self.cells.get(name)
        if c is None or c["type"] != "TRELLIS_FF":
            return None
        p, con = c["parameters"], c["connections"]
        if con.get("CLK") != [clk] or _sval(p.get("CLKMUX", "CLK")) != "CLK":
            return None
        ce_mux = _sval(p.get("CEMUX", "1"))
        if not (ce_mux == "1" or (ce_mux == "CE" and con.get("CE") in (["1"], [1]))):
            return None
        if _sval(p.get("REGSET", "RESET")) != "RESET" or _sval(p.get("LSRMODE", "LSR")) != "LSR":
            return None
        if _sval(p.get("LSRMUX", "LSR")) != "LSR":
            return None
        lsr = con.get("LSR", ["0"])[0]
        if lsr == "0":
            return {"lsr": None, "async": False}
        if not isinstance(lsr, int):
            return None
        return {"lsr": lsr, "async": _sval(p.get("SRMODE", "LSR_OVER_CE")) == "ASYNC"}

    def single_ff_reader(self, bit, clk):
        """``(ff name, its description)`` when ``bit`` feeds exactly one plain flip-flop's DI."""
        r = self.readers.get(bit, [])
        if len(r) != 1 or r[0][1] != "DI":
            return None
        ff = self.plain_ff(r[0][0], clk)
        return (r[0][0], ff) if ff is not None else None

    def q(self, ff):
        return self.cells[ff]["connections"]["Q"][0]


def _absorb_bram(mod: _Module, name: str) -> tuple:
    """Output registers of DP16KD ``name``'s read ports; returns ``(ports, flip-flops)`` absorbed. A 36-bit
    read (Yosys's pseudo-dual-port mapping: port B reads ``{DOB, DOA}`` on ``CLKB``) is one port
    whose two halves take the output register together."""
    c = mod.cells[name]
    p, con = c["parameters"], c["connections"]
    wide = _int(p.get("DATA_WIDTH_B", 18)) == 36
    n = ports = 0
    for x in "B" if wide else "AB":
        if any(_sval(p.get(f"REGMODE_{y}", "NOREG")) != "NOREG" for y in ("AB" if wide else x)):
            continue
        if _sval(p.get(f"CLK{x}MUX", f"CLK{x}")) != f"CLK{x}":
            continue
        clk = con.get(f"CLK{x}", ["x"])[0]
        if not isinstance(clk, int) or con.get(f"OCE{x}", ["1"]) != ["1"]:
            continue
        pins = [f"DO{y}{i}" for y in ("AB" if wide else x) for i in range(18)]
        used = [(pin, b) for pin in pins for b in [con.get(pin, ["x"])[0]] if isinstance(b, int) and mod.readers.get(b)]
        found = [(pin, mod.single_ff_reader(b, clk)) for pin, b in used]
        if not found or any(f is None or f[1]["lsr"] is not None for _, f in found):
            continue
        for pin, (ff, _) in found:
            con[pin] = [mod.q(ff)]
            del mod.cells[ff]
        for y in ("AB" if wide else x):
            p[f"REGMODE_{y}"] = "OUTREG"
        if wide:
            con["OCEA"] = ["1"]          # one output clock enable (OCEB) in this mode; A's held high too
            c.setdefault("port_directions", {})["OCEA"] = "input"
        n += len(found)
        ports += 1
    return ports, n


def _operand(mod: _Module, c: dict, x: str, clk):
    """The flip-flops under operand ``x`` of a multiplier: ``[(pin, ff or None)]`` (None: a
    constant 0), or None when an operand bit is anything else."""
    out = []
    for i in range(18):
        b = c["connections"].get(f"{x}{i}", ["0"])[0]
        if b == "0":
            out.append((i, None))
            continue
        d = mod.driver.get(b) if isinstance(b, int) else None
        if d is None or d[1] != "Q" or mod.plain_ff(d[0], clk) is None:
            return None
        out.append((i, d[0]))
    return out


def _uniform(descs):
    """The common ``(lsr, async)`` of flip-flop descriptions, or None where they differ."""
    keys = {(d["lsr"], d["async"]) for d in descs}
    return keys.pop() if len(keys) == 1 else None


def _absorb_mult(mod: _Module, name: str) -> int:
    """Input and output registers of MULT18X18D ``name``; returns the registers absorbed."""
    c = mod.cells[name]
    p, con = c["parameters"], c["connections"]
    if any(_sval(v) != "NONE" for k, v in p.items() if k.startswith("REG_") and k.endswith("_CLK")):
        return 0
    if _sval(p.get("MULT_BYPASS", "DISABLED")) != "DISABLED":
        return 0
    # the clock: that of the product's flip-flops, else the operands'
    prods = [(i, b) for i in range(36) for b in [con.get(f"P{i}", ["x"])[0]] if isinstance(b, int) and mod.readers.get(b)]
    clocks = set()
    for _, b in prods:
        r = mod.readers[b]
        if len(r) == 1 and r[0][1] == "DI" and mod.cells[r[0][0]]["type"] == "TRELLIS_FF":
            clocks.add(mod.cells[r[0][0]]["connections"].get("CLK", ["x"])[0])
    for x in "AB":
        for i in range(18):
            d = mod.driver.get(con.get(f"{x}{i}", ["x"])[0])
            if d and d[1] == "Q" and mod.cells.get(d[0], {}).get("type") == "TRELLIS_FF":
                clocks.add(mod.cells[d[0]]["connections"].get("CLK", ["x"])[0])
    clocks.discard("x")
    if len(clocks) != 1:
        return 0
    clk = clocks.pop()
    if not isinstance(clk, int):
        return 0
    out = [(i, mod.single_ff_reader(b, clk)) for i, b in prods]
    out = out if out and all(f is not None for _, f in out) else None
    ops = [_operand(mod, c, x, clk) for x in "AB"]
    ins = None
    if all(o is not None for o in ops):
        ins = [_uniform([mod.plain_ff(ff, clk) for _, ff in o if ff is not None] or [{"lsr": None, "async": False}])
               for o in ops]
        ins = ins if all(k is not None for k in ins) else None
    groups = {}
    if ins is not None:
        groups["INPUTA"], groups["INPUTB"] = ins
    if out is not None:
        k = _uniform([f[1] for _, f in out])
        if k is not None:
            groups["OUTPUT"] = k
    modes = {a for lsr, a in groups.values() if lsr is not None}
    if not groups or len(modes) > 1:
        return 0
    nets = sorted({lsr for lsr, _ in groups.values() if lsr is not None})
    pins = nets + ([None] if any(lsr is None for lsr, _ in groups.values()) else [])
    if len(pins) > 4:
        return 0
    con["CLK0"], con["CE0"] = [clk], ["1"]
    for k in range(4):
        con[f"RST{k}"] = [pins[k]] if k < len(pins) and pins[k] is not None else ["0"]
    c.setdefault("port_directions", {}).update({k: "input" for k in ["CLK0", "CE0"] + [f"RST{k}" for k in range(4)]})
    p["RESETMODE"] = "ASYNC" if modes == {True} else "SYNC"
    p["GSR"] = "DISABLED"
    n = 0
    for grp, (lsr, _) in groups.items():
        p[f"REG_{grp}_CLK"], p[f"REG_{grp}_CE"], p[f"REG_{grp}_RST"] = "CLK0", "CE0", f"RST{pins.index(lsr)}"
    if "OUTPUT" in groups:
        for i, (ff, _) in out:
            con[f"P{i}"] = [mod.q(ff)]
            del mod.cells[ff]
            n += 1
    # an operand flip-flop may drive several pins (a sign extension) and other logic
    for ff in {ff for x in ("A", "B") if ins is not None for _, ff in ops["AB".index(x)] if ff is not None}:
        q, d = mod.q(ff), mod.cells[ff]["connections"]["DI"][0]
        for x in "AB":
            for i, f in ops["AB".index(x)]:
                if f == ff:
                    con[f"{x}{i}"] = [d]
                    n += 1
        mod.readers[q] = [r for r in mod.readers[q] if r[0] != name]
        if not mod.readers[q]:
            del mod.cells[ff]
    return n


def absorb_registers(netlist: dict) -> dict:
    """Move fabric registers into the DP16KDs and MULT18X18Ds of a Yosys JSON ``netlist`` (in
    place). Returns what moved: ``bram_ports``, ``bram_ffs``, ``mults``, ``mult_ffs``."""
    counts = collections.Counter()
    for module in netlist["modules"].values():
        mod = _Module(module)
        for name in [n for n, c in module["cells"].items() if c["type"] == "DP16KD"]:
            ports, k = _absorb_bram(mod, name)
            counts["bram_ports"] += ports
            counts["bram_ffs"] += k
        for name in [n for n, c in module["cells"].items() if c["type"] == "MULT18X18D"]:
            mod = _Module(module)          # the multipliers may share operand flip-flops
            k = _absorb_mult(mod, name)
            counts["mults"] += bool(k)
            counts["mult_ffs"] += k
    return {k: v for k, v in counts.items() if v}


def absorb_file(path) -> dict:
    """:func:`absorb_registers` on the JSON netlist at ``path``, written back in place."""
    path = pathlib.Path(path)
    netlist = json.loads(path.read_text())
    counts = absorb_registers(netlist)
    path.write_text(json.dumps(netlist))
    return counts
