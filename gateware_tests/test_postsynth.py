"""The Yosys-synthesized iCE40 netlist (SB_LUT4, SB_CARRY, SB_DFF*, SB_RAM40_4K, SB_SPRAM256KA,
SB_MAC16 cells) simulated with Icarus on golden inputs: catches what RTL simulation cannot
(synthesis, memory/DSP inference, and the SPRAM input banks of the UP5K memory plan, which only
exist as primitives)."""

from ternpe.flow.cosim import run_cosim, synthesize_netlist


def test_ice40_netlist_is_bit_exact(cosim_export, tmp_path):
    ex = cosim_export("1x16", "trained")
    sources = synthesize_netlist(ex.path, tmp_path / "netlist", "ice40")
    text = sources[0].read_text()
    assert "SB_RAM40_4K" in text and "SB_LUT4" in text          # really a mapped netlist
    assert "SB_SPRAM256KA" in text                              # the input banks, as on the board
    res = run_cosim(ex.path, simulator="icarus", build_dir=tmp_path / "sim", samples=2, verilog=sources,
                    taps=False, netlist=True)
    assert all(r["ok"] for r in res["results"]) and len(res["results"]) == 2
