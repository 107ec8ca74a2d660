"""``ternpe run --images``: a picture is read by its format (flow/host.py: load_images,
decode_image), never scaled by its content; transparency, colour and size changes are said."""

import numpy as np
import pytest
from PIL import Image

from ternpe.flow.host import ImageError, load_images
from ternpe.image import load_export


def _classes(ex, x) -> list:
    return np.argmax(ex.run(x)[-1], axis=1).tolist()


def _save_all(picture: np.ndarray, stem) -> list:
    """``picture`` (uint8 [H, W, C]) as PNG, BMP and JPEG (quality 100)."""
    img = Image.fromarray(picture[..., 0] if picture.shape[2] == 1 else picture)
    paths = [stem.with_suffix(ext) for ext in (".png", ".bmp", ".jpg")]
    for p in paths:
        img.save(p, **({"quality": 100} if p.suffix == ".jpg" else {}))
    return paths


@pytest.mark.parametrize("levels", ["0/1", "0/255", "golden"])
def test_the_same_picture_as_png_jpeg_and_bmp_is_the_same_input_and_class(quick_run, tmp_path, levels):
    ex = load_export(quick_run["export"])
    g = ex.golden["inputs"][0]
    picture = {"0/1": (g > 127).astype(np.uint8), "0/255": (g > 127).astype(np.uint8) * 255, "golden": g}[levels]
    said = []
    png, bmp, jpg = load_images(_save_all(picture, tmp_path / "pic"), ex.input_shape, log=said.append)
    assert not said, "an 8-bit picture of the network's size is read as it is"
    assert np.array_equal(png, picture) and np.array_equal(bmp, picture)
    assert int(png.max()) == int(picture.max()), "never scaled by its brightest pixel"
    assert np.abs(jpg.astype(int) - picture).max() <= 3          # JPEG's own rounding, at quality 100
    assert _classes(ex, np.stack([png, bmp, jpg])) == _classes(ex, picture[None]) * 3


def test_16_bit_and_floating_point_files_by_their_depth(tmp_path):
    v = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(v.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(v.astype(np.float32) / 255).save(tmp_path / "float.tif")
    Image.fromarray((v > 100).astype(np.float32) * 2 - 0.5).save(tmp_path / "over.tif")
    said = []
    deep, flt, over = load_images([tmp_path / n for n in ("deep.png", "float.tif", "over.tif")], (8, 8, 1),
                                  log=said.append)
    assert np.array_equal(deep[..., 0], v) and np.array_equal(flt[..., 0], v)
    assert set(np.unique(over).tolist()) == {0, 255}
    assert "16-bit, scaled to 8 bits (/ 257)" in said[0]
    assert "0.0 black to 1.0 white" in said[1] and "(values outside clipped)" in said[2]


def test_transparent_pictures_are_composited_on_black_or_refused(tmp_path):
    digit = np.zeros((8, 8), np.uint8)
    digit[1:7, 3:5] = 255
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = digit                                   # black strokes, drawn only in the alpha channel
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with pytest.raises(ImageError, match=r"alpha.png is blank composited on black .* only in its alpha channel"):
        load_images([tmp_path / "alpha.png"], (8, 8, 1))
    rgba[..., :3] = 255                                    # white strokes on a transparent background
    rgba[0, 0] = (255, 255, 255, 128)                      # and a half-transparent white pixel
    Image.fromarray(rgba).save(tmp_path / "white.png")
    said = []
    x = load_images([tmp_path / "white.png"], (8, 8, 1), log=said.append)[0, ..., 0]
    want = digit.copy()
    want[0, 0] = 128
    assert np.array_equal(x, want)
    assert said == [f"{tmp_path / 'white.png'}: transparent: composited on black; colour converted to grey (the "
                    f"mean of R, G and B)"]
    Image.fromarray(np.dstack([digit] * 3 + [np.full_like(digit, 255)])).save(tmp_path / "opaque.png")
    said.clear()
    assert np.array_equal(load_images([tmp_path / "opaque.png"], (8, 8, 3), log=said.append)[0, ..., 1], digit)
    assert not said, "an opaque RGBA picture needs no compositing"


def test_conversions_and_resizes_are_said(tmp_path):
    Image.fromarray(np.full((16, 12, 3), (30, 60, 90), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "grey.png")
    said = []
    x = load_images([tmp_path / "rgb.png"], (8, 8, 1), log=said.append)
    assert (x == 60).all()
    assert said == [f"{tmp_path / 'rgb.png'}: colour converted to grey (the mean of R, G and B); 12x16 resized to "
                    f"the network's 8x8 (area average)"]
    said.clear()
    assert (load_images([tmp_path / "grey.png"], (8, 8, 3), log=said.append) == 200).all()
    assert said == [f"{tmp_path / 'grey.png'}: grey copied to R, G and B"]
    with pytest.raises(ImageError, match="takes 2-channel inputs"):
        load_images([tmp_path / "grey.png"], (8, 8, 2))
    with pytest.raises(ImageError, match="is a directory; give image files"):
        load_images([tmp_path], (8, 8, 1))
