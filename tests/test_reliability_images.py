"""Bad images: every kind is either skipped with its reason or decoded with a note saying what
was converted, and a run counts each one in its record (or stops under `--strict`). A run
never crashes on an image and never drops one silently: every test image is either evaluated
or listed as skipped.

The matrix: truncated JPEGs (cut mid-scan and right after the header), zero bytes, text in a
.jpg, 1x1 pixel, decompression bombs (a PNG header declaring 900 MP, beyond Pillow's own hard
limit, and one declaring 120 MP, beyond iaabench's `MAX_PIXELS` but not Pillow's), a truncated
PNG; and the conversions: PNG content in a .jpg, CMYK, 16-bit grayscale and 16-bit RGB PNGs,
grayscale, a palette with transparency, RGBA.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from iaabench.data.images import MAX_PIXELS, MIN_SIDE, load_rgb
from iaabench.errors import ImageError
from iaabench.runner import RunConfig, execute

from test_reliability_crash import tiny_tad66k

W, H = 64, 48


def _photo(seed: int = 0) -> np.ndarray:
    """A smooth RGB picture (gradients plus noise): compresses like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([x * 255 / W, y * 255 / H, (x + y) * 127 / (W + H)], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG written by hand, so that the header can declare any size and bit depth."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def _jpeg() -> bytes:
    return _encode(Image.fromarray(_photo()), "JPEG", quality=90)


def _rgb16() -> bytes:
    a = (_photo().astype(">u2") * 257)
    return _png(W, H, 16, 2, b"".join(b"\x00" + row.tobytes() for row in a))


def _palette_transparent() -> bytes:
    im = Image.fromarray(_photo()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(im, "PNG", transparency=0)


def _bomb(width: int, height: int) -> bytes:
    """Only a header's worth of bytes declaring width x height pixels: decoding it would
    allocate gigabytes, so it must be refused from the header alone."""
    return _png(width, height, 8, 2, b"\x00" * 64)


@dataclass(frozen=True)
class Case:
    name: str
    ext: str
    make: Callable[[], bytes]
    skipped: bool  # True: refused with `expect` as the reason; False: decoded with `expect` in its note
    expect: str


CASES = [
    Case("truncated-jpeg", ".jpg", lambda: _jpeg()[: len(_jpeg()) // 2], True, "unreadable: truncated file"),
    Case("truncated-jpeg-header-only", ".jpg", lambda: _jpeg()[:300], True, "unreadable: truncated file"),
    Case("zero-bytes", ".jpg", lambda: b"", True, "empty file (0 bytes)"),
    Case("text-in-jpg", ".jpg", lambda: b"<html><body>404 Not Found</body></html>\n", True,
         "unreadable: cannot identify image file"),
    Case("one-pixel", ".jpg", lambda: _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "JPEG"), True,
         f"too small: 1x1 pixels (minimum side {MIN_SIDE})"),
    Case("bomb-beyond-pillow-limit", ".png", lambda: _bomb(30000, 30000), True, "too large"),
    Case("bomb-beyond-max-pixels", ".png", lambda: _bomb(12000, 10000), True,
         f"too large: 12000x10000 pixels exceeds the limit of {MAX_PIXELS}"),
    Case("truncated-png", ".png", lambda: _encode(Image.fromarray(_photo()), "PNG")[:2000], True, "unreadable"),
    Case("png-content-in-jpg", ".jpg", lambda: _encode(Image.fromarray(_photo()), "PNG"), False,
         "PNG content in a .jpg file"),
    Case("cmyk-jpeg", ".jpg", lambda: _encode(Image.fromarray(_photo()).convert("CMYK"), "JPEG"), False,
         "converted CMYK to RGB"),
    Case("png-16bit-gray", ".png", lambda: _encode(Image.fromarray(_photo()[..., 0].astype(np.uint16) * 257), "PNG"),
         False, "converted I;16 to RGB"),
    Case("png-16bit-rgb", ".png", _rgb16, False, "reduced 16-bit samples to 8-bit"),
    Case("grayscale-jpeg", ".jpg", lambda: _encode(Image.fromarray(_photo()).convert("L"), "JPEG"), False,
         "converted L to RGB"),
    Case("palette-transparent-png", ".png", _palette_transparent, False, "converted P to RGB"),
    Case("rgba-png", ".png", lambda: _encode(Image.fromarray(_photo()).convert("RGBA"), "PNG"), False,
         "converted RGBA to RGB"),
]
SKIPPED = [c for c in CASES if c.skipped]
CONVERTED = [c for c in CASES if not c.skipped]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_load_rgb_skips_or_converts_with_a_reason(case, tmp_path):
    path = tmp_path / f"{case.name}{case.ext}"
    path.write_bytes(case.make())
    if case.skipped:
        with pytest.raises(ImageError) as e:
            load_rgb(path)
        assert e.value.path == str(path)
        assert e.value.reason.startswith(case.expect), e.value.reason
    else:
        im, note = load_rgb(path)
        assert im.mode == "RGB" and im.size == (W, H)
        assert note is not None and case.expect in note, note


def test_missing_file_and_a_lower_pixel_limit(tmp_path):
    with pytest.raises(ImageError, match="missing"):
        load_rgb(tmp_path / "absent.jpg")
    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg())
    assert load_rgb(path, max_pixels=W * H)[1] is None
    with pytest.raises(ImageError, match=f"too large: {W}x{H} pixels exceeds the limit of {W * H - 1}"):
        load_rgb(path, max_pixels=W * H - 1)


# --------------------------------------------------------------------------- end to end


def _dataset_with_bad_images(root: Path, cases_by_split: dict[str, list[Case]]) -> dict[str, list[Path]]:
    """Put each case's file in place of every other row of merge/<split>.csv (renamed to the
    case's extension); returns the paths written, per split, in label-file order."""
    written: dict[str, list[Path]] = {}
    for split, cases in cases_by_split.items():
        csv = root / "merge" / f"{split}.csv"
        header, *rows = csv.read_text(encoding="utf-8").splitlines()
        assert 2 * len(cases) <= len(rows)
        written[split] = []
        for k, case in enumerate(cases):
            _, score = rows[2 * k].rsplit(",", 1)
            name = f"bad-{split}-{case.name}{case.ext}"
            (root / "images" / name).write_bytes(case.make())
            rows[2 * k] = f"{name},{score}"
            written[split].append(root / "images" / name)
        csv.write_text("\r\n".join([header, *rows, ""]), encoding="utf-8", newline="")
    return written


def _config(root: Path, **kw) -> RunConfig:
    """A tiny run whose model tells the images apart (the pinned recipe, as `run_args`: constant
    predictions are refused as a result)."""
    return RunConfig(model="nima", dataset="synth-tad66k", data_root=root, device="cpu", batch_size=4,
                     recipe="pinned", seed=3, **kw)


def test_run_counts_every_bad_image_with_its_reason(tmp_path, one_thread):
    """Training and evaluation on splits holding every case: each skipped image is in the
    record with its reason and stage, each converted one with its note; nothing is lost."""
    root = tiny_tad66k(tmp_path / "synth", n_train=13, n_test=30)
    in_train = [CASES[0], CASES[2], CASES[8], CASES[9]]  # truncated, zero bytes, PNG in .jpg, CMYK
    paths = _dataset_with_bad_images(root, {"test": CASES, "train": in_train})
    record, _ = execute(_config(root, epochs=1), log=lambda *a: None)

    by_path = {str(p): c for split in paths for p, c in zip(paths[split], CASES if split == "test" else in_train)}
    skipped = {(s["where"], s["stage"]): s["reason"] for s in record["skipped"]}
    notes = {(n["where"], n["stage"]): n["note"] for n in record["notes"]}
    expected_skips = {(str(p), "test" if split == "test" else "train")
                      for split in paths for p in paths[split] if by_path[str(p)].skipped}
    expected_notes = {(str(p), "test" if split == "test" else "train")
                      for split in paths for p in paths[split] if not by_path[str(p)].skipped}
    assert set(skipped) == expected_skips
    assert set(notes) == expected_notes
    for (where, _), reason in skipped.items():
        assert reason.startswith(by_path[where].expect), (where, reason)
    for (where, _), note in notes.items():
        assert by_path[where].expect in note, (where, note)
    counts = record["counts"]
    assert counts["skipped"] == len(skipped) and counts["notes"] == len(notes)
    assert counts["test"] == 30 and counts["evaluated"] == 30 - len(SKIPPED)  # nothing dropped silently


def test_fast_path_skips_the_same_images(tmp_path, one_thread):
    root = tiny_tad66k(tmp_path / "synth", n_train=13, n_test=30)
    _dataset_with_bad_images(root, {"test": CASES})
    reference, ref_path = execute(_config(root, epochs=1), log=lambda *a: None)  # trained: eval-only is constant
    fast, fast_path = execute(_config(root, epochs=1, fast=True), log=lambda *a: None)
    assert len(reference["skipped"]) == len(SKIPPED)
    assert fast["skipped"] == reference["skipped"]
    assert fast["counts"]["evaluated"] == reference["counts"]["evaluated"] == 30 - len(SKIPPED)
    ids = [line.split(",")[0] for line in ref_path.with_suffix(".predictions.csv").read_text().splitlines()]
    assert ids == [line.split(",")[0] for line in fast_path.with_suffix(".predictions.csv").read_text().splitlines()]
    assert len(ids) == 1 + 30 - len(SKIPPED)


def test_strict_stops_at_the_first_unusable_image(tmp_path, one_thread):
    root = tiny_tad66k(tmp_path / "synth", n_train=13, n_test=30)
    paths = _dataset_with_bad_images(root, {"test": CONVERTED + SKIPPED})
    first_bad = paths["test"][len(CONVERTED)]
    for fast in (False, True):
        with pytest.raises(ImageError, match="--strict") as e:
            execute(_config(root, train=False, strict=True, fast=fast), log=lambda *a: None)
        assert e.value.path == str(first_bad)


# ----------------------------------------------------------------------------- EXIF orientation


def _sideways(src: Path, out: Path, orientation: int = 6) -> Path:
    """`src`'s pixels saved with an EXIF orientation tag (6: "rotate 90 CW to display")."""
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif[0x0112] = orientation
    with PILImage.open(src) as im:
        im.convert("RGB").save(out, exif=exif.tobytes(), quality=95)
    return out


def test_real_photos_decode_as_stored_without_an_exif_note():
    """The six AVA photos (one with an EXIF block, orientation 1): no note, and applying the
    orientation changes nothing."""
    from conftest import require_shared
    from iaabench.data.images import decode

    folder = require_shared("data", "images", "ava-sample")
    photos = sorted(folder.glob("*.jpg"))
    assert len(photos) == 6
    for p in photos:
        im, note = load_rgb(p)
        assert note is None or "EXIF" not in note, (p, note)
        applied, note2 = decode(p, exif="apply")
        assert note2 == note and np.array_equal(np.asarray(applied), np.asarray(im))


def test_exif_orientation_is_ignored_with_a_note_or_applied_when_asked(tmp_path):
    from conftest import shared_dir
    from iaabench.data.images import decode, exif_note
    from iaabench.data.pipeline import ImageDataset, TransformSpec
    from iaabench.data.samples import Sample

    real = shared_dir() and shared_dir() / "data" / "images" / "ava-sample" / "954013.jpg"
    src = real if real and real.is_file() else tmp_path / "src.png"
    if src == tmp_path / "src.png":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(src)
    path = _sideways(src, tmp_path / "sideways.jpg")
    stored, note = load_rgb(path)
    assert note == exif_note(6) == "EXIF orientation 6 ignored, as the authors' code does"
    applied, note = decode(path, exif="apply")
    assert note == "EXIF orientation 6 applied" and applied.size == stored.size[::-1]
    assert np.array_equal(np.asarray(applied), np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))
    assert decode(path)[1] == exif_note(6)
    with pytest.raises(ValueError, match="exif"):
        decode(path, exif="sometimes")
    # the training decode notes it, so the record's notes count it
    ds = ImageDataset([Sample("s", path, 5.0)], TransformSpec(resize=(32, 32)), train=False, seed=0)
    assert exif_note(6) in ds[0][3]
