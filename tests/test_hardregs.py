"""The ECP5 hard-register pass (:mod:`ternpe.flow.hardregs`) on netlists written here: which
flip-flops move into a DP16KD or MULT18X18D and which stay, and how the moved ones are wired.
The pass on real netlists, simulated bit-exact, is in gateware_tests/test_postsynth.py."""

import numpy as np
import pytest

from ternpe.flow.hardregs import absorb_registers

CLK, CLK2, RST, RST2 = 2, 3, 4, 5


class Net:
    """A one-module Yosys JSON netlist built cell by cell."""

    def __init__(self):
        self.cells, self.next = {}, 100
        self.ports = {"clk": {"direction": "input", "bits": [CLK]}, "clk2": {"direction": "input", "bits": [CLK2]},
                      "rst": {"direction": "input", "bits": [RST]}, "rst2": {"direction": "input", "bits": [RST2]}}

    def bit(self):
        self.next += 1
        return self.next

    def ff(self, d, *, clk=CLK, lsr="0", ce=None, srmode="LSR_OVER_CE", regset="RESET"):
        q = self.bit()
        con = {"CLK": [clk], "LSR": [lsr], "DI": [d], "Q": [q]}
        params = {"GSR": "DISABLED", "CEMUX": "1 " if ce is None else "CE", "CLKMUX": "CLK", "LSRMUX": "LSR",
                  "REGSET": regset, "SRMODE": srmode}
        if ce is not None:
            con["CE"] = [ce]
        dirs = {"CLK": "input", "LSR": "input", "DI": "input", "CE": "input", "Q": "output"}
        self.cells[f"ff{q}"] = {"type": "TRELLIS_FF", "parameters": params, "connections": con,
                                "port_directions": {k: dirs[k] for k in con}}
        return q

    def out(self, *bits):
        """Bits read by logic outside the blocks (a LUT)."""
        self.cells[f"lut{self.bit()}"] = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input"},
                                         "connections": {"A": list(bits)}}

    def bram(self, width_a=18, width_b=18):
        con, dirs = {"CLKA": [CLK], "CLKB": [CLK], "OCEA": ["1"], "OCEB": ["1"]}, {}
        for x in "AB":
            for i in range(18):
                con[f"DO{x}{i}"] = [self.bit()]
                dirs[f"DO{x}{i}"] = "output"
        dirs.update({k: "input" for k in ("CLKA", "CLKB", "OCEA", "OCEB")})
        self.cells["ram"] = {"type": "DP16KD", "connections": con, "port_directions": dirs,
                             "parameters": {"DATA_WIDTH_A": f"{width_a:032b}", "DATA_WIDTH_B": f"{width_b:032b}",
                                            "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"}}
        return self.cells["ram"]

    def mult(self, name, a, b):
        con = {f"A{i}": [v] for i, v in enumerate(a)} | {f"B{i}": [v] for i, v in enumerate(b)}
        con |= {f"P{i}": [self.bit()] for i in range(36)}
        dirs = {k: ("output" if k.startswith("P") else "input") for k in con}
        self.cells[name] = {"type": "MULT18X18D", "parameters": {}, "connections": con, "port_directions": dirs}
        return self.cells[name]

    def netlist(self):
        return {"modules": {"top": {"attributes": {"top": "1"}, "ports": self.ports, "cells": self.cells,
                                    "netnames": {}}}}


def _ffs(net):
    return sum(c["type"] == "TRELLIS_FF" for c in net.cells.values())


def _bram_with(net, port, used, **ff):
    """A DP16KD whose port's first ``used`` data bits each feed one flip-flop (``ff`` options)."""
    ram = net.bram()
    qs = [net.ff(ram["connections"][f"DO{port}{i}"][0], **ff) for i in range(used)]
    net.out(*qs)
    return ram, qs


@pytest.mark.parametrize("port,used", [("A", 18), ("B", 9), ("A", 1)])
def test_plain_flip_flops_become_the_output_register(port, used):
    net = Net()
    ram, qs = _bram_with(net, port, used)
    moved = absorb_registers(net.netlist())
    assert moved == {"bram_ports": 1, "bram_ffs": used}
    assert ram["parameters"][f"REGMODE_{port}"] == "OUTREG"
    other = "B" if port == "A" else "A"
    assert ram["parameters"][f"REGMODE_{other}"] == "NOREG"
    assert [ram["connections"][f"DO{port}{i}"][0] for i in range(used)] == qs     # the block drives the readers
    assert _ffs(net) == 0


@pytest.mark.parametrize("ff", [{"lsr": RST}, {"ce": 7}, {"clk": CLK2}, {"regset": "SET"}],
                         ids=["reset", "enable", "other-clock", "set"])
def test_flip_flops_the_register_cannot_be_stay(ff):
    net = Net()
    ram, _ = _bram_with(net, "A", 8, **ff)
    assert absorb_registers(net.netlist()) == {}
    assert ram["parameters"]["REGMODE_A"] == "NOREG" and _ffs(net) == 8


def test_a_port_moves_only_whole():
    """One data bit also read by logic, or one bit feeding a register that cannot move: the port
    keeps every flip-flop (a port has one register mode)."""
    for spoil in ("fanout", "one-reset"):
        net = Net()
        ram = net.bram()
        do = [ram["connections"][f"DOA{i}"][0] for i in range(8)]
        qs = [net.ff(d, lsr=RST if (spoil == "one-reset" and i == 5) else "0") for i, d in enumerate(do)]
        net.out(*qs)
        if spoil == "fanout":
            net.out(do[3])
        assert absorb_registers(net.netlist()) == {}, spoil
        assert _ffs(net) == 8


def test_a_36_bit_read_moves_both_halves_on_port_b():
    net = Net()
    ram = net.bram(width_a=36, width_b=36)
    pins = [f"DO{x}{i}" for x in "AB" for i in range(18)]
    qs = [net.ff(ram["connections"][p][0]) for p in pins]
    net.out(*qs)
    assert absorb_registers(net.netlist()) == {"bram_ports": 1, "bram_ffs": 36}
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ["1"] and ram["port_directions"]["OCEA"] == "input"


def _operand(net, values=None, **ff):
    """18 operand bits: a flip-flop each, or where ``values`` says ``"0"``, a constant."""
    values = values or [None] * 18
    return [v if v is not None else net.ff(net.bit(), **ff) for v in values]


def test_multiplier_takes_its_input_and_output_registers():
    net = Net()
    a, b = _operand(net, lsr=RST), _operand(net, [None] * 10 + ["0"] * 8)
    m = net.mult("m", a, b)
    ps = [net.ff(m["connections"][f"P{i}"][0], lsr=RST2) for i in range(20)]      # 16 product bits unused
    net.out(*ps)
    a_d = {q: net.cells[f"ff{q}"]["connections"]["DI"][0] for q in a}
    moved = absorb_registers(net.netlist())
    assert moved == {"mults": 1, "mult_ffs": 18 + 10 + 20}
    p, con = m["parameters"], m["connections"]
    assert con["CLK0"] == [CLK] and con["CE0"] == ["1"] and p["RESETMODE"] == "SYNC"
    assert all(m["port_directions"][k] == "input" for k in ("CLK0", "CE0", "RST0", "RST3"))    # nextpnr needs them
    resets = {k: con[f"RST{k}"][0] for k in range(4)}
    assert resets[int(p["REG_INPUTA_RST"][-1])] == RST
    assert resets[int(p["REG_OUTPUT_RST"][-1])] == RST2
    assert resets[int(p["REG_INPUTB_RST"][-1])] == "0"                # B's flip-flops had no reset
    assert all(p[f"REG_{g}_CLK"] == "CLK0" for g in ("INPUTA", "INPUTB", "OUTPUT"))
    assert [con[f"A{i}"][0] for i in range(18)] == [a_d[q] for q in a]  # the block registers the same inputs
    assert [con[f"P{i}"][0] for i in range(20)] == ps
    assert _ffs(net) == 0


def test_shared_operand_flip_flops_stay_for_their_other_readers():
    """Two multipliers and a LUT read one operand register; a sign bit drives three pins."""
    net = Net()
    a = _operand(net, [None] * 16 + ["0", "0"])
    a[16] = a[17] = a[15]
    b1, b2 = _operand(net), _operand(net)
    m1, m2 = net.mult("m1", a, b1), net.mult("m2", a, b2)
    net.out(a[0])
    for m in (m1, m2):
        net.out(*(net.ff(m["connections"][f"P{i}"][0]) for i in range(30)))
    absorb_registers(net.netlist())
    for m in (m1, m2):
        assert m["parameters"]["REG_INPUTA_CLK"] == "CLK0" and m["parameters"]["REG_OUTPUT_CLK"] == "CLK0"
    kept = {c["connections"]["Q"][0] for c in net.cells.values() if c["type"] == "TRELLIS_FF"}
    assert kept == {a[0]}                     # read by the LUT: stays; every other flip-flop moved
    assert m1["connections"]["A16"] == m1["connections"]["A15"] == m1["connections"]["A17"]


@pytest.mark.parametrize("spoil", ["constant-one", "enable", "other-clock", "mixed-reset-modes", "mixed-resets"])
def test_multiplier_registers_that_cannot_move(spoil):
    net = Net()
    a = _operand(net, lsr=RST, srmode="ASYNC" if spoil == "mixed-reset-modes" else "LSR_OVER_CE")
    b = _operand(net, ce=9 if spoil == "enable" else None, lsr=RST)
    if spoil == "constant-one":
        a[17] = b[17] = "1"
    if spoil == "mixed-resets":
        extra = [net.bit() for _ in range(3)]
        for i, r in enumerate(extra):
            net.cells[f"ff{b[i]}"]["connections"]["LSR"] = [r]
    m = net.mult("m", a, b)
    ps = [net.ff(m["connections"][f"P{i}"][0], clk=CLK2 if spoil == "other-clock" else CLK) for i in range(36)]
    net.out(*ps)
    absorb_registers(net.netlist())
    p = m["parameters"]
    if spoil in ("constant-one", "enable", "mixed-resets"):       # the operands stay; the product moves
        assert "REG_INPUTA_CLK" not in p and "REG_INPUTB_CLK" not in p and p["REG_OUTPUT_CLK"] == "CLK0"
    else:                                       # nothing moves: two clocks, or two reset modes
        assert not any(k.startswith("REG_") for k in p)


def test_random_netlists_move_only_what_may_move():
    """Seeded random DP16KD ports: a port moves exactly when every used bit feeds one plain
    flip-flop on its clock."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        net = Net()
        ram = net.bram()
        used = int(rng.integers(1, 19))
        spoiled = False
        qs = []
        for i in range(used):
            kind = rng.choice(["plain"] * 12 + ["reset", "enable", "clock", "fanout"])
            spoiled |= kind != "plain"
            d = ram["connections"][f"DOB{i}"][0]
            qs.append(net.ff(d, lsr=RST if kind == "reset" else "0", ce=7 if kind == "enable" else None,
                             clk=CLK2 if kind == "clock" else CLK))
            if kind == "fanout":
                net.out(d)
        net.out(*qs)
        moved = absorb_registers(net.netlist())
        assert (ram["parameters"]["REGMODE_B"] == "OUTREG") == (not spoiled), trial
        assert _ffs(net) == (used if spoiled else 0)
        assert moved == ({} if spoiled else {"bram_ports": 1, "bram_ffs": used})


def test_nothing_to_do_is_nothing_done():
    net = Net()
    q = net.ff(net.bit())
    net.out(q)
    before = repr(net.cells)
    assert absorb_registers(net.netlist()) == {}
    assert repr(net.cells) == before
