"""What `ternpe build` makes of nextpnr failing: the placer finding no legal placement near a
full device is named with the fill and what to do (the build has tried other seeds first)."""

import subprocess

import pytest

from ternpe.flow.build import BuildError, _board, _step_failed, _unplaced

# nextpnr-ice40's own words (a 2x16 MNIST build at 91% of the UP5K, placer seed 1)
UNPLACED = ("Warning: net 'core.link.fifo.clk' does not exist in design, ignoring clock constraint\n"
            "ERROR: Unable to find legal placement for all cells, design is probably at utilisation limit.\n"
            "1 warning, 1 error\n")
TIM = "Info: Device utilisation:\nInfo: \t         ICESTORM_LC:    4848/   5280    91%\n"


def test_no_legal_placement_is_named_with_the_fill(tmp_path):
    p = subprocess.CompletedProcess(["nextpnr-ice40"], 125, "", UNPLACED)
    assert _unplaced(p)
    (tmp_path / "top.tim").write_text(TIM)
    with pytest.raises(BuildError) as e:
        _step_failed(p, "nextpnr-ice40", _board("icebreaker", None), tmp_path, {"lut": 4750})
    msg = str(e.value)
    assert "no legal placement" in msg and "(4848 of 5280 logic cells)" in msg and "seeds 1-4" in msg
    assert "--pe" in msg and str(tmp_path) in msg


def test_other_nextpnr_failures_are_not_taken_for_placement(tmp_path):
    p = subprocess.CompletedProcess(["nextpnr-ice40"], 1, "", "ERROR: Failed to route net 'x'\n")
    assert not _unplaced(p)
    with pytest.raises(BuildError, match="nextpnr-ice40 failed \\(exit 1\\)"):
        _step_failed(p, "nextpnr-ice40", _board("icebreaker", None), tmp_path, {"lut": 4750})
