import json
import shutil

import numpy as np
import pytest

from ternpe.contract import ArrayGeometry, TileLayout
from ternpe.image import ExportError, _sha256, load_export, read_hex, write_manifest
from ternpe.model.fold import fold


def test_round_trip_weights_requant_and_golden(quick_run):
    ex = load_export(quick_run["export"])
    im = fold(quick_run["net"])
    assert [l.spec for l in ex.layers] == im.specs
    for layer, w, rq in zip(ex.layers, im.weights, im.requants):
        np.testing.assert_array_equal(layer.dense_weights(), w)
        np.testing.assert_array_equal(layer.channel_requant().mult, rq.mult)
        np.testing.assert_array_equal(layer.channel_requant().bias, rq.bias)
        np.testing.assert_array_equal(layer.channel_requant().shift, rq.shift)
    outs = im.run(ex.golden["inputs"])
    np.testing.assert_array_equal(outs[-1], ex.golden["logits"])
    np.testing.assert_array_equal(np.argmax(outs[-1], 1), ex.golden["classes"])


def test_only_nonzero_tiles_are_stored(quick_run):
    ex = load_export(quick_run["export"])
    m = json.loads((quick_run["run"] / "metrics.json").read_text())
    for layer, lm in zip(ex.layers, m["layers"]):
        assert layer.nonzero_tiles == lm["nonzero_tiles"]
        assert (layer.tiles != 0).any(axis=(1, 2, 3)).all(), "a stored tile is all zero"
        words = read_hex(ex.path / f"{layer.spec.name}.weights.hex", ex.geometry.word_bits)
        assert len(words) == layer.nonzero_tiles * layer.layout.words_per_tile
    pruned = sum(l.layout.count - l.nonzero_tiles for l in ex.layers)
    assert pruned > 0, "the quick WPC run should prune something"


def test_manifest_describes_layers(quick_run):
    man = json.loads((quick_run["export"] / "manifest.json").read_text())
    assert man["geometry"] == {"P": 1, "G": 16, "word_bits": 32}
    assert man["input"]["shape"] == [8, 8, 1]
    ex = load_export(quick_run["export"])
    for lj, layer in zip(man["layers"], ex.layers, strict=True):
        lay = TileLayout(layer.spec, ArrayGeometry(1, 16))
        assert (lj["tiles"]["rows"], lj["tiles"]["cols"]) == (lay.rows, lay.cols)
        assert set(lj["files"]) == {"weights", "rowptr", "cols", "mult", "bias", "shift"}


@pytest.fixture
def copy(quick_run, tmp_path):
    dst = tmp_path / "exp"
    shutil.copytree(quick_run["export"], dst)
    return dst


def _flip_one_code(path):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        v = int(line, 16)
        if v:
            low = (v & -v).bit_length() - 1          # lowest set bit, inside a non-zero code
            lane = low // 2
            code = (v >> (2 * lane)) & 3
            flipped = {0b01: 0b11, 0b11: 0b01}[code]
            v = v & ~(3 << (2 * lane)) | (flipped << (2 * lane))
            lines[i] = f"{v:0{len(line)}x}"
            break
    path.write_text("\n".join(lines) + "\n")


def _rehash(d):
    man = json.loads((d / "manifest.json").read_text())
    man["files"] = {n: _sha256(d / n) for n in man["files"]}
    write_manifest(d, man)


def test_corrupt_file_is_refused_by_checksum(copy):
    _flip_one_code(copy / "conv2.weights.hex")
    with pytest.raises(ExportError, match="conv2.weights.hex does not match its checksum"):
        load_export(copy)


def test_flipped_code_is_caught_by_golden_and_named(copy):
    _flip_one_code(copy / "conv2.weights.hex")
    _rehash(copy)
    with pytest.raises(ExportError, match="layer conv2: the image does not reproduce the golden output"):
        load_export(copy)


def test_missing_file_and_manifest(copy, tmp_path):
    (copy / "fc.bias.hex").unlink()
    with pytest.raises(ExportError, match="fc.bias.hex named in the manifest is missing"):
        load_export(copy)
    with pytest.raises(ExportError, match="manifest.json is missing"):
        load_export(tmp_path / "nothing")


def test_mismatched_geometry_is_refused(copy):
    man = json.loads((copy / "manifest.json").read_text())
    man["geometry"]["G"] = 8
    man["geometry"]["word_bits"] = 16
    write_manifest(copy, man)
    with pytest.raises(ExportError, match="does not match the contract"):
        load_export(copy)


def test_truncated_index_is_refused(copy):
    p = copy / "fc.cols.hex"
    p.write_text("\n".join(p.read_text().splitlines()[:-1]) + "\n")
    _rehash(copy)
    with pytest.raises(ExportError, match="layer fc"):
        load_export(copy)


def test_an_edited_manifest_is_refused_by_its_own_checksum(copy):
    man = json.loads((copy / "manifest.json").read_text())
    man["layers"][1]["acc_bits"] = 13
    (copy / "manifest.json").write_text(json.dumps(man))          # edited, not resealed
    with pytest.raises(ExportError, match="does not match its own checksum"):
        load_export(copy)


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m["layers"][1].__setitem__("acc_bits", 13), "layer conv2: acc_bits is 13 in the manifest, the contract gives"),
    (lambda m: m["layers"][2].__setitem__("bias_bits", 30), "layer fc: bias_bits is 30"),
    (lambda m: m["layers"][0].__setitem__("mult_bits", 18), "layer conv1: mult_bits is 18"),
    (lambda m: m["layers"][1]["tiles"].__setitem__("count", 7), "layer conv2: tiles.count is 7"),
    (lambda m: m["layers"][1]["tiles"].__setitem__("channels_per_tile", 4), "channels_per_tile is 4"),
    (lambda m: m["layers"][0].__setitem__("out_h", 5), "out_h x out_w"),
    (lambda m: m["geometry"].__setitem__("word_bits", 16), "word_bits 16"),
    (lambda m: m["formats"].__setitem__("mult_bits", 12), "mult_bits 12"),
    (lambda m: m.pop("geometry"), "a field is missing or malformed (KeyError: 'geometry')"),
    (lambda m: m["layers"][0].pop("tiles"), "a field is missing or malformed (KeyError: 'tiles')"),
    (lambda m: m["golden"].__setitem__("samples", 3), "golden.npz: 'inputs' has shape"),
])
def test_derived_fields_are_recomputed_and_checked(copy, edit, msg):
    """A manifest resealed after an edit (so its checksum passes) is still refused when a field
    disagrees with what the contract derives."""
    man = json.loads((copy / "manifest.json").read_text())
    edit(man)
    write_manifest(copy, man)
    with pytest.raises(ExportError) as e:
        load_export(copy)
    assert msg in str(e.value)


@pytest.mark.parametrize("key,value,msg", [
    ("logits", lambda g: g["logits"][:, :3], "'logits' has shape"),
    ("layer1", None, "no 'layer1' array"),
    ("inputs", lambda g: g["inputs"].astype(np.float32), "'inputs' has dtype float32"),
    ("labels", lambda g: g["labels"][:-1], "'labels' has shape"),
    ("classes", lambda g: g["classes"].astype(np.float64), "'classes' has dtype float64"),
])
def test_golden_arrays_are_checked_against_the_manifest(copy, key, value, msg):
    g = dict(np.load(copy / "golden.npz"))
    if value is None:
        del g[key]
    else:
        g[key] = value(g)
    np.savez_compressed(copy / "golden.npz", **g)
    _rehash(copy)
    with pytest.raises(ExportError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load_export(copy)


def test_a_manifest_that_is_not_an_object_is_refused(copy):
    (copy / "manifest.json").write_text("[1, 2, 3]\n")
    with pytest.raises(ExportError, match="not a ternpe export manifest"):
        load_export(copy)
