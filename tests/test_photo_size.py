"""Photo-size synthetic images (issue 20): `--long-side` writes images that weigh like photos;
the default images and every label stay as they were."""
import io

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from iaabench.data.synthetic import JPEG_SETTINGS, make_synthetic
from iaabench.data.synthetic_images import render, sample_attributes
from iaabench.errors import ConfigError


def _jpeg_bytes(im: Image.Image) -> int:
    b = io.BytesIO()
    im.save(b, **JPEG_SETTINGS)
    return len(b.getvalue())


def test_photo_size_jpegs_weigh_like_photos():
    sizes, sides = [], []
    for i in range(6):
        rng = np.random.default_rng([0, 0, i])
        a = sample_attributes(rng)
        rng.normal()  # the crowd draw, as `_make_item` does
        im = render(a, rng, long_side=800)
        sides.append(max(im.size))
        sizes.append(_jpeg_bytes(im))
    assert sides == [800] * 6
    assert np.mean(sizes) >= 60_000  # real AVA/TAD66K photos: about 90 KB at 800 px


def test_default_images_stay_small():
    rng = np.random.default_rng([0, 0, 0])
    a = sample_attributes(rng)
    rng.normal()
    im = render(a, rng)
    assert max(im.size) <= 192 and _jpeg_bytes(im) < 20_000


def test_long_side_changes_the_pixels_not_the_labels(tmp_path):
    small = make_synthetic("tad66k", tmp_path / "small", n=50, progress=False)
    big = make_synthetic("tad66k", tmp_path / "big", n=50, progress=False, long_side=320)
    assert "long_side" not in small and big["long_side"] == 320
    labels = [p.relative_to(tmp_path / "small") for p in (tmp_path / "small").rglob("*.csv")]
    assert labels
    for f in labels:
        assert (tmp_path / "small" / f).read_bytes() == (tmp_path / "big" / f).read_bytes()
    ims = sorted((tmp_path / "big" / "images").iterdir())
    with Image.open(ims[0]) as im:
        assert max(im.size) == 320
    # asking again for the same photo-size set reuses it; another long side is another dataset
    assert make_synthetic("tad66k", tmp_path / "big", n=50, progress=False, long_side=320) == big
    with pytest.raises(ConfigError, match="different synthetic dataset"):
        make_synthetic("tad66k", tmp_path / "big", n=50, progress=False)


@pytest.mark.parametrize("bad", [10, 10_000, True])
def test_a_bad_long_side_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="long side"):
        make_synthetic("tad66k", tmp_path / "x", n=50, progress=False, long_side=bad)


def test_the_command_takes_long_side(tmp_path):
    from iaabench.cli import app

    r = CliRunner().invoke(app, ["data", "make-synthetic", "--layout", "ava", "--out", str(tmp_path / "a"),
                                 "--n", "50", "--long-side", "300"])
    assert r.exit_code == 0, r.output
    assert '"long_side": 300' in r.output
