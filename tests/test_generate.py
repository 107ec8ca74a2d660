"""ternpe generate (flow/generate.py): the plan's checks of a bad export, array or device, and
the Verilog it writes, linted by Verilator."""

import json
import shutil

import pytest

from ternpe.flow.generate import prepare
from ternpe.hw.plan import GenerateError, plan_accelerator
from ternpe.image import load_export, write_manifest


def test_generate_bad_input(quick_run, tmp_path):
    from ternpe.image import ExportError
    with pytest.raises(GenerateError, match=r"array 3x16: the hardware needs P and G powers of two"):
        prepare(quick_run["export"], pe="3x16")
    with pytest.raises(ExportError, match="--pe 2x8: G is fixed by training"):
        prepare(quick_run["export"], pe="2x8")
    with pytest.raises(GenerateError, match="--device must be one of"):
        prepare(quick_run["export"], device="xc7")
    with pytest.raises(GenerateError, match="--pe auto picks the array and image lanes that fit a device: give --device"):
        prepare(quick_run["export"], pe="auto")
    # a network too large for the memories: pretend the device is tiny
    import dataclasses
    from ternpe.devices import DEVICES
    DEVICES["tiny"] = dataclasses.replace(DEVICES["up5k"], name="tiny", bram=3, spram=0)
    try:
        with pytest.raises(GenerateError, match=r"(?s)does not fit tiny:.*bram: needs \d+, tiny has 3.*fix: "):
            prepare(quick_run["export"], device="tiny")
    finally:
        del DEVICES["tiny"]
    # a layer type the controller cannot run: a narrow (cin < G) layer that is not the first
    d = tmp_path / "bad"
    shutil.copytree(quick_run["export"], d)
    man = json.loads((d / "manifest.json").read_text())
    man["layers"][1]["relu"] = False
    write_manifest(d, man)
    ex = load_export(d, check_golden=False)
    with pytest.raises(GenerateError, match="layer conv2: only the last layer may be without ReLU"):
        plan_accelerator(ex)


def test_generated_verilog_passes_verilator_lint(quick_run, tmp_path):
    """`verilator --lint-only` with only the warning classes Amaranth's Verilog raises by
    construction switched off (flow/cosim.py: KEPT_VERILATOR_WARNINGS)."""
    import subprocess
    from ternpe.flow.cosim import KEPT_VERILATOR_WARNINGS
    from ternpe.flow.generate import generate
    from ternpe.flow.tools import require, tool_env
    env = tool_env()
    require("verilator", env=env)
    out = generate(quick_run["export"], tmp_path, log=lambda *a: None)
    cmd = ["verilator", "--lint-only", *(f"-Wno-{w}" for w in KEPT_VERILATOR_WARNINGS), str(out / "ternpe_top.v")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "%Warning" not in p.stderr, p.stderr[:3000]


@pytest.mark.parametrize("pe, sliced", [("1x16", False), ("4x16", False), ("8x16", True), ("16x16", True)])
def test_a_wide_requantizer_rom_is_split_by_channel(tmp_path, pe, sliced):
    """On ECP5 the requantizer constants' ROM (P channels a word) becomes P ROMs in logic, one per
    channel, each a module with its own address register, once its word is wider than
    ROM_LOGIC_BITS (at 16x16 in one ROM: 84.93 MHz on the ULX3S; in block RAM it did not route);
    narrower, one ROM, not asked to be in block RAM. Random networks (a residual block: the
    widest word)."""
    import re
    from ternpe.flow.generate import generate
    from ternpe.hw.plan import ROM_LOGIC_BITS
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "n", shape=(8, 8, 3), layers="c16,c16,c16r,fc10", pe=pe, seed=3)
    out = generate(ex, tmp_path / "rtl", device="ecp5-85f", log=lambda *a: None)
    v = (out / "ternpe_top.v").read_text()
    P = int(pe.split("x")[0])
    slices = re.findall(r"^module \\\S*\.rqrom_slice(\d+) ", v, re.M)
    decl = re.search(r'(\(\* ram_style = "block" \*\)\s*)?reg \[(\d+):0\] (\w*rqrom\w*)\s*\[', v)
    if sliced:
        assert sorted(map(int, slices)) == list(range(P)) and not decl
        bodies = re.findall(r"^module \\\S*\.rqrom_slice\d+ .*?^endmodule", v, re.M | re.S)
        assert all('ram_style = "logic"' in b and "addr_copy" in b for b in bodies)
    else:
        assert not slices and decl, "the requantizer ROM is not in the Verilog"
        assert int(decl.group(2)) + 1 <= ROM_LOGIC_BITS and not decl.group(1), decl.group(0)
