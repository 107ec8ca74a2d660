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


def test_a_netlist_with_two_drivers_on_a_net_is_synthesized_again_with_the_copies_merged(tmp_path):
    """Yosys 0.70 can leave a net driven by two flip-flops when modules are kept apart (seen on
    ResNet-20 at 16x16 with the requantizer ROM's slices kept): the build synthesizes again with the
    copies merged, and refuses a netlist that still has such a net (nextpnr would stop on it)."""
    import os
    import stat
    from ternpe.flow.build import _run_steps
    from ternpe.hw.accelerator import KEEP_LANE_COPIES
    fake = tmp_path / "fake-yosys"
    # a stand-in for Yosys that reports two drivers while the script keeps the copies apart
    fake.write_text("#!/bin/sh\nif grep -q '^setattr' top.ys; then\n"
                    "  echo 'Warning: multiple conflicting drivers for top.\\\\x [3]:' > top.rpt\n"
                    "else\n  echo 'Found and reported 0 problems.' > top.rpt\nfi\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "top.ys").write_text(f"read_rtlil top.il\n{KEEP_LANE_COPIES}\nsynth_ecp5 -top top\n")
    env = {**os.environ, "YOSYS": str(fake)}
    notes = []
    _run_steps([["yosys", "top.ys"]], board=_board("icebreaker", None), bdir=tmp_path, env=env, clock=30.0,
               fits={}, progress=False, log=notes.append)
    assert "copies merged" in (tmp_path / "top.ys").read_text()
    assert len(notes) == 1 and "1 nets with two drivers" in notes[0] and "synthesizing again" in notes[0]
    # still two drivers after the copies are merged: refused, with where to look
    fake.write_text("#!/bin/sh\necho 'Warning: multiple conflicting drivers for top.\\\\x [3]:' > top.rpt\n")
    with pytest.raises(BuildError, match="Yosys left 1 nets with two drivers"):
        _run_steps([["yosys", "top.ys"]], board=_board("icebreaker", None), bdir=tmp_path, env=env, clock=30.0,
                   fits={}, progress=False, log=notes.append)
