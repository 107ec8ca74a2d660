"""`ternpe verify`: the netlist unpacked from a real iCE40 bitstream (Yosys, nextpnr, icepack),
simulated with Icarus through the UART against the golden outputs. One small random network is
built once for the iCEBreaker (about a minute); the checks must pass on it and fail on a
corrupted bitstream and on the wrong export."""

import json
import shutil
import subprocess

import pytest

from ternpe.flow.tools import tool_env

pytestmark = [
    pytest.mark.skipif(shutil.which("icebox_vlog") is None,
                       reason="icebox_vlog (Debian fpga-icestorm) is not installed; make setup installs it"),
    # hw/boards.py requests its pins the Amaranth 0.4 way (platform.request without dir="-")
    pytest.mark.filterwarnings("ignore:Using platform.request without:DeprecationWarning"),
    pytest.mark.xdist_group("verify"),          # one worker builds the bitstream once (make test: --dist loadgroup)
]


@pytest.fixture(scope="session")      # built once per worker, however the tests interleave
def built(tmp_path_factory):
    from ternpe.flow.build import build
    from ternpe.model.randnet import random_export
    root = tmp_path_factory.mktemp("verify")
    random_export(root / "rnd", shape=(6, 6, 2), layers="c16,p,c16,fc5", density=0.6, samples=3, seed=11)
    report = build(root / "rnd", "icebreaker", out_dir=root / "bits", build_root=root / "build", progress=False,
                   verify_samples=1, log=lambda *a: None)
    return root, report


def test_build_verifies_its_bitstream(built):
    root, report = built
    assert report["verified"] == {"ok": True, "samples": 1, "mismatches": []}
    saved = json.loads((root / "bits" / "icebreaker" / "rnd.report.json").read_text())
    assert saved["verified"]["ok"] is True


def test_verify_cli_is_bit_exact_on_every_golden_input(built, tmp_path, capsys):
    from ternpe.cli import main
    root, report = built
    assert main(["verify", str(root / "bits" / "icebreaker" / "rnd.bin"), "--export", str(root / "rnd"),
                 "--work-dir", str(tmp_path / "v")]) == 0
    assert "bit-exact on 3 golden input(s)" in capsys.readouterr().out
    r = json.loads((tmp_path / "v" / "result.json").read_text())
    assert r["ok"] and r["samples"] == 3 and r["export_id_ok"] and not r["mismatches"]
    assert r["cycles"] == report["cycles_per_inference"]


def _corrupt(src, dst, work):
    """Zero every non-empty block RAM of the bitstream (the weights live there) and repack it."""
    env = tool_env()
    work.mkdir()
    shutil.copy(src, work / "a.bin")
    subprocess.run(["yowasp-iceunpack", "a.bin", "a.asc"], cwd=work, env=env, check=True, capture_output=True)
    lines = (work / "a.asc").read_text().splitlines()
    out, in_ram, changed = [], False, 0
    for ln in lines:
        if ln.startswith("."):
            in_ram = ln.startswith(".ram_data")
        elif in_ram and set(ln) - {"0"}:
            ln, changed = "0" * len(ln), changed + 1
        out.append(ln)
    assert changed, "no block RAM held data"
    (work / "b.asc").write_text("\n".join(out) + "\n")
    subprocess.run(["yowasp-icepack", "b.asc", "b.bin"], cwd=work, env=env, check=True, capture_output=True)
    shutil.copy(work / "b.bin", dst)


def test_verify_catches_a_corrupted_bitstream(built, tmp_path):
    from ternpe.flow.verify import verify_bitstream
    root, _ = built
    bad = tmp_path / "rnd.bin"
    _corrupt(root / "bits" / "icebreaker" / "rnd.bin", bad, tmp_path / "work")
    r = verify_bitstream(bad, root / "rnd", board_name="icebreaker", samples=1, work_dir=tmp_path / "v",
                         log=lambda *a: None)
    assert not r["ok"]
    assert any(m["what"] in ("logits", "class", "reply") for m in r["mismatches"]), r["mismatches"]


def test_verify_names_the_wrong_export(built, tmp_path):
    from ternpe.flow.verify import verify_bitstream
    from ternpe.model.randnet import random_export
    root, _ = built
    random_export(tmp_path / "other", shape=(6, 6, 2), layers="c16,p,c16,fc5", density=0.6, samples=3, seed=12)
    r = verify_bitstream(root / "bits" / "icebreaker" / "rnd.bin", tmp_path / "other", samples=1,
                         work_dir=tmp_path / "v", log=lambda *a: None)
    assert not r["ok"] and not r["export_id_ok"]
    assert r["mismatches"][0]["what"] == "export id"


def test_verify_refuses_what_it_cannot_check(built, tmp_path, capsys):
    from ternpe.cli import main
    root, _ = built
    fake = tmp_path / "x.bit"
    fake.write_bytes(b"\xff" * 64)
    cases = [
        (["--board", "ulx3s"], "no tool turns an ECP5 configuration back into a netlist"),
        ([], "no report (x.report.json) says which board"),
        (["--board", "de10"], "unknown board 'de10'"),
        (["--board", "icebreaker", "--samples", "0"], "--samples must be >= 1"),
        (["--board", "icebreaker"], "iceunpack failed, not an iCE40 bitstream?"),
    ]
    for extra, message in cases:
        assert main(["verify", str(fake), "--export", str(root / "rnd"), "--work-dir", str(tmp_path / "w"),
                     *extra]) == 1, extra
        err = capsys.readouterr().err.replace("\n  ", " ")
        assert message in err and "Traceback" not in err, (extra, err)


def test_the_group_mark_holds_under_loadgroup(request):
    """Under `make test` (pytest-xdist, --dist loadgroup) this module's tests share one worker and
    so one bitstream build: xdist marks the group in the node id (pytest 9 no longer lets it; the
    pin in pyproject.toml keeps pytest 8). Outside xdist there is nothing to check."""
    if not request.config.getoption("loadgroup", False):
        pytest.skip("not under pytest-xdist --dist loadgroup")
    assert request.node.nodeid.endswith("@verify"), request.node.nodeid
