"""The command line: help that teaches, and clear errors for bad input."""

import gzip
import os
import pathlib
import re
import subprocess
import sys
import json
import pickle

import numpy as np
import pytest

from ternpe.cli import main

QUICK = ["--dataset", "synthetic", "--epochs-float", "1", "--epochs-ternary", "1", "--epochs-finetune", "1"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "export" in out and "ternpe export runs/digits" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for word in ("wpc", "lasso-then-ternary", "naive", "--pe", "1xG", "default: mnist"):
        assert word in out


def test_train_file_dataset_without_dir(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "fashion-mnist", "--out", str(tmp_path / "r"))
    assert code == 1 and "--data-dir" in err


def test_train_missing_idx_files_are_named(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 1 and "train-images-idx3-ubyte" in err and "t10k-labels-idx1-ubyte" in err


def test_train_and_export_end_to_end(capsys, tmp_path):
    code, out, _ = run(capsys, "train", *QUICK, "--out", str(tmp_path / "r"))
    assert code == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["method"] == "wpc" and 0 <= m["integer_accuracy"] <= 1
    assert (tmp_path / "r" / "tilemaps" / "conv2.png").stat().st_size > 1000
    code, out, _ = run(capsys, "export", str(tmp_path / "r"), "--out", str(tmp_path / "e"), "--samples", "4")
    assert code == 0 and "non-zero tiles" in out
    assert (tmp_path / "e" / "manifest.json").is_file()


def test_export_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, "export", str(tmp_path / "nope"), "--out", str(tmp_path / "e"))
    assert code == 1 and "model.pt is missing" in err
    code, _, _ = run(capsys, "train", *QUICK, "--first-last", "fp", "--out", str(tmp_path / "fp"))
    assert code == 0
    code, _, err = run(capsys, "export", str(tmp_path / "fp"), "--out", str(tmp_path / "e"))
    assert code == 1 and "not ternary" in err and "--first-last ternary" in err
    code, _, err = run(capsys, "train", *QUICK, "--arch", "resnet20", "--method", "float", "--epochs-float", "0",
                       "--out", str(tmp_path / "rn"))
    assert code == 0
    code, _, err = run(capsys, "export", str(tmp_path / "rn"), "--out", str(tmp_path / "e"))
    assert code == 1 and "not ternary" in err          # a float ResNet folds, but the hardware adds only


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_idx_and_cifar_loaders(tmp_path):
    from ternpe.model.data import DatasetError, load_dataset
    rng = np.random.default_rng(0)
    for name, shape in [("train-images-idx3-ubyte", (20, 28, 28)), ("train-labels-idx1-ubyte", (20,)),
                        ("t10k-images-idx3-ubyte", (5, 28, 28)), ("t10k-labels-idx1-ubyte", (5,))]:
        _write_idx(tmp_path / (name + ".gz"), rng.integers(0, 10 if "labels" in name else 256, shape))
    ds = load_dataset("fashion-mnist", str(tmp_path))
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1) and ds.classes == 10
    cdir = tmp_path / "cifar-10-batches-py"
    cdir.mkdir()
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(cdir / n, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8), b"labels": [1, 2, 3]}, f)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    (cdir / "test_batch").unlink()
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", str(tmp_path))


def test_sim_prints_layers_and_passes(quick_run, tmp_path):
    p = subprocess.run([sys.executable, "-m", "ternpe.cli", "sim", str(quick_run["export"]), "--samples", "2",
                        "--build-dir", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for layer in ("conv1", "conv2", "fc", "class"):
        assert re.search(rf"^{layer}\s+2/2\s+PASS", p.stdout, re.M), p.stdout
    assert re.search(r"simulated clock cycles per wall second on icarus", p.stdout)


def test_sim_names_a_missing_simulator(quick_run, tmp_path):
    env = {**os.environ, "PATH": str(pathlib.Path(sys.executable).parent)}
    p = subprocess.run([sys.executable, "-m", "ternpe.cli", "sim", str(quick_run["export"]), "--build-dir",
                        str(tmp_path)], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "iverilog not found: Icarus Verilog is a Debian package: sudo apt-get install iverilog" in p.stderr


def test_run_against_the_simulated_board(quick_run):
    p = subprocess.run([sys.executable, "-m", "ternpe.cli", "run", "--export", str(quick_run["export"]), "--sim",
                        "--golden", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("logits == golden") == 2


def test_run_classifies_png_files(quick_run, tmp_path):
    import matplotlib.image as mpimg
    from ternpe.image import load_export
    ex = load_export(quick_run["export"])
    img = ex.golden["inputs"][0][..., 0]
    big = np.kron(img, np.ones((4, 4))).astype(np.uint8)          # 4x upscaled: resized back exactly
    f = tmp_path / "x.png"
    mpimg.imsave(f, big, cmap="gray", vmin=0, vmax=255)
    p = subprocess.run([sys.executable, "-m", "ternpe.cli", "run", "--export", str(quick_run["export"]), "--sim",
                        "--images", str(f)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert f"x.png: class {int(ex.golden['classes'][0])} " in p.stdout


def test_flash_and_build_refuse_bad_input(quick_run, tmp_path):
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "ternpe.cli", *args], capture_output=True, text=True)
        p.stderr = " ".join(p.stderr.split())          # messages are wrapped at 100 columns
        return p
    p = run("flash", str(tmp_path / "none.bin"), "--board", "icebreaker")
    assert p.returncode == 1 and "does not exist: build it with `ternpe build EXPORT --board icebreaker`" in p.stderr
    (tmp_path / "x.bin").write_bytes(b"\0")
    p = run("flash", str(tmp_path / "x.bin"), "--board", "ulx3s")
    assert p.returncode == 1 and "not a .bit bitstream" in p.stderr
    p = run("flash", str(tmp_path / "x.bin"), "--board", "icebreaker")
    assert p.returncode == 1 and "has no build report (x.report.json)" in p.stderr and "--force" in p.stderr
    (tmp_path / "x.report.json").write_text(json.dumps({"board": "icebreaker", "timing_met": False,
                                                         "fmax_mhz": 28.1, "clock_mhz": 30.0}))
    p = run("flash", str(tmp_path / "x.bin"), "--board", "icebreaker")
    assert p.returncode == 1 and "missed timing (fmax 28.1 MHz < clock 30.0 MHz)" in p.stderr
    p = run("flash", str(tmp_path / "x.bin"), "--board", "icebreaker", "--force")   # no board is attached here
    assert p.returncode == 1 and ("no board found" in p.stderr or "the programmer failed" in p.stderr)
    assert (tmp_path / "x.bin").read_bytes() == b"\0", "nothing is lost"
    p = run("build", str(quick_run["export"]), "--board", "de0")
    assert p.returncode == 1 and "--board must be one of icebreaker, upduino, ulx3s, orangecrab" in p.stderr


def test_build_checks_the_fit_before_synthesis(quick_run):
    import dataclasses
    from ternpe.devices import DEVICES
    from ternpe.flow.resources import FitError, check_fit, plan_for_device
    from ternpe.image import load_export
    ex = load_export(quick_run["export"])
    tiny = dataclasses.replace(DEVICES["up5k"], bram=2)
    with pytest.raises(FitError, match=r"(?s)does not fit up5k:\n  bram: needs \d+, up5k has 2\n  block RAMs by memory: "
                                       r"weights \d+.*fix: "):
        check_fit(plan_for_device(ex, tiny), tiny)
    assert check_fit(plan_for_device(ex, "up5k"), "up5k")["bram"] <= 30


def test_a_build_that_misses_timing_replaces_nothing(tmp_path):
    from ternpe.flow.build import artefact_paths, publish
    good, good_report = artefact_paths(tmp_path, "digits", "bin", True)
    publish(b"good", {"timing_met": True}, good, good_report)
    bad, bad_report = artefact_paths(tmp_path, "digits", "bin", False)
    publish(b"bad", {"timing_met": False}, bad, bad_report)
    assert good.read_bytes() == b"good" and json.loads(good_report.read_text())["timing_met"]
    assert bad.name == "digits.timing-failed.bin" and bad.read_bytes() == b"bad"
    assert not json.loads(bad_report.read_text())["timing_met"]
    assert not list(tmp_path.glob("*.partial"))


def test_train_checks_out_before_training(capsys, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = run(capsys, "train", *QUICK, "--out", str(f))
    assert code == 1 and "is a file" in err and f.read_text() == "x"
    code, _, err = run(capsys, "train", *QUICK, "--out", str(f / "run"))
    assert code == 1 and "is a file, not a directory" in err.replace("\n  ", " ")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    code, _, err = run(capsys, "train", *QUICK, "--out", str(other))
    assert code == 1 and "not a ternpe run" in err.replace("\n  ", " ") and (other / "cat.jpg").read_text() == "meow"


def test_a_new_run_replaces_the_old_one_whole(capsys, tmp_path):
    out = tmp_path / "r"
    assert run(capsys, "train", *QUICK, "--out", str(out))[0] == 0
    stale = out / "tilemaps" / "conv9.png"
    stale.write_bytes(b"old")
    assert run(capsys, "train", *QUICK, "--arch", "c16,p,fc4", "--out", str(out))[0] == 0
    assert not stale.exists()
    assert sorted(p.name for p in (out / "tilemaps").iterdir()) == ["conv1.png", "fc1.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["r"], "no temporary directory is left behind"


def test_ctrl_c_leaves_the_old_run_and_says_so(capsys, tmp_path, monkeypatch):
    out = tmp_path / "r"
    assert run(capsys, "train", *QUICK, "--out", str(out))[0] == 0
    before = (out / "metrics.json").read_text()
    import ternpe.model.train as T

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "_phase", interrupted)
    code, _, err = run(capsys, "train", *QUICK, "--seed", "9", "--out", str(out))
    assert code == 130 and "interrupted" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
