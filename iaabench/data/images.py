"""Decoding one image file safely: every failure is an `ImageError` with a reason.

Policy (the same in every path that decodes: reference loader, fast cache, verify):
- decoded and converted to 8-bit RGB, with a note: grayscale, CMYK, palette, 16-bit, alpha,
  and files whose content is another format than their extension says (PNG in a .jpg);
- skipped with a reason: missing, zero bytes, unreadable or truncated, smaller than
  `MIN_SIDE` pixels on a side, or more than `MAX_PIXELS` pixels (a decompression bomb).
EXIF orientation is not applied, as in every model's released code (PIL `Image.open(...).convert('RGB')`
reads the pixels as stored): the benchmark scores what the authors' scripts score. An image whose EXIF
orientation is not 1 is decoded as stored with the note "EXIF orientation N ignored, as the authors'
code does", so a record counts them. `decode(path, exif="apply")` turns the image upright instead
(`upright`: what `iaabench predict` does for users' photos, and what training and evaluation do
for a recipe whose transforms say `exif: apply`, `pipeline.TransformSpec.exif`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError

MAX_PIXELS = 100_000_000  # AVA's largest images are ~ 25 MP; beyond this we refuse
MIN_SIDE = 8

_FORMAT_EXT = {"JPEG": {".jpg", ".jpeg"}, "PNG": {".png"}, "WEBP": {".webp"}, "BMP": {".bmp"},
               "TIFF": {".tif", ".tiff"}, "GIF": {".gif"}}


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS,
             draft: tuple[int, int] | None = None) -> tuple[Image.Image, str | None]:
    """(RGB image, note or None). Raises ImageError naming the file and the reason.

    `draft` (width, height): let the JPEG decoder decode at a reduced scale (1/2, 1/4, 1/8) that
    stays at least that large (`Image.draft`; faster, other pixels: the pixel cache's opt-in
    "draft" mode). Other formats are decoded in full."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "missing") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    notes = []
    try:
        with warnings.catch_warnings():
            # Our own `max_pixels` decides below (from the header, before decoding); Pillow's
            # lower warning threshold is ignored and its hard limit (twice that) still refuses.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(path, f"too large: {w}x{h} pixels exceeds the limit of {max_pixels}")
                if min(w, h) < MIN_SIDE:
                    raise ImageError(path, f"too small: {w}x{h} pixels (minimum side {MIN_SIDE})")
                fmt = im.format or "?"
                if path.suffix.lower() not in _FORMAT_EXT.get(fmt, {path.suffix.lower()}):
                    notes.append(f"{fmt} content in a {path.suffix} file")
                if im.mode in ("RGB", "RGBA") and any(";16" in str(t[3]) for t in im.tile or () if len(t) > 3):
                    notes.append("reduced 16-bit samples to 8-bit")  # Pillow does it while decoding
                if draft and fmt == "JPEG":
                    im.draft("RGB", tuple(draft))
                im.load()
                orientation = exif_orientation(im)  # after load: Pillow's PNG getexif() loads the image
                if orientation not in (None, 1):
                    notes.append(exif_note(orientation))
                if im.mode != "RGB":
                    notes.append(f"converted {im.mode} to RGB")
                    im = _to_rgb(im)
                else:
                    im = im.copy()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(path, f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
        reason = str(e).split("\n")[0][:160]
        if "truncated" in reason.lower():
            reason = "truncated file"
        raise ImageError(path, f"unreadable: {reason}") from None
    return im, ("; ".join(notes) or None)


EXIF_ORIENTATION = 0x0112  # the EXIF tag: 1 = as stored, 2-8 = mirrored and/or rotated
EXIF_MODES = ("ignore", "apply")


def exif_orientation(im: Image.Image) -> int | None:
    """The image's EXIF orientation (1-8), or None without one (or with a malformed EXIF block)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a malformed EXIF block: Pillow raises many kinds
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def exif_note(orientation: int) -> str:
    return f"EXIF orientation {orientation} ignored, as the authors' code does"


def upright(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation (a photo taken sideways is scored as it is shown)."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block: the pixels as stored
        return im


def decode(path: str | Path, exif: str = "ignore", **options) -> tuple[Image.Image, str | None]:
    """`load_rgb` (same options and errors) with a choice of EXIF orientation: "ignore" (the
    authors' decode; noted where the orientation is not 1) or "apply" (the image turned upright,
    noted as applied)."""
    if exif not in EXIF_MODES:
        raise ValueError(f"exif must be one of {EXIF_MODES}, got {exif!r}")
    im, note = load_rgb(path, **options)
    orientation = exif_orientation(im) if exif == "apply" else None
    if orientation in (None, 1):
        return im, note
    notes = [n for n in (note or "").split("; ") if n and n != exif_note(orientation)]
    notes.append(f"EXIF orientation {orientation} applied")
    return upright(im), "; ".join(notes)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB")


def jpeg_pixels(path: str | Path, exif: str = "ignore"):
    """((3, H, W) uint8 tensor, note or None) for an ordinary RGB JPEG, decoded by torchvision's
    libjpeg-turbo decoder: the pixels `load_rgb` gives (tested equal, byte for byte) in about
    three quarters of the time. None wherever anything is unusual (another format or mode, a
    size outside the limits, EXIF orientation to apply, any decoder error or warning): the caller
    then uses `load_rgb`, whose pixels, notes and errors are the reference."""
    import torch

    path = Path(path)
    if path.suffix.lower() not in _FORMAT_EXT["JPEG"]:
        return None
    try:
        from torchvision.io import decode_jpeg  # deprecated from torchvision 0.29 (TorchCodec's); PIL without it
        with Image.open(path) as im:  # the header only
            w, h = im.size
            if im.format != "JPEG" or im.mode != "RGB" or w * h > MAX_PIXELS or min(w, h) < MIN_SIDE:
                return None
            orientation = exif_orientation(im)
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a libjpeg warning (corrupt data): PIL's path decides
            warnings.simplefilter("ignore", DeprecationWarning)
            x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except Exception:  # noqa: BLE001 - load_rgb reports it
        return None
    if tuple(x.shape) != (3, h, w):
        return None
    if orientation in (None, 1):
        return x, None
    return (x, exif_note(orientation)) if exif == "ignore" else None
