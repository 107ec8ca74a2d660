"""The Yosys-synthesized iCE40 netlist (SB_LUT4, SB_CARRY, SB_DFF*, SB_RAM40_4K, SB_SPRAM256KA,
SB_MAC16 cells) simulated with Icarus on golden inputs: catches what RTL simulation cannot
(synthesis, memory/DSP inference, and the SPRAM input banks of the UP5K memory plan, which only
exist as primitives)."""

import pytest

from ternpe.flow.cosim import run_cosim, synthesize_netlist

pytestmark = pytest.mark.long          # synthesis and a netlist simulation: over a minute each


def test_ice40_netlist_is_bit_exact(cosim_export, tmp_path):
    ex = cosim_export("1x16", "trained")
    sources = synthesize_netlist(ex.path, tmp_path / "netlist", "ice40")
    text = sources[0].read_text()
    assert "SB_RAM40_4K" in text and "SB_LUT4" in text          # really a mapped netlist
    assert "SB_SPRAM256KA" in text                              # the input banks, as on the board
    res = run_cosim(ex.path, simulator="icarus", build_dir=tmp_path / "sim", samples=2, verilog=sources,
                    taps=False, netlist=True)
    assert all(r["ok"] for r in res["results"]) and len(res["results"]) == 2


def test_ecp5_netlist_with_hard_registers_is_bit_exact(tmp_path):
    """The ECP5 netlist as ``ternpe build`` places it: Yosys's synth_ecp5, then the fabric
    registers moved into the block RAMs' output registers and the multipliers' input and output
    registers (:mod:`ternpe.flow.hardregs`), simulated with Icarus on the cell models of
    :mod:`ternpe.flow.ecp5sim`: same logits and class, same cycles as the model. A 16x16 map puts
    the activation memory in DP16KDs (both ports moved), beside the 36-bit weight ROM."""
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "ex", shape=(16, 16, 1), layers="c16,p,c16,p,fc10", pe="1x16", samples=1, seed=5)
    sources = synthesize_netlist(ex.path, tmp_path / "netlist", "ecp5")
    text = sources[0].read_text()
    assert text.count('.REGMODE_A("OUTREG")') + text.count('.REGMODE_B("OUTREG")') >= 5
    assert text.count('.REG_INPUTA_CLK("CLK0")') == text.count('.REG_OUTPUT_CLK("CLK0")') == 2   # both multipliers
    res = run_cosim(ex.path, simulator="icarus", build_dir=tmp_path / "sim", samples=1, verilog=sources,
                    taps=False, netlist=True, device="ecp5-85f")
    assert [r["ok"] for r in res["results"]] == [True]
    assert res["cycles"] == [res["model_cycles"]]
