"""Every subcommand, fed bad input: a clear message (naming the file or option, and the fix),
the right exit code (1 for a refused input, 2 for argparse's own refusal), no traceback, and
nothing that existed before is gone or changed."""

import gzip
import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from ternpe.cli import main
from ternpe.image import write_manifest

QUICK = ["--dataset", "synthetic", "--epochs-float", "1", "--epochs-ternary", "1", "--epochs-finetune", "1"]


@pytest.fixture
def place(quick_run, tmp_path):
    """A directory of things that must survive every case: a file, a folder of someone else's
    files, a run, an export, a corrupt export, an edited export, a bitstream without a report."""
    d = tmp_path
    (d / "afile").write_text("keep me\n")
    (d / "photos").mkdir()
    (d / "photos" / "cat.jpg").write_text("meow")
    (d / "empty").mkdir()
    shutil.copytree(quick_run["run"], d / "run")
    shutil.copytree(quick_run["export"], d / "export")
    shutil.copytree(quick_run["export"], d / "corrupt")
    w = next((d / "corrupt").glob("*.weights.hex"))
    w.write_text(w.read_text().replace("1", "3", 1))
    shutil.copytree(quick_run["export"], d / "edited")
    man = json.loads((d / "edited" / "manifest.json").read_text())
    man["layers"][0]["acc_bits"] += 3
    (d / "edited" / "manifest.json").write_text(json.dumps(man))
    (d / "x.bin").write_bytes(b"\x00" * 64)
    for name, report in {"slow": {"board": "icebreaker", "timing_met": False, "fmax_mhz": 20.5, "clock_mhz": 30.0},
                         "listed": []}.items():       # a bitstream that failed timing; a report that is no report
        (d / f"{name}.bin").write_bytes(b"\x00" * 64)
        (d / f"{name}.report.json").write_text(json.dumps(report))
    (d / "notes.txt").write_text("not an image")
    from PIL import Image
    alpha = np.zeros((8, 8, 4), np.uint8)
    alpha[2:6, 3:5, 3] = 255                      # a digit drawn only in the alpha channel
    Image.fromarray(alpha).save(d / "alpha.png")
    _someone_elses(d)
    _bad_data(d)
    (d / "loop").symlink_to("loop")
    (d / "readonly").mkdir()
    (d / "readonly").chmod(0o555)           # read-only for anyone but root (root: /proc stands in)
    _bad_exports(d, quick_run)
    return d


def _idx_bytes(arr) -> bytes:
    arr = np.asarray(arr)
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape) + \
        arr.astype(np.uint8).tobytes()


def _bad_data(d: pathlib.Path) -> None:
    """MNIST directories that are wrong in one way each: a corrupt .gz, a label of 200, fewer
    labels than images, the images and labels files swapped."""
    rng = np.random.default_rng(0)
    good = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)), "train-labels-idx1-ubyte": np.arange(20) % 10,
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)), "t10k-labels-idx1-ubyte": np.arange(5) % 10}
    bad = {"gz": {}, "label200": {"train-labels-idx1-ubyte": np.r_[np.arange(19) % 10, 200]},
           "short": {"t10k-labels-idx1-ubyte": np.arange(3)},
           "swapped": {"train-images-idx3-ubyte": good["train-labels-idx1-ubyte"],
                       "train-labels-idx1-ubyte": good["train-images-idx3-ubyte"]}}
    for name, changed in bad.items():
        (d / "data" / name).mkdir(parents=True)
        for f, arr in {**good, **changed}.items():
            (d / "data" / name / f).write_bytes(_idx_bytes(arr))
    gz = d / "data" / "gz" / "train-images-idx3-ubyte"
    raw = gzip.compress(gz.read_bytes())
    gz.unlink()
    gz.with_suffix(".gz").write_bytes(raw[:10] + bytes(b ^ 0x55 for b in raw[10:200]) + raw[200:])   # zlib.error


def _bad_exports(d: pathlib.Path, quick_run) -> None:
    """A run whose model.pt is cut short; an export whose golden.npz is cut in half with its
    checksum recomputed; exports whose manifests name a file outside them, or one outside the
    checksum list (both sealed with the manifest's own digest)."""
    shutil.copytree(quick_run["run"], d / "cut_run")
    pt = d / "cut_run" / "model.pt"
    pt.write_bytes(pt.read_bytes()[:pt.stat().st_size // 2])
    for name in ("half", "passwd", "unlisted"):
        shutil.copytree(quick_run["export"], d / name)
    man = json.loads((d / "half" / "manifest.json").read_text())
    g = d / "half" / "golden.npz"
    g.write_bytes(g.read_bytes()[:g.stat().st_size // 2])
    man["files"]["golden.npz"] = hashlib.sha256(g.read_bytes()).hexdigest()
    write_manifest(d / "half", man)
    man = json.loads((d / "passwd" / "manifest.json").read_text())
    man["files"]["/etc/passwd"] = hashlib.sha256(pathlib.Path("/etc/passwd").read_bytes()).hexdigest()
    write_manifest(d / "passwd", man)
    man = json.loads((d / "unlisted" / "manifest.json").read_text())
    layer_files = man["layers"][0]["files"]
    del man["files"][layer_files["bias"]]
    write_manifest(d / "unlisted", man)


def _someone_elses(d: pathlib.Path) -> None:
    """Directories that hold a file ternpe writes beside files it does not (issue 22's data-loss
    cases), and a folder in the place of a board build directory."""
    for name, files in {"thesis": ("model.pt", "metrics.json", "src/train.py", "thesis.tex"),
                        "extension": ("manifest.json", "background.js", "popup.html"),
                        "notebook": ("result.json", "notebook.ipynb", "data/x.csv"),
                        "boards/icebreaker/export": ("top.bin", "notes.md")}.items():
        for f in files:
            (d / name / f).parent.mkdir(parents=True, exist_ok=True)
            (d / name / f).write_text(f"{name}/{f}: keep me\n")


def _snapshot(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


CASES = [
    # train
    (["train", *QUICK, "--pe", "16", "--out", "{d}/r"], 1, "--pe must be PxG"),
    (["train", *QUICK, "--pe", "1x0", "--out", "{d}/r"], 1, "between 1 and 1024"),
    (["train", *QUICK, "--pe", "1x12", "--out", "{d}/r"], 1, "the hardware needs P and G powers of two with P <= G"),
    (["train", *QUICK, "--pe", "3x16", "--out", "{d}/r"], 1, "P <= G; --pe 2x16 suits this network"),
    (["train", *QUICK, "--pe", "1x1000", "--out", "{d}/r"], 1, "--pe 1x16 suits this network"),
    (["train", *QUICK, "--pe", "32x16", "--out", "{d}/r"], 1, "array 32x16: the hardware needs"),
    (["train", *QUICK, "--pe", "1x32", "--out", "{d}/r"], 1, "window mode runs only on the first layer"),
    (["train", *QUICK, "--pe", "32x32", "--out", "{d}/r"], 1, "16 output channels is not a multiple of P=32"),
    (["train", *QUICK, "--arch", "c24,p,c24,fc4", "--out", "{d}/r"], 1, "--pe 1x8 suits this network"),
    (["train", *QUICK, "--data-dir", "{d}/empty", "--out", "{d}/r"], 1, "--dataset synthetic is built in"),
    (["train", "--dataset", "digits", "--data-dir", "{d}/empty", "--out", "{d}/r"], 1, "leave --data-dir out"),
    (["train", *QUICK, "--lam-max", "3", "--out", "{d}/r"], 1, "give --target-speedup too"),
    (["train", *QUICK, "--out", "/proc/ternpe-run"], 1, "--out /proc/ternpe-run: cannot write in /proc"),
    (["train", *QUICK, "--out", "/sys/ternpe-run"], 1, "--out /sys/ternpe-run: cannot write in /sys"),
    (["train", *QUICK, "--tau", "median", "--out", "{d}/r"], 1, "--tau must be one of"),
    (["train", *QUICK, "--arch", "c16,p,p,fc4", "--out", "{d}/r"], 1, "must follow a conv without one"),
    (["train", *QUICK, "--arch", "c16,p,c16,fc7", "--out", "{d}/r"], 1, "the data set has 4 classes"),
    (["train", *QUICK, "--arch", "c16,fc8,c16", "--out", "{d}/r"], 1, "cannot follow an fc layer"),
    (["train", *QUICK, "--arch", "c16,p,c16,p,c16,p,c16,p,fc4", "--out", "{d}/r"], 1, "needs an even map"),
    (["train", *QUICK, "--arch", "c16,fc4", "--width", "8", "--out", "{d}/r"], 1, "--width applies to"),
    (["train", *QUICK, "--target-speedup", "2", "--method", "ternary", "--out", "{d}/r"], 1,
     "needs a pruning method"),
    (["train", *QUICK, "--method", "magic", "--out", "{d}/r"], 1, "--method must be one of"),
    (["train", *QUICK, "--arch", "vgg", "--out", "{d}/r"], 1, "--arch must be one of"),
    (["train", *QUICK, "--arch", "c16,q", "--out", "{d}/r"], 1, "'q' is not cN[kK][sS][r], p or fcN"),
    (["train", *QUICK, "--arch", "c20,c16,fc4", "--out", "{d}/r"], 1, "multiple of G"),
    (["train", *QUICK, "--dataset", "imagenet", "--out", "{d}/r"], 1, "--dataset must be one of"),
    (["train", *QUICK, "--lam", "-1", "--out", "{d}/r"], 1, "--lam must be"),
    (["train", *QUICK, "--r", "0", "--out", "{d}/r"], 1, "--r must be"),
    (["train", *QUICK, "--width", "0", "--out", "{d}/r"], 1, "--width must be"),
    (["train", *QUICK, "--target-speedup", "0.5", "--out", "{d}/r"], 1, "--target-speedup must be"),
    (["train", *QUICK, "--cost", "area", "--out", "{d}/r"], 2, "invalid choice: 'area'"),
    (["train", *QUICK, "--epochs-ternary", "x", "--out", "{d}/r"], 2, "invalid int value"),
    (["train", "--dataset", "synthetic", "--epochs-float", "0", "--epochs-ternary", "0", "--epochs-finetune", "0",
      "--out", "{d}/r"], 1, "nothing would be trained"),
    (["train", *QUICK, "--out", "{d}/afile"], 1, "is a file"),
    (["train", *QUICK, "--out", "{d}/afile/run"], 1, "is a file, not a directory"),
    (["train", *QUICK, "--out", "{d}/photos"], 1, "not a ternpe run"),
    (["train", *QUICK, "--out", "{d}/thesis"], 1, "it holds src/, thesis.tex, which ternpe did not write"),
    (["train", *QUICK, "--out", "{d}/thesis"], 1, "or --force to move it aside"),
    (["train", *QUICK, "--out", "{d}/export"], 1, "not a ternpe run: it is an export"),
    (["train", "--dataset", "fashion-mnist", "--out", "{d}/r"], 1, "--data-dir"),
    (["train", "--dataset", "mnist", "--data-dir", "{d}/empty", "--out", "{d}/r"], 1, "train-images-idx3-ubyte"),
    (["train", "--dataset", "mnist", "--data-dir", "{d}/data/gz", "--out", "{d}/r"], 1,
     "idx3-ubyte.gz cannot be read (error: Error -3 while decompressing data"),
    (["train", "--dataset", "mnist", "--data-dir", "{d}/data/label200", "--out", "{d}/r"], 1,
     "train-labels-idx1-ubyte holds label 200; the classes are 0..9"),
    (["train", "--dataset", "mnist", "--data-dir", "{d}/data/short", "--out", "{d}/r"], 1,
     "t10k-labels-idx1-ubyte holds 3 labels for 5 images"),
    (["train", "--dataset", "mnist", "--data-dir", "{d}/data/swapped", "--out", "{d}/r"], 1,
     "are the files swapped or misnamed?"),
    # export
    (["export", "{d}/cut_run", "--out", "{d}/e2"], 1, "cut_run/model.pt cannot be read as a ternpe run's model"),
    (["export", "{d}/run", "--out", "."], 1, "is the current directory or holds it"),
    (["export", "{d}/nothing", "--out", "{d}/e2"], 1, "model.pt is missing"),
    (["export", "{d}/run", "--out", "{d}/afile"], 1, "is a file"),
    (["export", "{d}/run", "--out", "{d}/photos"], 1, "not an export"),
    (["export", "{d}/run", "--out", "{d}/extension"], 1, "it holds background.js, popup.html"),
    (["export", "{d}/run", "--out", "{d}/run"], 1, "not an export: it is a ternpe run"),
    (["export", "{d}/run", "--out", "{d}/e2", "--samples", "0"], 1, "--samples must be >= 1"),
    (["export", "{d}/run"], 2, "the following arguments are required: --out"),
    # generate
    (["generate", "{d}/nothing", "--out", "{d}/g"], 1, "manifest.json is missing"),
    (["generate", "{d}/export", "--out", "{d}/afile"], 1, "is a file"),
    (["generate", "{d}/export", "--out", "{d}/g", "--pe", "3x16"], 1, "powers of two"),
    (["generate", "{d}/export", "--out", "{d}/photos"], 1, "not a directory of generated Verilog: it holds cat.jpg"),
    (["generate", "{d}/export", "--out", "{d}/export"], 1, "not a directory of generated Verilog: it is an export"),
    (["generate", "{d}/export", "--out", "{d}/g", "--pe", "1x8"], 1, "G is fixed by training"),
    (["generate", "{d}/export", "--out", "{d}/g", "--device", "nosuch"], 1, "--device must be one of"),
    (["generate", "{d}/corrupt", "--out", "{d}/g"], 1, "does not match its checksum"),
    (["generate", "{d}/edited", "--out", "{d}/g"], 1, "does not match its own checksum"),
    (["generate", "{d}/half", "--out", "{d}/g"], 1, "half/golden.npz is not a readable golden.npz (BadZipFile"),
    (["generate", "{d}/passwd", "--out", "{d}/g"], 1, "the manifest names '/etc/passwd', outside the export"),
    (["generate", "{d}/unlisted", "--out", "{d}/g"], 1, "which its checksum list (files) does not cover"),
    (["generate", "{d}/export", "--out", "{d}/afile/g"], 1, "afile is a file, not a directory"),
    (["generate", "{d}/export", "--out", "{d}/loop"], 1, "loop: cannot follow the symlink"),
    (["generate", "{d}/export", "--out", "{d}/loop/g"], 1, "loop/g: cannot follow the symlinks in it"),
    (["generate", "{d}/export", "--out", "/proc/ternpe-rtl"], 1, "--out /proc/ternpe-rtl: cannot write in /proc"),
    (["generate", "{d}/export", "--out", "{d}/readonly/g"], 1, "readonly/g: cannot write in"),
    # sim
    (["sim", "{d}/export", "--build-dir", "{d}/afile/sim"], 1, "afile is a file, not a directory"),
    (["sim", "{d}/export", "--valid-gap", "1.0", "--build-dir", "{d}/s"], 1, "--valid-gap 1.0: give the probability"),
    (["sim", "{d}/export", "--valid-gap", "-0.2", "--build-dir", "{d}/s"], 1, "--valid-gap -0.2: give the probability"),
    (["sim", "{d}/export", "--ready-gap", "nan", "--build-dir", "{d}/s"], 1, "--ready-gap nan: give the probability"),
    (["sim", "{d}/export", "--build-dir", "/proc/ternpe-sim"], 1, "--build-dir /proc/ternpe-sim: cannot write in /proc"),
    (["sim", "{d}/export", "--build-dir", "{d}/readonly/sim"], 1, "readonly/sim: cannot write in"),
    (["sim", "{d}/export", "--samples", "-3"], 1, "--samples must be >= 1"),
    (["sim", "{d}/export", "--samples", "0"], 1, "--samples must be >= 1"),
    (["sim", "{d}/export", "--simulator", "modelsim"], 2, "invalid choice: 'modelsim'"),
    (["sim", "{d}/export", "--simulator", "verilator", "--build-dir", "{d}/my sims/s"], 1,
     "Verilator cannot build from a path with a space ({d}/my sims/s)"),
    (["sim", "{d}/nothing"], 1, "manifest.json is missing"),
    (["sim", "{d}/export", "--build-dir", "{d}/photos"], 1, "--build-dir {d}/photos is not a sim build directory"),
    (["sim", "{d}/export", "--build-dir", "{d}/afile"], 1, "--build-dir {d}/afile is a file"),
    # build
    (["build", "{d}/export", "--board", "de0"], 1, "--board must be one of"),
    (["build", "{d}/export", "--board", "icebreaker", "--clock", "abc"], 2, "invalid float value: 'abc'"),
    (["build", "{d}/export", "--board", "icebreaker", "--clock", "0"], 1, "--clock 0.0: give the accelerator clock"),
    (["build", "{d}/export", "--board", "icebreaker", "--clock", "-5"], 1, "above 0"),
    (["build", "{d}/nothing", "--board", "icebreaker"], 1, "manifest.json is missing"),
    (["build", "{d}/export", "--board", "icebreaker", "--pe", "3x16"], 1, "powers of two"),
    (["build", "{d}/edited", "--board", "ulx3s"], 1, "does not match its own checksum"),
    (["build", "{d}/export", "--board", "icebreaker", "--build-dir", "{d}/boards"], 1,
     "export is not a board build directory: it holds notes.md"),
    # flash
    (["flash", "{d}/nothing.bin", "--board", "icebreaker"], 1, "does not exist"),
    (["flash", "{d}/x.bin", "--board", "de0"], 1, "--board must be one of"),
    (["flash", "{d}/afile", "--board", "icebreaker"], 1, "is not a .bin bitstream"),
    (["flash", "{d}/x.bin", "--board", "icebreaker"], 1, "report"),
    (["build", "{d}/export", "--board", "icebreaker", "--verify-samples", "-1"], 1, "--verify-samples must be >= 0"),
    (["flash", "{d}/slow.bin", "--board", "icebreaker"], 1, "missed timing (fmax 20.5 MHz < clock 30.0 MHz)"),
    (["flash", "{d}/slow.bin", "--board", "icebreaker"], 1, "flash anyway with --force"),
    (["flash", "{d}/listed.bin", "--board", "icebreaker"], 1, "listed.report.json is not a build report (a JSON list"),
    # verify
    (["verify", "{d}/nothing.bin", "--export", "{d}/export"], 1, "no such bitstream"),
    (["verify", "{d}/x.bin", "--export", "{d}/export"], 1, "says which board it is for; name it with --board"),
    (["verify", "{d}/x.bin", "--export", "{d}/export", "--board", "ulx3s"], 1, "ECP5 configuration back into a"),
    (["verify", "{d}/x.bin", "--export", "{d}/export", "--board", "nano"], 1, "unknown board 'nano'"),
    (["verify", "{d}/x.bin", "--export", "{d}/export", "--board", "upduino", "--samples", "0"], 1, "--samples must be >= 1"),
    (["verify", "{d}/x.bin", "--export", "{d}/edited", "--board", "upduino"], 1, "does not match its own checksum"),
    (["verify", "{d}/x.bin", "--export", "{d}/export", "--board", "icebreaker"], 1, "not an iCE40 bitstream?"),
    (["verify", "{d}/x.bin"], 2, "the following arguments are required: --export"),
    (["verify", "{d}/slow.bin", "--export", "{d}/export"], 1, "slow.bin failed timing"),
    (["verify", "{d}/slow.bin", "--export", "{d}/export"], 1, "or verify its logic anyway with --force"),
    (["verify", "{d}/listed.bin", "--export", "{d}/export"], 1, "listed.report.json is not a build report"),
    (["verify", "{d}/x.bin", "--export", "{d}/export", "--board", "icebreaker", "--work-dir", "{d}/notebook"], 1,
     "--work-dir {d}/notebook is not a verify run: it holds data/, notebook.ipynb"),
    # run
    (["run", "--export", "{d}/nothing", "--sim", "--golden", "1"], 1, "manifest.json is missing"),
    (["run", "--export", "{d}/export", "--sim", "--eval", "-2"], 1, "--eval -2: give a number of images >= 1"),
    (["run", "--export", "{d}/export", "--board", "de10", "--port", "/dev/null", "--golden", "1"], 1, "unknown board"),
    (["run", "--export", "{d}/export", "--golden", "1"], 1, "give --board and --port"),
    (["run", "--export", "{d}/export", "--sim"], 1, "nothing to run"),
    (["run", "--export", "{d}/export", "--sim", "--golden", "1", "--data-dir", "{d}/empty"], 1,
     "--data-dir is where --eval reads the test split"),
    (["run", "--export", "{d}/export", "--sim", "--golden", "1", "--port", "/dev/null"], 1,
     "--sim runs the simulated board"),
    (["run", "--export", "{d}/export", "--sim", "--golden", "100000"], 1, "--golden 100000: the export holds"),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/notes.txt"], 1, "is not an image"),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/nope.png"], 1, "nope.png does not exist"),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/photos"], 1, "photos is a directory; give image files"),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/nodir/seven.png"], 1,
     "seven.png: there is no directory {d}/nodir"),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/afile/seven.png"], 1,
     "{d}/afile is a file, not a directory"),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/alpha.png"], 1, "only in its alpha channel"),
    # the command itself
    ([], 2, "the following arguments are required: COMMAND"),
    (["fly"], 2, "invalid choice: 'fly'"),
]


@pytest.mark.parametrize("argv,code,msg", CASES, ids=[" ".join(c[0][:3]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_clear_message_and_loses_nothing(place, capsys, argv, code, msg):
    if any("{d}/readonly" in a for a in argv) and os.geteuid() == 0:
        pytest.skip("root writes in a read-only directory; the /proc cases stand in")
    before = _snapshot(place)
    argv = [a.format(d=place) for a in argv]
    try:
        got = main(argv)
    except SystemExit as e:
        got = e.code
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    assert msg.format(d=place) in err.replace("\n  ", " "), err
    first = err.strip().splitlines()[-1] if code == 2 else err.strip().splitlines()[0]
    assert first.startswith(("ternpe", "usage")) or "error" in first
    after = _snapshot(place)
    lost = {k for k in before if before[k] != after.get(k)}
    assert not lost, f"changed or gone: {sorted(lost)}"
    assert set(after) == set(before), f"written for bad input: {sorted(set(after) - set(before))}"
    assert not (place / "r").exists(), "a refused training writes no run"


def test_the_table_is_long_enough():
    assert len(CASES) >= 40


def test_a_missing_tool_named_through_its_variable(place, capsys, monkeypatch):
    monkeypatch.setenv("YOSYS", "/nonexistent/yosys")
    assert main(["build", str(place / "export"), "--board", "icebreaker", "--out", str(place / "bits")]) == 1
    err = capsys.readouterr().err.replace("\n  ", " ")
    assert "YOSYS=/nonexistent/yosys: no such program" in err and "unset it" in err
    assert not (place / "bits").exists()


def test_verify_and_flash_state_timing(place, capsys):
    """The timing of the build report is said before anything else, and --force lets verify go on."""
    assert main(["verify", str(place / "slow.bin"), "--export", str(place / "export")]) == 1
    assert "missed timing (fmax 20.5 MHz < clock 30.0 MHz)" in capsys.readouterr().out
    assert main(["verify", str(place / "slow.bin"), "--export", str(place / "export"), "--force",
                 "--work-dir", str(place / "w")]) == 1
    out, err = capsys.readouterr()
    assert "missed timing" in out and "failed timing" not in err and "not an iCE40 bitstream?" in err


def test_flash_with_no_board_says_so(place, capsys, monkeypatch, tmp_path_factory):
    """iceprog with nothing plugged in (a stand-in that says what iceprog says then, so no board
    that happens to be plugged in is written): 'no board found', not 'the programmer failed'."""
    bin_dir = tmp_path_factory.mktemp("fakebin")
    (bin_dir / "iceprog").write_text("#!/bin/sh\necho init..\necho \"Can't find iCE FTDI USB device (vendor_id "
                                     "0x0403, device_id 0x6010 or 0x6014).\" >&2\necho ABORT. >&2\nexit 2\n")
    (bin_dir / "iceprog").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert main(["flash", str(place / "slow.bin"), "--board", "icebreaker", "--force"]) == 1
    out, err = capsys.readouterr()
    assert "flashing anyway: --force" in out and "no board found: is it plugged in" in err, err


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _half_export(tmp, **kwargs):
    (tmp / "manifest.json").write_text("{")       # half an export, then Ctrl-C
    raise KeyboardInterrupt


INTERRUPTS = [
    (["export", "{d}/run", "--out", "{d}/e2"], "ternpe.model.export.write_export", _half_export),
    (["sim", "{d}/export", "--build-dir", "{w}/sim"], "ternpe.flow.cosim.run_verilog", _interrupt),
    (["run", "--export", "{d}/export", "--sim", "--images", "{d}/alpha.png"], "ternpe.flow.host.load_images",
     _interrupt),
    (["verify", "{d}/x.bin", "--export", "{d}/export", "--board", "icebreaker"],
     "ternpe.flow.verify.verify_bitstream", _interrupt),
    (["generate", "{d}/export", "--out", "{w}/rtl"], "ternpe.flow.generate.generate", _interrupt),
]


@pytest.mark.parametrize("argv,where,what", INTERRUPTS, ids=[c[0][0] for c in INTERRUPTS])
def test_ctrl_c_is_one_line_and_exit_130(place, capsys, monkeypatch, tmp_path_factory, argv, where, what):
    """Ctrl-C in any command: one line naming the command (and what is left), exit 130, and
    nothing half-written among what was there (an export's partial directory is removed)."""
    module, name = where.rsplit(".", 1)
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, what)
    work = tmp_path_factory.mktemp("work")
    before = _snapshot(place)
    assert main([a.format(d=place, w=work) for a in argv]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ternpe {argv[0]}: interrupted (Ctrl-C)"), err
    assert _snapshot(place) == before
    assert not list(place.glob(".*partial*")) and not (place / "e2").exists()
