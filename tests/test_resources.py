"""The resource model's choices (flow/resources.py): the array a board gets, before training
(`ternpe train --board`) and for a trained export (`--pe auto`)."""

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
    # what stopped it: the next image lane lacks a named resource, or the input stream is the bound
    assert limit.startswith(f"{geometry} with {lanes + 1} image lanes would need ") or limit.startswith("the input")
    if device == "up5k":
        assert (geometry.P, lanes) == (1, 1)           # neither a second PE nor a second lane fits the UP5K
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
