"""ternpe replaces only what ternpe wrote (ternpe/outdir.py): a directory is replaced or reused
when it is missing, empty, marked as the same kind, or (written before the marker) holds only
files ternpe writes there; anything else is refused, and with --force moved aside whole."""

import hashlib
import json
import os
import pathlib

import pytest

from ternpe.cli import main
from ternpe.outdir import KINDS, MARKER, check_dir, claim, replace_dir

QUICK = ["--dataset", "synthetic", "--epochs-float", "1", "--epochs-ternary", "1", "--epochs-finetune", "1"]


def _tree(root: pathlib.Path) -> dict:
    """Every file under ``root`` (relative path) with its SHA-256; symlinks by their target."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _fill(d: pathlib.Path, files) -> pathlib.Path:
    for f in files:
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).write_text(f"{f}: keep me\n")
    return d


def _cli(capsys, *argv) -> tuple:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err.replace("\n  ", " ")


def _moved_aside(parent: pathlib.Path, name: str, before: dict, out: str) -> None:
    """``parent/name`` was moved aside intact to ``name.old-<date>-<time>``, and the output says so."""
    aside = [p for p in parent.iterdir() if p.name.startswith(f"{name}.old-")]
    assert len(aside) == 1, sorted(p.name for p in parent.iterdir())
    assert _tree(aside[0]) == before, "the old directory is moved aside as it was"
    assert f"aside to {aside[0]}" in out
    assert not [p for p in parent.iterdir() if ".partial-" in p.name or ".replaced-" in p.name]


# --- the three data-loss cases of issue 22, with --force --------------------------------------

def test_train_force_moves_a_thesis_aside_and_writes_the_run(capsys, tmp_path):
    d = _fill(tmp_path / "thesis", ["model.pt", "metrics.json", "src/train.py", "thesis.tex"])
    before = _tree(d)
    code, _, err = _cli(capsys, "train", *QUICK, "--out", d)
    assert code == 1 and "not a ternpe run: it holds src/, thesis.tex" in err and "--force" in err
    assert _tree(d) == before and sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]
    code, out, err = _cli(capsys, "train", *QUICK, "--out", d, "--force")
    assert code == 0, err
    _moved_aside(tmp_path, "thesis", before, out)
    assert json.loads((d / MARKER).read_text()) == {"kind": "run", "version": 1}
    assert not (d / "thesis.tex").exists() and (d / "model.pt").stat().st_size > 1000


def test_export_force_moves_an_extension_aside(capsys, quick_run, tmp_path):
    d = _fill(tmp_path / "ext", ["manifest.json", "background.js", "popup.html"])
    before = _tree(d)
    code, _, err = _cli(capsys, "export", quick_run["run"], "--out", d)
    assert code == 1 and "not an export: it holds background.js, popup.html" in err
    assert _tree(d) == before
    code, out, err = _cli(capsys, "export", quick_run["run"], "--out", d, "--force")
    assert code == 0, err
    _moved_aside(tmp_path, "ext", before, out)
    assert json.loads((d / MARKER).read_text())["kind"] == "export"


def test_verify_work_dir_is_refused_and_force_moves_nothing_before_the_bitstream_unpacks(capsys, quick_run,
                                                                                         tmp_path):
    d = _fill(tmp_path / "nb", ["result.json", "notebook.ipynb", "data/x.csv"])
    (tmp_path / "x.bin").write_bytes(b"\0" * 64)
    before = _tree(tmp_path)
    code, _, err = _cli(capsys, "verify", tmp_path / "x.bin", "--export", quick_run["export"], "--board", "upduino",
                        "--work-dir", d)
    assert code == 1 and f"--work-dir {d} is not a verify run: it holds data/, notebook.ipynb" in err
    code, _, err = _cli(capsys, "verify", tmp_path / "x.bin", "--export", quick_run["export"], "--board", "upduino",
                        "--work-dir", d, "--force")
    assert code == 1 and "not an iCE40 bitstream" in err
    assert _tree(tmp_path) == before, "a verify that fails before it writes moves nothing aside"


def test_claim_with_force_moves_a_verify_work_dir_aside(tmp_path):
    d = _fill(tmp_path / "nb", ["result.json", "notebook.ipynb", "data/x.csv"])
    before, said = _tree(d), []
    with pytest.raises(ValueError, match="not a verify run"):
        claim(d, "verify", fresh=True, option="--work-dir")
    assert _tree(d) == before
    assert claim(d, "verify", fresh=True, force=True, log=said.append) == d
    _moved_aside(tmp_path, "nb", before, said[0])
    assert sorted(os.listdir(d)) == [MARKER]


# --- what is ternpe's ---------------------------------------------------------------------------

LEGACY = {"run": ["model.pt", "config.json", "history.json", "metrics.json", "training.png", "tilemaps/conv1.png"],
          "export": ["manifest.json", "golden.npz", "conv1.weights.hex"],
          "rtl": ["ternpe_top.v", "ternpe_top.json"],
          "sim": ["network.json", "rtl/ternpe_top.v", "icarus/sim_build/sim.vvp", "verilator/Vtop.mk"],
          "build": ["build_top.sh", "top.asc", "top.seed1.tim", "verify/result.json"],
          "verify": ["design.asc", "netlist.v", "tb.v", "replies.txt", "result.json"]}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_directory_written_before_the_marker_is_taken_only_with_ternpes_files(kind, tmp_path):
    assert set(LEGACY) == set(KINDS)
    d = _fill(tmp_path / kind, LEGACY[kind])
    assert check_dir(d, kind) == d
    (d / "tilemaps").mkdir(exist_ok=True)          # a folder of a run's name, elsewhere someone else's
    (d / "tilemaps" / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=r"tilemaps/notes.txt, which ternpe did not write" if kind == "run"
                       else r"it holds tilemaps/, which ternpe did not write"):
        check_dir(d, kind)
    with pytest.raises(ValueError, match="not "):
        claim(d, kind)
    assert _tree(tmp_path) == before


def test_the_marker_decides_and_an_empty_directory_is_taken(tmp_path):
    run = claim(tmp_path / "r", "run")
    (run / "anything.txt").write_text("kept only as part of the run")
    assert check_dir(run, "run") == run
    with pytest.raises(ValueError, match="is not an export: it is a ternpe run"):
        check_dir(run, "export")
    (run / MARKER).write_text("not json")
    with pytest.raises(ValueError, match=f"its {MARKER} file is not a ternpe marker"):
        check_dir(run, "run")
    (tmp_path / "e").mkdir()
    assert check_dir(tmp_path / "e", "export") == tmp_path / "e"


def test_a_file_is_refused_and_moved_aside_with_force(tmp_path):
    f = tmp_path / "out"
    f.write_text("a file")
    with pytest.raises(ValueError, match="is a file; give a directory for an export, or --force"):
        check_dir(f, "export")
    said = []
    replace_dir(check_dir(f, "export", force=True), lambda t: (t / "manifest.json").write_text("{}"), "export",
                log=said.append)
    assert (f / "manifest.json").is_file()
    aside = next(tmp_path.glob("out.old-*"))
    assert aside.read_text() == "a file" and str(aside) in said[0]


def test_a_directory_changed_after_the_check_is_moved_aside_not_deleted(tmp_path):
    d = claim(tmp_path / "r", "run")
    assert check_dir(d, "run") == d

    def fill(tmp):                                   # while it trains, someone puts a file there
        (d / "notes.txt").write_text("mine")
        (tmp / "model.pt").write_text("new")
    said = []
    replace_dir(d, fill, "run", log=said.append)
    assert (d / "model.pt").read_text() == "new" and not (d / "notes.txt").exists()
    assert (next(tmp_path.glob("r.old-*")) / "notes.txt").read_text() == "mine" and said


# --- symlinks -----------------------------------------------------------------------------------

def test_exporting_through_a_symlink_writes_its_target_and_leaves_nothing_behind(capsys, quick_run, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    for _ in range(2):                               # new, then replacing the export there
        code, _, err = _cli(capsys, "export", quick_run["run"], "--out", tmp_path / "link")
        assert code == 0, err
        assert (tmp_path / "link").is_symlink() and os.readlink(tmp_path / "link") == "real"
        assert (tmp_path / "real" / "manifest.json").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_a_symlink_loop_is_a_message(capsys, quick_run, tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    before = _tree(tmp_path)
    code, _, err = _cli(capsys, "export", quick_run["run"], "--out", tmp_path / "loop")
    assert code == 1 and "cannot follow the symlink" in err and "Traceback" not in err
    assert _tree(tmp_path) == before


def test_a_fresh_work_dir_deletes_only_ternpes_files(tmp_path):
    d = claim(tmp_path / "v", "verify", fresh=True)
    _fill(d, ["tb.v", "result.json"])
    assert sorted(os.listdir(claim(d, "verify", fresh=True))) == [MARKER], "an earlier verify run is started afresh"
    _fill(d, ["result.json", "notebook.ipynb"])        # marked, but holding someone's notebook too
    said = []
    claim(d, "verify", fresh=True, log=said.append)
    aside = next(tmp_path.glob("v.old-*"))
    assert (aside / "notebook.ipynb").is_file() and str(aside) in said[0]
    assert sorted(os.listdir(d)) == [MARKER]


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from ternpe import outdir
    f = tmp_path / "ternpe_top.v"
    f.write_text("module old; endmodule\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(outdir.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        outdir.write_whole(f, "module new_but_cut")
    assert f.read_text() == "module old; endmodule\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ternpe_top.v"]      # no part file left
    monkeypatch.undo()
    outdir.write_whole(f, "module new; endmodule\n")
    assert f.read_text() == "module new; endmodule\n" and sorted(p.name for p in tmp_path.iterdir()) == ["ternpe_top.v"]
