"""The PE, the requantizer and the sparse-tile weight buffer as Verilog, on Icarus and Verilator."""

import json

import pytest
from amaranth.back import verilog

from ternpe.contract import signed_bits
from ternpe.flow.cosim import run_verilog
from ternpe.hw.pe import TernaryPE
from ternpe.hw.requant import Requantizer
from ternpe.hw.plan import AcceleratorOptions, plan_accelerator
from ternpe.hw.weights import SparseTileWeightBuffer
from ternpe.image import load_export

SIMS = ["icarus", "verilator"]


def _run(block, name, testcase, cfg, sim, tmp_path):
    v = tmp_path / f"{name}.v"
    v.write_text(verilog.convert(block, name=name, emit_src=False))
    xml = run_verilog([v], name, simulator=sim, build_dir=tmp_path / sim, test_module="ternpe.gateware_tests.tb_blocks",
                      testcase=testcase, env_vars={"TERNPE_BLOCK": json.dumps(cfg)})
    text = xml.read_text()
    assert "<failure" not in text and 'name="' + testcase + '"' in text, (tmp_path / sim / "sim.log").read_text()[-3000:]


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("lanes,act_bits", [(16, 8), (5, 3)])
def test_pe(sim, lanes, act_bits, tmp_path):
    fan = 4 * lanes * ((1 << act_bits) - 1)
    acc_bits = signed_bits(-fan, fan)
    pe = TernaryPE(lanes=lanes, act_bits=act_bits, acc_bits=acc_bits)
    _run(pe, "pe", "pe", {"lanes": lanes, "act_bits": act_bits, "acc_bits": acc_bits, "n": 300, "seed": 1},
         sim, tmp_path)


@pytest.mark.parametrize("sim", SIMS)
def test_requantizer(sim, tmp_path):
    cfg = {"acc_bits": 18, "bias_bits": 26, "act_bits": 8, "n": 500, "seed": 2}
    _run(Requantizer(acc_bits=18, bias_bits=26, act_bits=8), "requant", "requantizer", cfg, sim, tmp_path)


@pytest.mark.parametrize("sim", SIMS)
def test_weight_buffer_reads_back_the_rom_image(sim, cosim_export, tmp_path):
    ex = cosim_export("2x8", "trained")
    wb = SparseTileWeightBuffer(plan_accelerator(ex, AcceleratorOptions(ram_bank=16)))     # several banks
    cfg = {"export": str(ex.path), "col_bits": wb.col_bits, "row_bits": wb.row_bits,
           "entries": sum(len(p.entries) for p in wb.programs), "first_flags": list(wb.programs[0].entries[0][2:5])}
    _run(wb, "weights", "weight_buffer", cfg, sim, tmp_path)
    assert load_export(ex.path).layers      # the export itself is intact after the run
