"""The pixel cache decodes ordinary JPEGs with torchvision's decoder: the same bytes as the PIL
path, and PIL's path (its notes and errors) for everything unusual."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import require_shared
from iaabench.data import cache
from iaabench.data.images import jpeg_pixels
from iaabench.data.synthetic_images import render, sample_attributes
from iaabench.errors import ImageError


def pil_row(path, resize=(256, 256), interpolation="bilinear", crop=224, exif="ignore"):
    """The reference path's row (the fast decode switched off)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cache, "jpeg_pixels", lambda *a, **k: None)
        return cache.decode_row(str(path), resize, interpolation, crop, exif=exif)


def photo(tmp_path, name="p.jpg", size=(800, 560), **save):
    rng = np.random.default_rng(0)
    im = render(sample_attributes(rng), rng, long_side=max(size)).resize(size)
    path = tmp_path / name
    im.save(path, **({"format": "JPEG", "quality": 90} | save))
    return path


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_real_photographs_give_the_pil_paths_bytes(interpolation):
    for path in sorted(require_shared("data", "images", "ava-sample").glob("*.jpg")):
        assert jpeg_pixels(path) is not None, path
        fast, note = cache.decode_row(str(path), (256, 256), interpolation, 224)
        ref, ref_note = pil_row(path, interpolation=interpolation)
        assert fast.dtype == np.uint8 and fast.shape == ref.shape == (256, 256, 3)
        assert np.array_equal(fast, ref), path
        assert note == ref_note, path


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"subsampling": 0}, {"quality": 60}])
def test_encoder_settings_give_the_same_bytes(tmp_path, save):
    path = photo(tmp_path, **save)
    fast, _ = cache.decode_row(str(path), (300, 220), "bilinear", None)
    assert np.array_equal(fast, pil_row(path, resize=(300, 220), crop=None)[0])


def test_exif_orientation_is_noted_as_the_pil_path_does_and_applying_it_falls_back(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photo(tmp_path)).save(path, quality=90, exif=exif.tobytes())
    x, note = jpeg_pixels(path)
    assert note == pil_row(path)[1] == "EXIF orientation 6 ignored, as the authors' code does"
    assert jpeg_pixels(path, exif="apply") is None  # turned upright by PIL's path
    assert np.array_equal(cache.decode_row(str(path), (256, 256), "bilinear", 224, exif="apply")[0],
                          pil_row(path, exif="apply")[0])


def test_unusual_files_take_the_pil_path(tmp_path):
    base = Image.open(photo(tmp_path))
    gray, cmyk, png = tmp_path / "g.jpg", tmp_path / "c.jpg", tmp_path / "png.jpg"
    base.convert("L").save(gray, quality=90)
    base.convert("CMYK").save(cmyk, quality=90)
    base.save(png, format="PNG")
    for path in (gray, cmyk, png):
        assert jpeg_pixels(path) is None, path
        row, note = cache.decode_row(str(path), (256, 256), "bilinear", 224)
        assert np.array_equal(row, pil_row(path)[0]) and note == pil_row(path)[1] and note, path


def test_broken_files_give_the_pil_paths_error(tmp_path):
    data = photo(tmp_path).read_bytes()
    truncated, garbage = tmp_path / "t.jpg", tmp_path / "x.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    garbage.write_bytes(b"\xff\xd8\xff" + b"\x00" * 500)
    for path in (truncated, garbage, tmp_path / "missing.jpg"):
        assert jpeg_pixels(path) is None
        with pytest.raises(ImageError) as fast:
            cache.decode_row(str(path), (256, 256), "bilinear", 224)
        with pytest.raises(ImageError) as ref:
            pil_row(path)
        assert fast.value.reason == ref.value.reason


def test_small_images_and_upscales_take_the_pil_path(tmp_path):
    small = photo(tmp_path, size=(200, 150))
    row, note = cache.decode_row(str(small), (256, 256), "bilinear", 224)  # upscaled: PIL's resize
    ref = pil_row(small)
    assert np.array_equal(row, ref[0]) and note == ref[1]


def test_an_image_of_the_stored_size_is_not_resampled(tmp_path):
    path = photo(tmp_path, size=(256, 256))
    fast, _ = cache.decode_row(str(path), (256, 256), "bilinear", 224)
    assert np.array_equal(fast, np.asarray(Image.open(path).convert("RGB")))
