"""The generated Verilog of whole networks on Icarus and Verilator, against the golden outputs."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from ternpe.contract import pack_tile_words, unpack_tile_words
from amaranth.back import verilog

from ternpe.hw.accelerator import Accelerator
from ternpe.hw.plan import plan_accelerator
from ternpe.flow.cosim import CosimError, run_cosim
from ternpe.image import load_export, write_hex, write_manifest

CASES = [("icarus", "1x16", "trained"), ("icarus", "1x16", "sparse"), ("icarus", "2x8", "trained"),
         ("icarus", "2x8", "sparse"), ("verilator", "1x16", "trained"), ("verilator", "2x8", "sparse")]


@pytest.mark.parametrize("sim,pe,level", CASES)
def test_golden_samples_bit_exact(cosim_export, tmp_path, sim, pe, level):
    ex = cosim_export(pe, level)
    res = run_cosim(ex.path, simulator=sim, build_dir=tmp_path, samples=3)
    assert len(res["results"]) == 3
    for r in res["results"]:
        assert r["ok"] and all(x["ok"] for x in r["layers"]) and r["class"] == r["want_class"]
    assert res["cycles"] == [plan_accelerator(ex).cycles["total"]] * 3 == [res["model_cycles"]] * 3


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_stream_stalls_change_nothing(cosim_export, tmp_path, sim):
    """Random valid gaps on the input and ready back-pressure on the output."""
    ex = cosim_export("2x8", "trained")
    res = run_cosim(ex.path, simulator=sim, build_dir=tmp_path, samples=3, valid_gap=0.4, ready_gap=0.6, seed=7)
    assert all(r["ok"] for r in res["results"])
    assert res["cycles"] == [plan_accelerator(ex).cycles["total"]] * 3     # compute cycles do not depend on the streams


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_reset_in_the_middle_recovers(cosim_export, tmp_path, sim):
    ex = cosim_export("1x16", "trained")
    res = run_cosim(ex.path, simulator=sim, build_dir=tmp_path, testcase="reset_mid_inference")
    assert len(res["results"]) == 2 and all(r["ok"] for r in res["results"])


def test_a_flipped_rom_code_fails_and_names_the_layer(cosim_export, tmp_path):
    """One code of one non-zero tile of conv2 flipped in the ROM image: the run fails at conv2."""
    ex = cosim_export("1x16", "trained")
    bad = tmp_path / "corrupt"
    shutil.copytree(ex.path, bad)
    lay = next(l for l in ex.layers if l.spec.name == "conv2")
    tiles = lay.tiles.copy()
    nz = np.argwhere(tiles != 0)
    t, p, w, g = nz[0]
    tiles[t, p, w, g] = -tiles[t, p, w, g]          # +1 <-> -1
    fname = ex.manifest["layers"][1]["files"]["weights"]
    words = pack_tile_words(tiles, ex.geometry)
    assert unpack_tile_words(words, ex.geometry, tiles.shape[2]).tolist() == tiles.tolist()
    write_hex(bad / fname, words, ex.geometry.word_bits)
    # the corrupt image must still load (checksum refreshed), as a bad ROM would
    man = json.loads((bad / "manifest.json").read_text())
    man["files"][fname] = hashlib.sha256((bad / fname).read_bytes()).hexdigest()
    write_manifest(bad, man)
    corrupt = load_export(bad, check_golden=False)
    ref = corrupt.run(ex.golden["inputs"][:3])
    assert not np.array_equal(ref[1], ex.golden["layer1"][:3]), "the flip must change conv2's output"
    # `ternpe generate` refuses an export that does not reproduce its golden; build this one directly
    v = tmp_path / "rtl" / "ternpe_top.v"
    v.parent.mkdir()
    v.write_text(verilog.convert(Accelerator(plan_accelerator(corrupt)), name="ternpe_top", emit_src=False))
    with pytest.raises(CosimError, match=r"layer conv2 is the first that differs"):
        run_cosim(bad, simulator="icarus", build_dir=tmp_path / "sim", samples=3, golden_dir=ex.path, verilog=v)


# real-size and unusual shapes on Verilator (seeded random networks; every layer via the taps)
VERILATOR_NETWORKS = [
    ("mnist-28x28", (28, 28, 1), "c8,p,c16,p,fc10", "8x8", None),
    ("rgb-32x32-5x5", (32, 32, 3), "c16k5,p,c16,p,fc10", "4x16", None),
    ("stride-2-1x1-hidden-fc", (10, 10, 2), "c16,c32s2,c32k1,fc16,fc5", "2x16", None),
    ("widened-4x", (8, 8, 1), "c16,p,c32,p,fc10", "2x16", "8x16"),
    ("residual-blocks-16x16", (16, 16, 3), "c16,c16,c16r,c32s2,c32r,c32,c32r,fc10", "4x16", None),
    ("residual-option-a-widened", (8, 8, 3), "c8,c8,c8r,c16s2,c16r,fc5", "1x8", "8x8"),
]
#: these also as the ECP5 board builds them (ternpe sim --device): its memory-path registers
ECP5_CASES = {"widened-4x", "residual-blocks-16x16"}


@pytest.mark.parametrize("name,shape,layers,pe,wide", VERILATOR_NETWORKS, ids=[n[0] for n in VERILATOR_NETWORKS])
def test_networks_on_verilator(tmp_path, name, shape, layers, pe, wide):
    from ternpe.contract import ArrayGeometry
    from ternpe.image import widen
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "export", shape=shape, layers=layers, pe=pe, density=0.6, samples=2,
                       seed=sum(map(ord, name)))
    res = run_cosim(ex.path, simulator="verilator", build_dir=tmp_path / "sim", pe=wide)
    assert len(res["results"]) == 2
    for r in res["results"]:
        assert r["ok"] and all(x["ok"] for x in r["layers"]) and r["class"] == r["want_class"]
    model_ex = widen(ex, ArrayGeometry.parse(wide)) if wide else ex
    assert res["cycles"] == [plan_accelerator(model_ex).cycles["total"]] * 2 == [res["model_cycles"]] * 2
    if name in ECP5_CASES:          # the design an ECP5 build synthesizes: 3 more cycles of drain per layer
        res = run_cosim(ex.path, simulator="verilator", build_dir=tmp_path / "sim-ecp5", pe=wide, device="ecp5-85f",
                        taps=False)
        assert all(r["ok"] for r in res["results"])
        assert res["cycles"] == [res["model_cycles"]] * 2
        assert res["model_cycles"] == plan_accelerator(model_ex).cycles["total"] + 3 * len(ex.layers)


def test_residual_network_on_icarus(tmp_path):
    """The shortcut's second read port and its lane rotation on the event-driven simulator too."""
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "export", shape=(8, 8, 2), layers="c16,p,c16,c16r,c32s2,c32r,fc5", pe="2x16",
                       density=0.5, samples=2, seed=12)
    res = run_cosim(ex.path, simulator="icarus", build_dir=tmp_path / "sim")
    assert [r["ok"] and all(x["ok"] for x in r["layers"]) for r in res["results"]] == [True, True]
    assert res["cycles"] == [plan_accelerator(ex).cycles["total"]] * 2


@pytest.mark.parametrize("sim,layers,pe,images,device", [
    ("verilator", "c16,c16,c16r,c32s2,c32r,fc10", "2x16", 3, "ecp5-85f"),
    ("icarus", "c16,p,c32,p,fc10", "1x16", 2, None)])
def test_image_lanes_on_the_simulators(tmp_path, sim, layers, pe, images, device):
    """N image lanes in the generated Verilog: every lane's every layer (the widened taps), the
    logits and the class bit-exact, with stalls on both streams, a last batch filled with blank
    images, and the batch's cycles the model's; then a reset mid-inference recovers."""
    from ternpe.hw.plan import AcceleratorOptions
    from ternpe.model.randnet import random_export
    ex = random_export(tmp_path / "export", shape=(8, 8, 2), layers=layers, pe=pe, density=0.5, samples=images + 1,
                       seed=images)
    res = run_cosim(ex.path, simulator=sim, build_dir=tmp_path / "sim", images=images, device=device,
                    valid_gap=0.3, ready_gap=0.5, seed=3)
    assert len(res["results"]) == images + 1 and res["images"] == images
    for r in res["results"]:
        assert r["ok"] and all(x["ok"] for x in r["layers"]) and r["class"] == r["want_class"]
    if device is None:
        assert res["model_cycles"] == plan_accelerator(ex, AcceleratorOptions(images=images)).cycles["total"]
    assert res["cycles"] == [res["model_cycles"]] * (images + 1)
    res = run_cosim(ex.path, simulator=sim, build_dir=tmp_path / "sim", images=images, device=device,
                    testcase="reset_mid_inference")
    assert len(res["results"]) == 2 and all(r["ok"] for r in res["results"])
