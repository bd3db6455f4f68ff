"""Built-in synthetic datasets: small photo-like datasets whose ground truth is known.

They exist so that every path of the harness (loaders, training, evaluation, the leaderboard)
can run on a laptop CPU in minutes, and so that a model's result can be read against two
ceilings that are known exactly, which no real dataset offers.

The three layouts are written byte-for-byte in the published formats of the real datasets
(TAD66K, AVA, FLICKR-AES), and the registered datasets `synth-tad66k`, `synth-ava` and
`synth-flickr-aes` read them back with the *real* loaders: nothing downstream knows it is
looking at synthetic data.

The generative model
--------------------
Each image has a theme (10 of the 47 TAD66K theme names, see `THEMES`, drawn uniformly) and
seven photographic attributes drawn independently of the theme:

- composition: the subject on a rule-of-thirds point, centred, or cut by an edge;
- exposure in [-1, 1] (a gain of 2**(1.1 * exposure)), saturation in [-1, 1] (chroma gain
  2**saturation), global blur in [0, 1] (camera shake / missed focus), background blur
  ("bokeh", depth of field, subject kept sharp) in [0, 1], sensor noise in [0, 1], and the hue
  of the subject's accent colour relative to the theme's dominant hue, whose harmony is
  |cos(offset)| (analogous or complementary colours are harmonious, 90 degrees clashes).

The picture is painted from these: a theme-specific scene (palette, background and subject
shapes: snow fields, night skylines, boats at sea, a portrait...) with the subject where the
composition puts it, then the attributes are applied to the pixels. The latent quality is a
sum of one term per attribute whose weights and optima depend on the theme (`ThemeRule`):
dark exposure is good at night and bright exposure good in snow, saturation helps food and
flowers but hurts portraits, background blur flatters portraits and spoils cityscapes,
centred subjects suit portraits and food but not landscapes. Every term is centred (mean zero
over the attribute distribution), so a theme's average quality is its `base`.

Labels: an image-level "crowd" deviation the pixels cannot explain (normal, `CROWD_NOISE`
quality units) is added to the latent quality, and the sum is mapped to the dataset's scale
(`SCALE_MAP`, chosen to resemble the real label distributions). TAD66K gets the mean score
(2 decimals, with the sampling noise of ~1,200-1,600 raters); AVA gets a 10-bin histogram of
100-250 votes drawn around it; FLICKR-AES gets integer 1-5 ratings from 5 workers per image,
each worker with their own taste (per-attribute weight multipliers, a personal liking for
saturation, a preferred exposure, a bias).

Ceilings (written into the card, measured on the dataset's own test split; FLICKR-AES: on all
images, since its test workers are chosen by the loader):

- `ceiling_latent_srcc`: SRCC of the latent score vs the labels: what a perfect model reaches;
- `ceiling_theme_blind_srcc`: SRCC of the Bayes-optimal theme-blind predictor, E[latent |
  attributes] = the theme rules averaged over the theme prior: what a model that reads every
  attribute perfectly but ignores the theme reaches.

`tests/test_synthetic.py` asserts, at n=400 seed 0: latent ceiling in [0.80, 0.98] for TAD66K
and AVA ([0.65, 0.95] for FLICKR-AES, whose labels are means of five coarse ratings),
theme-blind ceiling in [0.40, 0.85], and a gap of at least 0.10 between them.

FLICKR-AES workers
------------------
As in the real dataset, a test worker's images are removed from training, so the test workers
together must touch a small share of the images. Workers therefore form panels of `PANEL_SIZE`
and each image is rated by 5 of its panel's 6 (or 7) workers: one worker rates about 5/6 of a panel's
images (about 170 at the defaults, n=2,000 and 60 workers = 10 panels, like the real test
workers' 105-171). `synth-flickr-aes` asks the loader for `suggested_test_workers(workers)` =
workers // 30 test workers (2 at the defaults: about 10-17 % of the images, leaving 58 training
workers). The real protocol's 37 test workers with ~100+ images each needs the same shape at
scale: `workers=1110, n=25000` (185 panels), about 12 times the default generation time.

Determinism: everything is drawn from numpy Generators seeded with (seed, stream, index), and
JPEGs are written with fixed Pillow settings and no metadata, so the same seed gives
byte-identical files (the images given the same Pillow/libjpeg build; the labels do not depend on
the codec at all). Image i's attributes and pixels depend only on (seed, i), not on n.
"""
from __future__ import annotations

import colorsys
import dataclasses
import difflib
import json
import math
import os
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .. import paths
from ..errors import ConfigError, DatasetNotFoundError, IAAError, LabelFileError, UnknownNameError
from ..registry import DatasetInfo, register_dataset

#: Bump when any change alters the generated bytes; it is part of the cache folder's name.
GENERATOR_VERSION = 1
LAYOUTS = ("tad66k", "ava", "flickr-aes")
DEFAULT_N = {"tad66k": 2000, "ava": 2000, "flickr-aes": 2000}
MIN_N = 50  # below this the test split is too small to rank anything (< 10 images)
MAX_N = 200_000  # AVA ids are drawn from 1..999,999
TEST_FRACTION = 0.2
CARD_NAME = "synthetic_card.json"

CROWD_NOISE = 0.45  # sd of the image-level deviation no pixel explains, in quality units
#: latent quality q -> native score: centre + spread * q (then the layout's rater model)
SCALE_MAP = {"tad66k": (5.4, 1.2), "ava": (5.4, 0.6), "flickr-aes": (3.0, 0.5)}

COMPOSITIONS = ("thirds", "centre", "edge")
COMPOSITION_PRIOR = (0.4, 0.35, 0.25)
JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False, "progressive": False}
LONG_SIDE = (160, 192)
SHORT_SIDE_MIN = 128

PANEL_SIZE = 6
RATERS_PER_IMAGE = 5
DEFAULT_WORKERS = 60


# --- attributes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attributes:
    """What the image shows and how it was shot; the latent score is a function of these."""

    theme: str
    composition: str  # thirds | centre | edge
    exposure: float  # [-1, 1]
    saturation: float  # [-1, 1]
    blur: float  # [0, 1] whole image
    bokeh: float  # [0, 1] background only
    noise: float  # [0, 1]
    hue_offset: float  # [0, 1) turns between the accent colour and the theme's dominant hue

    @property
    def harmony(self) -> float:
        return abs(math.cos(2 * math.pi * self.hue_offset))


def sample_attributes(rng: np.random.Generator) -> Attributes:
    theme = THEME_NAMES[int(rng.integers(len(THEME_NAMES)))]
    return Attributes(
        theme=theme,
        composition=COMPOSITIONS[int(rng.choice(3, p=COMPOSITION_PRIOR))],
        exposure=float(rng.uniform(-1, 1)),
        saturation=float(rng.uniform(-1, 1)),
        blur=float(rng.uniform(0, 1)),
        bokeh=float(rng.uniform(0, 1)),
        noise=float(rng.uniform(0, 1)),
        hue_offset=float(rng.uniform(0, 1)),
    )


# --- painting -----------------------------------------------------------------------------


def _rgb(c) -> np.ndarray:
    return np.asarray(c, dtype=np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return _rgb(colorsys.hsv_to_rgb(h % 1.0, s, v))


class _Mask:
    """A shape's coverage (values in [0, 1]) inside its bounding window `ys, xs` of the canvas:
    painting touches only that window, which keeps small shapes cheap."""

    def __init__(self, ys: slice, xs: slice, m: np.ndarray):
        self.ys, self.xs, self.m = ys, xs, m

    def times(self, full: np.ndarray) -> "_Mask":
        """This shape restricted by a full-canvas pattern (windows of a building, ...)."""
        return _Mask(self.ys, self.xs, self.m * full[self.ys, self.xs])


class _Canvas:
    """Pixel grids and soft-edged shape masks (1-px anti-aliasing)."""

    def __init__(self, h: int, w: int):
        self.h, self.w, self.s = h, w, min(h, w)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5

    def region(self, x0, y0, x1, y1):
        """(ys, xs, Y, X): the pixel window covering [x0, x1] x [y0, y1], and its coordinates."""
        ys = slice(int(np.clip(math.floor(y0) - 1, 0, self.h)), int(np.clip(math.ceil(y1) + 2, 0, self.h)))
        xs = slice(int(np.clip(math.floor(x0) - 1, 0, self.w)), int(np.clip(math.ceil(x1) + 2, 0, self.w)))
        return ys, xs, self.yy[ys, xs], self.xx[ys, xs]

    def full(self, m: np.ndarray) -> _Mask:
        return _Mask(slice(None), slice(None), m)

    def disc(self, cx, cy, r) -> _Mask:
        ys, xs, y, x = self.region(cx - r, cy - r, cx + r, cy + r)
        return _Mask(ys, xs, np.clip(r - np.hypot(x - cx, y - cy) + 0.5, 0, 1))

    def ellipse(self, cx, cy, rx, ry) -> _Mask:
        ys, xs, y, x = self.region(cx - rx, cy - ry, cx + rx, cy + ry)
        d = np.hypot((x - cx) / rx, (y - cy) / ry)
        return _Mask(ys, xs, np.clip((1 - d) * min(rx, ry) + 0.5, 0, 1))

    def rect(self, x0, y0, x1, y1) -> _Mask:
        ys, xs, y, x = self.region(x0, y0, x1, y1)
        fx = np.clip(np.minimum(x - x0, x1 - x) + 0.5, 0, 1)
        fy = np.clip(np.minimum(y - y0, y1 - y) + 0.5, 0, 1)
        return _Mask(ys, xs, fx * fy)

    def vgrad(self, *stops):
        """Vertical gradient through (position 0..1 from the top, colour) stops."""
        pos = [p for p, _ in stops]
        t = self.yy[:, :1] / self.h
        cols = [np.interp(t, pos, [float(c[k]) for _, c in stops]) for k in range(3)]
        return np.broadcast_to(np.concatenate(cols, axis=1)[:, None, :], (self.h, self.w, 3)).astype(np.float32)

    def texture(self, rng, cells: int, amp: float):
        """Low-frequency noise (H, W, 1): bilinear upsampling of a cells x cells grid."""
        g = rng.normal(0, amp, size=(cells, cells)).astype(np.float32)
        up = Image.fromarray(g, mode="F").resize((self.w, self.h), Image.BILINEAR)
        return np.asarray(up, dtype=np.float32)[..., None]


class _Layer:
    """Premultiplied-alpha layer: painting a shape is the 'over' operator."""

    def __init__(self, cv: _Canvas, rgb: np.ndarray | None = None):
        self.rgb = np.zeros((cv.h, cv.w, 3), np.float32) if rgb is None else np.array(rgb, np.float32)
        self.a = np.zeros((cv.h, cv.w, 1), np.float32) if rgb is None else np.ones((cv.h, cv.w, 1), np.float32)

    def paint(self, mask: _Mask, color, alpha: float = 1.0):
        m = (mask.m * np.float32(alpha))[..., None]
        rgb, a = self.rgb[mask.ys, mask.xs], self.a[mask.ys, mask.xs]
        self.rgb[mask.ys, mask.xs] = rgb + m * (np.asarray(color, np.float32) - rgb)
        self.a[mask.ys, mask.xs] = a + m * (1 - a)


# Each painter gets (canvas, rng, subject centre cx cy in pixels, accent colour) and returns
# (background layer, subject layer): background blur (bokeh) applies to the first only.


def _paint_snow(cv, rng, cx, cy, accent):
    s = cv.s
    horizon = float(np.clip(cy - 0.2 * s, 0.2 * cv.h, 0.7 * cv.h))
    bg = _Layer(cv, cv.vgrad((0, (0.74, 0.8, 0.9)), (horizon / cv.h, (0.88, 0.9, 0.96)),
                             (min(1.0, horizon / cv.h + 0.01), (0.96, 0.97, 0.99)), (1, (0.86, 0.9, 0.97))))
    bg.rgb += cv.texture(rng, 6, 0.02) * (cv.yy[..., None] > horizon)
    for _ in range(int(rng.integers(3, 8))):  # distant firs on the horizon
        x, hh = rng.uniform(0, cv.w), rng.uniform(0.06, 0.14) * s
        ys, xs, y, xx = cv.region(x - 0.4 * hh, horizon - hh, x + 0.4 * hh, horizon + 1)
        tri = np.clip((y - (horizon - hh)) / hh, 0, 1) * 0.35 * hh - np.abs(xx - x)
        bg.paint(_Mask(ys, xs, np.clip(tri + 0.5, 0, 1) * (y < horizon + 1)), (0.22, 0.3, 0.3))
    fg = _Layer(cv)
    fg.paint(cv.rect(cx - 0.03 * s, cy + 0.08 * s, cx + 0.03 * s, cy + 0.2 * s), (0.15, 0.15, 0.18))
    fg.paint(cv.ellipse(cx, cy + 0.02 * s, 0.065 * s, 0.11 * s), accent)
    fg.paint(cv.disc(cx, cy - 0.12 * s, 0.045 * s), (0.88, 0.72, 0.62))
    return bg, fg


def _paint_night(cv, rng, cx, cy, accent):
    s = cv.s
    bg = _Layer(cv, cv.vgrad((0, (0.01, 0.01, 0.06)), (1, (0.07, 0.07, 0.16))))
    stars = rng.random((cv.h, cv.w)) < 0.004
    bg.paint(cv.full(stars.astype(np.float32)), (0.85, 0.85, 0.8))
    x = 0.0
    while x < cv.w:  # skyline with lit windows
        bw, bh = rng.uniform(0.08, 0.2) * cv.w, rng.uniform(0.12, 0.35) * cv.h
        box = cv.rect(x, cv.h - bh, x + bw, cv.h + 1)
        bg.paint(box, (0.03, 0.03, 0.05))
        lit = ((cv.xx.astype(int) % 6 < 2) & (cv.yy.astype(int) % 7 < 2)).astype(np.float32)
        bg.paint(box.times(lit * (rng.random((cv.h, cv.w)) < 0.4)), (0.95, 0.8, 0.4))
        x += bw
    fg = _Layer(cv)
    fg.paint(cv.disc(cx, cy, 0.22 * s), accent, alpha=0.25)  # halo
    fg.paint(cv.disc(cx, cy, 0.13 * s), accent, alpha=0.4)
    fg.paint(cv.disc(cx, cy, 0.08 * s), 0.5 + 0.5 * np.asarray(accent))
    return bg, fg


def _paint_sea(cv, rng, cx, cy, accent):
    s = cv.s
    horizon = float(np.clip(cy + 0.02 * s, 0.15 * cv.h, 0.85 * cv.h))
    t = horizon / cv.h
    bg = _Layer(cv, cv.vgrad((0, (0.5, 0.68, 0.88)), (t, (0.82, 0.88, 0.95)), (min(1.0, t + 0.005), (0.1, 0.32, 0.52)),
                             (1, (0.03, 0.18, 0.35))))
    waves = 0.5 + 0.5 * np.sin(cv.yy * rng.uniform(0.7, 1.1) + np.sin(cv.xx * 0.09) * 2)
    bg.rgb += (waves[..., None] * 0.06 * (cv.yy[..., None] > horizon)).astype(np.float32)
    fg = _Layer(cv)
    fg.paint(cv.rect(cx - 0.14 * s, cy - 0.01 * s, cx + 0.14 * s, cy + 0.05 * s), accent)
    hh = 0.3 * s  # sail: a right triangle on the mast
    ys, xs, y, x = cv.region(cx, cy - 0.02 * s - hh, cx + 0.2 * s, cy)
    tri = np.minimum((y - (cy - 0.02 * s - hh)) / hh * 0.2 * s - (x - cx), x - cx)
    fg.paint(_Mask(ys, xs, np.clip(tri + 0.5, 0, 1) * (y < cy - 0.015 * s)), (0.97, 0.96, 0.92))
    return bg, fg


def _paint_flower(cv, rng, cx, cy, accent):
    s = cv.s
    bg = _Layer(cv, np.broadcast_to(_hsv(0.3, 0.65, 0.32), (cv.h, cv.w, 3)))
    bg.rgb += cv.texture(rng, 8, 0.06)
    for _ in range(12):  # leaves
        bg.paint(cv.ellipse(rng.uniform(0, cv.w), rng.uniform(0, cv.h), rng.uniform(0.05, 0.12) * s,
                            rng.uniform(0.02, 0.05) * s), _hsv(0.28, 0.6, rng.uniform(0.35, 0.6)))
    fg = _Layer(cv)
    fg.paint(cv.rect(cx - 0.015 * s, cy, cx + 0.015 * s, cv.h + 1), (0.15, 0.4, 0.12))
    k = int(rng.integers(6, 9))
    phase = rng.uniform(0, 2 * math.pi)
    for j in range(k):
        a = phase + 2 * math.pi * j / k
        fg.paint(cv.disc(cx + 0.09 * s * math.cos(a), cy + 0.09 * s * math.sin(a), 0.065 * s), accent)
    fg.paint(cv.disc(cx, cy, 0.05 * s), (0.95, 0.8, 0.2))
    return bg, fg


def _paint_sunset(cv, rng, cx, cy, accent):
    s = cv.s
    horizon = rng.uniform(0.6, 0.78)
    bg = _Layer(cv, cv.vgrad((0, (0.3, 0.18, 0.42)), (horizon * 0.6, (0.9, 0.42, 0.25)), (horizon, (1.0, 0.78, 0.4)),
                             (1, (0.9, 0.6, 0.35))))
    bg.paint(cv.disc(rng.uniform(0.2, 0.8) * cv.w, horizon * cv.h, 0.12 * s), (1.0, 0.92, 0.6))
    hills = horizon * cv.h + 0.04 * s * np.sin(cv.xx / cv.w * rng.uniform(3, 7) + rng.uniform(0, 6))
    bg.paint(cv.full(np.clip(cv.yy - hills + 0.5, 0, 1)), (0.08, 0.04, 0.08))
    fg = _Layer(cv)  # a hot-air balloon
    fg.paint(cv.rect(cx - 0.025 * s, cy + 0.12 * s, cx + 0.025 * s, cy + 0.16 * s), (0.25, 0.15, 0.1))
    fg.paint(cv.ellipse(cx, cy, 0.09 * s, 0.11 * s), accent)
    return bg, fg


def _paint_city(cv, rng, cx, cy, accent):
    s = cv.s
    bg = _Layer(cv, cv.vgrad((0, (0.58, 0.63, 0.72)), (1, (0.8, 0.82, 0.86))))
    windows = ((cv.xx.astype(int) % 5 < 2) & (cv.yy.astype(int) % 6 < 3)).astype(np.float32)
    x = -rng.uniform(0, 20)
    while x < cv.w:
        bw, bh, g = rng.uniform(0.1, 0.22) * cv.w, rng.uniform(0.3, 0.75) * cv.h, rng.uniform(0.3, 0.6)
        box = cv.rect(x, cv.h - bh, x + bw, cv.h + 1)
        bg.paint(box, (g, g, g * 1.05))
        bg.paint(box.times(windows), (g * 0.6, g * 0.65, g * 0.75))
        x += bw + rng.uniform(0, 6)
    fg = _Layer(cv)  # the subject: a coloured tower
    tower = cv.rect(cx - 0.08 * s, cy - 0.25 * s, cx + 0.08 * s, cv.h + 1)
    fg.paint(tower, accent)
    fg.paint(tower.times(windows), 0.55 * np.asarray(accent) + 0.3)
    return bg, fg


def _paint_portrait(cv, rng, cx, cy, accent):
    s = cv.s
    bg = _Layer(cv, cv.vgrad((0, _hsv(0.55, 0.25, 0.6)), (1, _hsv(0.55, 0.3, 0.35))))
    for _ in range(10):  # background lights: sharp dots, or round blobs once blurred
        bg.paint(cv.disc(rng.uniform(0, cv.w), rng.uniform(0, cv.h), rng.uniform(0.02, 0.05) * s),
                 (0.9, 0.88, 0.75), alpha=0.5)
    fg = _Layer(cv)
    fg.paint(cv.ellipse(cx, cy + 0.36 * s, 0.3 * s, 0.2 * s), accent)  # shoulders
    fg.paint(cv.rect(cx - 0.05 * s, cy + 0.05 * s, cx + 0.05 * s, cy + 0.2 * s), (0.82, 0.64, 0.52))
    fg.paint(cv.ellipse(cx, cy - 0.03 * s, 0.15 * s, 0.18 * s), (0.22, 0.13, 0.08))  # hair
    fg.paint(cv.ellipse(cx, cy + 0.01 * s, 0.12 * s, 0.155 * s), (0.88, 0.7, 0.58))  # face
    for ex in (-0.045, 0.045):
        fg.paint(cv.disc(cx + ex * s, cy - 0.01 * s, 0.015 * s), (0.1, 0.07, 0.06))
    return bg, fg


def _paint_food(cv, rng, cx, cy, accent):
    s = cv.s
    bg = _Layer(cv, np.broadcast_to(_rgb((0.47, 0.31, 0.18)), (cv.h, cv.w, 3)))
    grain = np.sin(cv.xx * rng.uniform(0.3, 0.6) + np.sin(cv.yy * 0.05) * 3)
    bg.rgb += (grain[..., None] * 0.04).astype(np.float32) + cv.texture(rng, 5, 0.03)
    fg = _Layer(cv)
    fg.paint(cv.disc(cx, cy, 0.27 * s), (0.82, 0.82, 0.8))  # plate rim
    fg.paint(cv.disc(cx, cy, 0.23 * s), (0.95, 0.95, 0.93))
    for _ in range(int(rng.integers(3, 6))):
        a, r = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.12) * s
        fg.paint(cv.disc(cx + r * math.cos(a), cy + r * math.sin(a), rng.uniform(0.05, 0.08) * s), accent)
    for _ in range(4):  # garnish
        a, r = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.15) * s
        fg.paint(cv.disc(cx + r * math.cos(a), cy + r * math.sin(a), 0.02 * s), (0.2, 0.55, 0.15))
    return bg, fg


def _paint_tree(cv, rng, cx, cy, accent):
    s = cv.s
    ground = float(min(cv.h - 2.0, cy + 0.3 * s))
    t = ground / cv.h
    bg = _Layer(cv, cv.vgrad((0, (0.45, 0.66, 0.9)), (t, (0.75, 0.85, 0.95)), (min(1.0, t + 0.01), (0.3, 0.56, 0.2)),
                             (1, (0.2, 0.45, 0.14))))
    bg.rgb += cv.texture(rng, 10, 0.04) * (cv.yy[..., None] > ground)
    fg = _Layer(cv)
    fg.paint(cv.rect(cx - 0.03 * s, cy, cx + 0.03 * s, ground + 1), (0.35, 0.22, 0.12))
    for _ in range(6):
        fg.paint(cv.disc(cx + rng.normal(0, 0.08) * s, cy + rng.normal(-0.03, 0.05) * s, rng.uniform(0.1, 0.15) * s),
                 _hsv(0.3, 0.7, rng.uniform(0.35, 0.5)))
    for _ in range(14):  # blossoms / fruit
        fg.paint(cv.disc(cx + rng.normal(0, 0.12) * s, cy + rng.normal(-0.03, 0.09) * s, 0.018 * s), accent)
    return bg, fg


def _paint_sky(cv, rng, cx, cy, accent):
    s = cv.s
    bg = _Layer(cv, cv.vgrad((0, (0.22, 0.42, 0.82)), (1, (0.62, 0.78, 0.95))))
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.uniform(0, cv.w), rng.uniform(0, cv.h)
        for _ in range(5):
            bg.paint(cv.ellipse(x + rng.normal(0, 0.08) * s, y + rng.normal(0, 0.03) * s, rng.uniform(0.07, 0.14) * s,
                                rng.uniform(0.04, 0.07) * s), (0.97, 0.97, 0.98), alpha=0.85)
    fg = _Layer(cv)  # a kite and its tail
    for k in range(1, 6):
        fg.paint(cv.disc(cx + 0.03 * k * s, cy + 0.05 * k * s + 0.1 * s, 0.012 * s), (0.2, 0.2, 0.25))
    ys, xs, y, x = cv.region(cx - 0.09 * s, cy - 0.13 * s, cx + 0.09 * s, cy + 0.13 * s)
    kite = 1 - np.abs(x - cx) / (0.09 * s) - np.abs(y - cy) / (0.13 * s)
    fg.paint(_Mask(ys, xs, np.clip(kite * 0.09 * s + 0.5, 0, 1)), accent)
    return bg, fg


# --- theme rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class ThemeRule:
    """How one theme is painted and judged. Weights are in latent-quality units."""

    name: str
    hue: float  # the dominant hue of the scene (turns); the reference for colour harmony
    paint: Callable
    base: float  # the theme's average quality
    exposure_best: float  # optimal exposure; the penalty is exposure_weight * distance**2
    saturation: float  # + : vivid is good
    blur: float  # penalty per unit of global blur
    bokeh: float  # + : a blurred background is good, - : the scene should be sharp throughout
    noise: float  # penalty per unit of noise
    composition: tuple[float, float, float]  # thirds, centre, edge
    harmony: float
    exposure_weight: float = 1.5


_LANDSCAPE = (0.6, -0.2, -0.8)
THEMES: tuple[ThemeRule, ...] = (
    ThemeRule("snow", 0.6, _paint_snow, 0.0, 0.6, -0.4, 1.0, -0.4, 1.0, (0.5, -0.2, -0.8), 0.4),
    ThemeRule("night", 0.65, _paint_night, 0.3, -0.6, 0.3, 0.6, -0.2, 0.3, (0.5, -0.1, -0.8), 0.4),
    ThemeRule("sea", 0.57, _paint_sea, 0.0, 0.1, 0.4, 1.0, -0.6, 1.0, _LANDSCAPE, 0.4),
    ThemeRule("flower", 0.3, _paint_flower, 0.0, 0.1, 0.8, 1.0, 0.9, 1.0, (0.4, 0.5, -0.8), 1.0),
    ThemeRule("sunset", 0.07, _paint_sunset, 0.3, -0.3, 0.7, 0.6, 0.0, 0.8, _LANDSCAPE, 0.6),
    ThemeRule("city", 0.6, _paint_city, -0.2, 0.0, 0.0, 1.2, -0.8, 0.8, _LANDSCAPE, 0.4),
    ThemeRule("portrait", 0.55, _paint_portrait, 0.0, 0.1, -0.7, 0.8, 1.1, 1.0, (0.3, 0.6, -1.0), 0.5),
    ThemeRule("food", 0.08, _paint_food, -0.1, 0.2, 0.9, 1.0, 0.7, 1.0, (0.2, 0.6, -0.8), 0.8),
    ThemeRule("tree", 0.3, _paint_tree, 0.0, 0.0, 0.4, 1.0, -0.3, 1.0, _LANDSCAPE, 0.4),
    ThemeRule("sky", 0.6, _paint_sky, 0.0, 0.2, 0.4, 0.6, 0.0, 1.0, _LANDSCAPE, 0.4),
)
THEME_NAMES = tuple(t.name for t in THEMES)
_RULES = {t.name: t for t in THEMES}

# Moments of the attribute distribution, used to centre each term (exact, not estimated).
_E_HARMONY = 2 / math.pi  # E|cos(U)| for a uniform angle
_VAR_EXPOSURE = 1 / 3  # uniform on [-1, 1]


TERMS = ("exposure", "saturation", "blur", "bokeh", "noise", "composition", "harmony")


def quality_terms(rule: ThemeRule, a: Attributes) -> dict[str, float]:
    """One centred term per attribute: each has mean zero over the attribute distribution."""
    comp_mean = sum(p * w for p, w in zip(COMPOSITION_PRIOR, rule.composition))
    return {
        "exposure": -rule.exposure_weight * ((a.exposure - rule.exposure_best) ** 2
                                             - (_VAR_EXPOSURE + rule.exposure_best ** 2)),
        "saturation": rule.saturation * a.saturation,
        "blur": -rule.blur * (a.blur - 0.5),
        "bokeh": rule.bokeh * (a.bokeh - 0.5),
        "noise": -rule.noise * (a.noise - 0.5),
        "composition": rule.composition[COMPOSITIONS.index(a.composition)] - comp_mean,
        "harmony": rule.harmony * (a.harmony - _E_HARMONY),
    }


def latent_quality(a: Attributes) -> float:
    """The quality a perfect model would predict (theme known)."""
    rule = _RULES[a.theme]
    return rule.base + sum(quality_terms(rule, a).values())


def theme_blind_quality(a: Attributes) -> float:
    """E[latent quality | attributes] when the theme is unknown: the theme rules averaged over
    the (uniform) theme prior. Attributes are drawn independently of the theme, so this is the
    Bayes-optimal predictor of the latent score from the attributes alone."""
    return sum(latent_quality(dataclasses.replace(a, theme=t)) for t in THEME_NAMES) / len(THEME_NAMES)


# --- one image ----------------------------------------------------------------------------


def _subject_position(rng, composition: str, w: int, h: int) -> tuple[float, float]:
    if composition == "thirds":
        fx, fy = rng.choice([1 / 3, 2 / 3]), rng.choice([1 / 3, 2 / 3])
    elif composition == "centre":
        fx, fy = 0.5, 0.5
    else:  # cut by an edge
        if rng.random() < 0.5:
            fx, fy = rng.choice([0.04, 0.96]), rng.uniform(0.3, 0.7)
        else:
            fx, fy = rng.uniform(0.3, 0.7), rng.choice([0.05, 0.95])
    return (fx + rng.normal(0, 0.015)) * w, (fy + rng.normal(0, 0.015)) * h


def _image_size(rng) -> tuple[int, int]:
    long = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    short = max(SHORT_SIDE_MIN, round(long / rng.uniform(1.0, 1.5)))
    return (long, short) if rng.random() < 0.7 else (short, long)  # (width, height)


def render(a: Attributes, rng: np.random.Generator) -> Image.Image:
    """Paint the theme's scene with its subject where the composition says, then apply the
    photographic attributes to the pixels."""
    from scipy.ndimage import gaussian_filter  # imported here: importing iaabench stays quick

    rule = _RULES[a.theme]
    w, h = _image_size(rng)
    cv = _Canvas(h, w)
    cx, cy = _subject_position(rng, a.composition, w, h)
    accent = _hsv(rule.hue + a.hue_offset, 0.75, 0.85)
    bg, fg = rule.paint(cv, rng, cx, cy, accent)
    scale = cv.s / 160
    back = gaussian_filter(bg.rgb, sigma=(3.5 * a.bokeh * scale, 3.5 * a.bokeh * scale, 0))
    img = back * (1 - fg.a) + fg.rgb
    gray = img @ _rgb((0.299, 0.587, 0.114))
    img = gray[..., None] + 2.0 ** a.saturation * (img - gray[..., None])
    img = img * 2.0 ** (1.1 * a.exposure)
    sigma = 1.8 * a.blur * scale
    img = gaussian_filter(img, sigma=(sigma, sigma, 0))
    img = img + rng.normal(0, 0.09 * a.noise, size=img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")


@dataclass
class _Item:
    index: int
    attrs: Attributes
    quality: float  # latent
    crowd: float  # the image's deviation no pixel explains
    name: str


def _make_item(seed: int, i: int, out_images: Path, name: str) -> _Item:
    """Draw image i (from its own generator: it depends on (seed, i) only) and write its JPEG."""
    rng = np.random.default_rng([seed, 0, i])
    a = sample_attributes(rng)
    crowd = float(rng.normal(0, CROWD_NOISE))
    render(a, rng).save(out_images / name, **JPEG_SETTINGS)
    return _Item(i, a, latent_quality(a), crowd, name)


# --- names --------------------------------------------------------------------------------

_SYLLABLES = ("la", "yos", "pic", "sby", "ja", "net", "fee", "fo", "ar", "gstu", "dios", "ble", "mai", "re", "jill",
              "black", "fix", "ed", "fo", "cal", "len", "gth", "photo", "max", "lu", "na", "kai", "ro", "sven", "ta")


def _tad66k_names(rng, n: int) -> list[str]:
    """Flickr-style `<user><photo id>.jpg`; about a third of users are NSIDs with an `@`."""
    names, seen = [], set()
    while len(names) < n:
        if rng.random() < 0.35:
            user = f"{rng.integers(10_000_000, 99_999_999)}@N0{rng.integers(0, 9)}"
        else:
            user = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            if rng.random() < 0.2:
                user += "-" + str(rng.choice(_SYLLABLES))
        name = f"{user}{rng.integers(1_000_000_000, 9_999_999_999)}.jpg"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _flickr_names(rng, n: int) -> list[str]:
    names, seen = [], set()
    while len(names) < n:
        secret = "".join(rng.choice(list("0123456789abcdef"), size=10))
        name = f"farm{rng.integers(1, 10)}_{rng.integers(1, 9999)}_{rng.integers(10_000_000, 99_999_999_999)}_{secret}.jpg"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _worker_ids(rng, k: int) -> list[str]:
    alphabet = list(string.ascii_uppercase + string.digits)
    ids: list[str] = []
    while len(ids) < k:
        wid = "A" + "".join(rng.choice(alphabet, size=int(rng.integers(12, 14))))
        if wid not in ids:
            ids.append(wid)
    return ids


# --- layouts ------------------------------------------------------------------------------

_LAYOUT_CODE = {"tad66k": 1, "ava": 2, "flickr-aes": 3}


def _split_test(rng, n: int) -> np.ndarray:
    """Boolean mask of the test images: a seeded choice of round(n * TEST_FRACTION)."""
    test = np.zeros(n, bool)
    test[rng.choice(n, size=round(n * TEST_FRACTION), replace=False)] = True
    return test


def _write_lines(path: Path, lines: list[str], newline: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(line + newline for line in lines))


def _score_text(x: float) -> str:
    """Up to two decimals, as the TAD66K files print them (5.0, 5.25)."""
    return repr(round(float(x), 2))


def _generate(layout: str, n: int, seed: int, out: Path, workers: int, tick: Callable[[], None]) -> dict:
    """Write one dataset into `out` (an empty folder); return the card."""
    from scipy.stats import spearmanr

    code = _LAYOUT_CODE[layout]
    grng = np.random.default_rng([seed, 1, code])
    if layout == "tad66k":
        names = _tad66k_names(grng, n)
    elif layout == "ava":
        ids = grng.choice(np.arange(1000, 1_000_000), size=n + max(1, n // 200), replace=False)
        names = [f"{int(v)}.jpg" for v in ids[:n]]
    else:
        names = _flickr_names(grng, n)
    test = _split_test(grng, n)
    (out / "images").mkdir(parents=True)
    items = []
    for i in range(n):
        items.append(_make_item(seed, i, out / "images", names[i]))
        tick()
    centre, spread = SCALE_MAP[layout]
    if layout == "tad66k":
        labels, counts = _write_tad66k(out, items, test, seed, centre, spread)
    elif layout == "ava":
        labels, counts = _write_ava(out, items, test, seed, centre, spread, ids[n:])
    else:
        labels, counts = _write_flickr(out, items, seed, centre, spread, workers)
    where = test if layout != "flickr-aes" else np.ones(n, bool)
    lab = np.asarray(labels)[where]
    latent = np.asarray([it.quality for it in items])[where]
    blind = np.asarray([theme_blind_quality(it.attrs) for it in items])[where]
    card = {
        "schema": 1,
        "generator": "iaabench.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "layout": layout,
        "dataset": f"synth-{layout}",
        "n": n,
        "seed": seed,
        "scale": list(_SCALES[layout]),
        "counts": counts,
        "themes": list(THEME_NAMES),
        "image_sides": [SHORT_SIDE_MIN, LONG_SIDE[1]],
        "jpeg_quality": JPEG_SETTINGS["quality"],
        "ceiling_split": "test" if layout != "flickr-aes" else "all",
        "ceiling_n": int(where.sum()),
        "ceiling_latent_srcc": round(float(spearmanr(latent, lab)[0]), 4),
        "ceiling_theme_blind_srcc": round(float(spearmanr(blind, lab)[0]), 4),
        "description": _DESCRIPTIONS[layout],
    }
    if layout == "flickr-aes":
        card["workers"] = workers
        card["suggested_test_workers"] = suggested_test_workers(workers)
    return card


def _write_tad66k(out, items, test, seed, centre, spread):
    rng = np.random.default_rng([seed, 2, _LAYOUT_CODE["tad66k"]])
    labels = []
    for it in items:
        raters = int(rng.integers(1200, 1600))
        score = centre + spread * (it.quality + it.crowd) + rng.normal(0, 1.4 / math.sqrt(raters))
        labels.append(float(_score_text(np.clip(score, 1.0, 10.0))))
    # The real quirk, on a small scale: some merged-test images of two themes are listed under
    # unmerge/train (TAD66K: 478 test images, tree and flower); their theme still comes from there.
    moved = set()
    for theme in ("tree", "flower"):
        cands = [it.index for it in items if test[it.index] and it.attrs.theme == theme]
        if cands:
            k = max(1, math.ceil(0.25 * len(cands)))
            moved.update(int(v) for v in rng.choice(cands, size=k, replace=False))
    order = rng.permutation(len(items))  # the real files are not sorted
    header = "image,score"
    for split in ("train", "test"):
        rows = [f"{items[j].name},{_score_text(labels[j])}" for j in order if test[j] == (split == "test")]
        _write_lines(out / "merge" / f"{split}.csv", [header] + rows, "\r\n")
        for theme in THEME_NAMES:
            listed = [j for j in order if items[j].attrs.theme == theme
                      and (test[j] and j not in moved) == (split == "test")]
            rows = [f"{items[j].name},{_score_text(labels[j])}" for j in listed]
            _write_lines(out / "unmerge" / split / f"{theme}.csv", [header] + rows, "\r\n")
    counts = {"train": int((~test).sum()), "test": int(test.sum()), "test_listed_under_unmerge_train": len(moved)}
    return labels, counts


def _write_ava(out, items, test, seed, centre, spread, missing_ids):
    rng = np.random.default_rng([seed, 2, _LAYOUT_CODE["ava"]])
    tag_of = {t: k + 1 for k, t in enumerate(THEME_NAMES)}
    _write_lines(out / "tags.txt", [f"{tag_of[t]} {t.capitalize()}" for t in THEME_NAMES], "\n")
    challenges = {t: [2 * tag_of[t] - 1, 2 * tag_of[t]] for t in THEME_NAMES}
    _write_lines(out / "challenges.txt",
                 [f"{c} {t.capitalize()}_{'I' * (j + 1)}" for t in THEME_NAMES for j, c in enumerate(challenges[t])], "\n")
    ratings = np.arange(1, 11)
    lines, labels = [], []
    for it in items:
        mu = centre + spread * (it.quality + it.crowd)
        sd = rng.uniform(1.1, 1.7)
        p = np.exp(-0.5 * ((ratings - mu) / sd) ** 2)
        votes = rng.multinomial(int(rng.integers(100, 251)), p / p.sum())
        labels.append(float((votes * ratings).sum() / votes.sum()))
        tag1 = tag_of[it.attrs.theme] if rng.random() < 0.85 else 0
        tag2 = int(rng.integers(1, len(THEME_NAMES) + 1)) if rng.random() < 0.2 else 0
        challenge = challenges[it.attrs.theme][int(rng.integers(2))]
        lines.append(f"{it.index + 1} {it.name[:-4]} {' '.join(map(str, votes))} {tag1} {tag2} {challenge}")
    _write_lines(out / "AVA.txt", lines, "\n")
    # generic_test.jpgl lists a few ids that AVA.txt lacks, as the real one does (20,000 listed,
    # 19,930 present): a loader must keep only the ids it has.
    test_ids = [items[j].name[:-4] for j in np.flatnonzero(test)] + [str(int(v)) for v in missing_ids]
    _write_lines(out / "aesthetics_image_lists" / "generic_test.jpgl", [test_ids[j] for j in rng.permutation(len(test_ids))], "\n")
    counts = {"train": int((~test).sum()), "test": int(test.sum()), "test_ids_missing_from_ava_txt": len(missing_ids)}
    return labels, counts


def suggested_test_workers(workers: int) -> int:
    """Test workers for the seeded worker split: each claims ~1/panels of the images."""
    return max(1, workers // 30)


def _write_flickr(out, items, seed, centre, spread, workers):
    rng = np.random.default_rng([seed, 2, _LAYOUT_CODE["flickr-aes"]])
    ids = _worker_ids(np.random.default_rng([seed, 3, _LAYOUT_CODE["flickr-aes"]]), workers)
    panels = max(1, workers // PANEL_SIZE)
    members = [[w for w in range(workers) if w % panels == p] for p in range(panels)]
    # A worker's taste: how much each attribute matters to them, a personal liking for vivid
    # colour, a preferred exposure, a bias, and how noisy their ratings are.
    taste = {
        "weights": rng.normal(1.0, 0.45, size=(workers, len(TERMS))),
        "vivid": rng.normal(0.0, 0.3, size=workers),
        "exposure_shift": rng.normal(0.0, 0.25, size=workers),
        "bias": rng.normal(0.0, 0.35, size=workers),
        "noise": rng.uniform(0.3, 0.6, size=workers),
    }
    by_worker: dict[int, list[tuple[str, int]]] = {w: [] for w in range(workers)}
    means = []
    for it in items:
        raters = rng.choice(members[int(rng.integers(panels))], size=RATERS_PER_IMAGE, replace=False)
        rule, got = _RULES[it.attrs.theme], []
        for w in sorted(int(v) for v in raters):
            a = dataclasses.replace(it.attrs, exposure=it.attrs.exposure - taste["exposure_shift"][w])
            terms = quality_terms(rule, a)
            q = rule.base + sum(m * terms[k] for m, k in zip(taste["weights"][w], TERMS))
            q += taste["vivid"][w] * it.attrs.saturation
            x = centre + spread * (q + it.crowd) + taste["bias"][w] + rng.normal(0, taste["noise"][w])
            r = int(np.clip(np.rint(x), 1, 5))
            by_worker[w].append((it.name, r))
            got.append(r)
        means.append(sum(got) / len(got))
    rows = [f"{ids[w]}, {name}, {r}" for w in range(workers) for name, r in by_worker[w]]
    _write_lines(out / "FLICKR-AES_image_labeled_by_each_worker.csv", ["worker, imagePair, score"] + rows, "\n")
    _write_lines(out / "FLICKR-AES_image_score.txt", [f"{it.name} {repr(round(m, 4))}" for it, m in zip(items, means)], "\n")
    counts = {"images": len(items), "workers": workers, "panels": panels, "ratings": len(rows)}
    return means, counts


_SCALES = {"tad66k": (1.0, 10.0), "ava": (1.0, 10.0), "flickr-aes": (1.0, 5.0)}
_DESCRIPTIONS = {
    "tad66k": "synthetic TAD66K layout: 10 themes with theme-specific aesthetic rules; mean scores 1-10",
    "ava": "synthetic AVA layout: 10-bin vote histograms (100-250 votes) around a latent score",
    "flickr-aes": "synthetic FLICKR-AES layout: 1-5 ratings from workers with their own taste",
}


# --- writing a dataset safely -------------------------------------------------------------


def _summary(root: Path) -> str | None:
    """What `iaabench datasets` shows of a generated copy: version, seed, counts, ceilings."""
    card = read_card(root)
    if not card:
        return None
    counts = ", ".join(f"{k} {v}" for k, v in card.get("counts", {}).items())
    return (f"generator v{card.get('generator_version')}, seed {card.get('seed')}, {counts}; test-split SRCC "
            f"ceilings: latent {card.get('ceiling_latent_srcc', float('nan')):.3f}, theme-blind "
            f"{card.get('ceiling_theme_blind_srcc', float('nan')):.3f}")


def read_card(root: str | Path) -> dict | None:
    """The card of a synthetic dataset folder, or None when `root` holds none."""
    path = Path(root) / CARD_NAME
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelFileError(path, getattr(e, "lineno", None), f"unreadable synthetic dataset card: {e}",
                             "delete the folder and generate it again") from None
    if not isinstance(card, dict) or card.get("layout") not in LAYOUTS:
        raise LabelFileError(path, None, "not a synthetic dataset card (no valid 'layout')")
    return card


def _check_args(layout: str, n: int | None, seed: int, workers: int | None) -> tuple[int, int]:
    if layout not in LAYOUTS:
        close = difflib.get_close_matches(str(layout), LAYOUTS, n=1, cutoff=0.4)
        hint = (f"did you mean {close[0]}? " if close else "") + f"valid layouts: {', '.join(LAYOUTS)}"
        raise ConfigError(f"unknown synthetic layout '{layout}'", hint)
    n = DEFAULT_N[layout] if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"n must be a whole number of images, got {n!r}")
    if n <= 0:
        raise ConfigError(f"n must be a positive number of images, got {n}")
    if n < MIN_N:
        raise ConfigError(f"n={n} is too small: the test split would hold only {round(n * TEST_FRACTION)} images",
                          f"use n >= {MIN_N}")
    if n > MAX_N:
        raise ConfigError(f"n={n} is too large for a synthetic dataset (at most {MAX_N})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative whole number, got {seed!r}")
    if workers is not None and layout != "flickr-aes":
        raise ConfigError(f"workers= applies to the flickr-aes layout only, not '{layout}'")
    workers = DEFAULT_WORKERS if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 2 * PANEL_SIZE:
        raise ConfigError(f"workers must be a whole number >= {2 * PANEL_SIZE} (two panels of {PANEL_SIZE}: "
                          f"a test worker's panel must not be the only one), got {workers!r}")
    return int(n), int(workers)


def _same_dataset(card: dict | None, layout: str, n: int, seed: int, workers: int) -> bool:
    return (card is not None and card.get("generator_version") == GENERATOR_VERSION and card.get("layout") == layout
            and card.get("n") == n and card.get("seed") == seed
            and (layout != "flickr-aes" or card.get("workers") == workers))


def make_synthetic(layout: str, out: str | Path, n: int | None = None, seed: int = 0, force: bool = False,
                   progress: bool = True, workers: int | None = None) -> dict:
    """Generate a synthetic dataset in the real `layout`'s format into `out`; return its card.

    `out` must not exist, be empty, or already hold this very dataset (same generator version,
    layout, n, seed: then nothing is written and its card is returned). With `force`, an
    existing synthetic dataset in `out` is replaced, but only once the new one is complete;
    folders that are not synthetic datasets are never deleted. The data is written into a
    temporary sibling folder and renamed into place, so `out` never holds a half-written dataset.
    `workers` (FLICKR-AES only) sets the number of workers, in panels of `PANEL_SIZE`.
    """
    n, workers = _check_args(layout, n, seed, workers)
    out = Path(out).expanduser()
    old_card = None
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out} exists and is not a folder", "choose a new or empty folder for --out")
        old_card = read_card(out) if (out / CARD_NAME).exists() else None
        if _same_dataset(old_card, layout, n, seed, workers) and not force:
            return old_card
        if any(out.iterdir()):
            if old_card is None:
                raise ConfigError(f"{out} exists and holds other files (it is not a synthetic dataset)",
                                  "choose a new or empty folder for --out; it is never deleted, even with --force")
            if not force:
                raise ConfigError(f"{out} already holds a different synthetic dataset ({old_card.get('layout')}, "
                                  f"n={old_card.get('n')}, seed={old_card.get('seed')})",
                                  "pass --force to replace it, or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with _Progress(progress, f"synth-{layout}: {n} images -> {out}", n) as tick:
            card = _generate(layout, n, seed, tmp, workers, tick)
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if not force and out.exists() and any(out.iterdir()):
            # Someone else filled `out` meanwhile (two processes generating the same cache entry).
            theirs = read_card(out)
            if _same_dataset(theirs, layout, n, seed, workers):
                return theirs
            raise ConfigError(f"{out} was filled by another process while this dataset was generated")
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return card


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an old dataset there is removed only afterwards."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the old one back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Progress:
    """A rich progress bar (on stderr) when asked for; a no-op tick otherwise."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True))
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False


# --- registered datasets ------------------------------------------------------------------


def cache_path(layout: str, n: int | None = None, seed: int = 0, workers: int | None = None) -> Path:
    """Where the registered dataset keeps its generated copy."""
    n, workers = _check_args(layout, n, seed, workers if layout == "flickr-aes" else None)
    extra = f"-w{workers}" if layout == "flickr-aes" and workers != DEFAULT_WORKERS else ""
    return paths.cache_dir() / "synthetic" / f"{layout}-v{GENERATOR_VERSION}-n{n}-s{seed}{extra}"


def ensure(layout: str, n: int | None = None, seed: int = 0, workers: int | None = None,
           progress: bool = True) -> Path:
    """The cached dataset's folder, generated first if it is not there yet."""
    path = cache_path(layout, n, seed, workers)
    if read_card(path) is None:
        make_synthetic(layout, path, n=n, seed=seed, progress=progress, workers=workers if layout == "flickr-aes" else None)
    return path


def _real_loader(layout: str):
    if layout == "tad66k":
        from . import tad66k as mod
    elif layout == "ava":
        from . import ava as mod
    else:
        from . import flickr_aes as mod
    return mod.load


def _make_loader(layout: str, splits: tuple[str, ...]):
    name = f"synth-{layout}"

    def load(root: Path | None = None, split: str = splits[0], images: Path | None = None, strict: bool = False,
             n: int | None = None, seed: int | None = None, workers: int | None = None, progress: bool = True,
             **options):
        if split not in splits:
            raise UnknownNameError(f"dataset '{name}' has no split '{split}'", f"its splits: {', '.join(splits)}")
        if root is None:
            root = ensure(layout, n, seed or 0, workers, progress)
        card = read_card(root)
        if card is None or card.get("layout") != layout:
            raise DatasetNotFoundError(f"{root} is not a synthetic {layout} dataset (no {CARD_NAME} for it)",
                                       f"make one with `iaabench data make-synthetic --layout {layout} --out DIR`")
        asked = {"n": n, "seed": seed, "workers": workers}
        differ = [f"{k}={v} (the folder has {card.get(k)})" for k, v in asked.items() if v is not None and v != card.get(k)]
        if differ:
            raise ConfigError(f"{root} holds another synthetic dataset than asked for: {', '.join(differ)}",
                              "leave out root= to use the cache, or generate that dataset into another folder")
        real_split = split
        if layout == "flickr-aes" and split == "workers":
            # The real `workers` split is the 37 PIAA test workers of FLICKR-AES, who do not exist
            # here (the generator draws its own worker ids): the synthetic `workers` split is the
            # real loader's seeded draw (`workers-random`) of the card's suggested number.
            real_split = "workers-random"
            options.setdefault("test_workers", card["suggested_test_workers"])
        ds = _real_loader(layout)(Path(root), split=real_split, images=images, strict=strict, **options)
        if real_split != split:
            ds = dataclasses.replace(ds, split=split, manifest={**ds.manifest, "name": split,
                                                                "read_as": f"{layout} split {real_split}"})
        manifest = dict(ds.manifest)
        manifest["synthetic"] = {k: card[k] for k in ("generator_version", "layout", "n", "seed")}
        return dataclasses.replace(ds, dataset=name, manifest=manifest)

    load.__doc__ = f"Load `{name}`: generated into the cache on first use, read by the real {layout} loader."
    return load


def _locate(layout: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        path = cache_path(layout)
        try:
            return path if read_card(path) is not None else None
        except IAAError:
            return None

    return locate


_OPTIONS = {"n": "number of images (default {n})", "seed": "generator seed (default 0)"}


def _options(layout: str) -> dict[str, str]:
    opts = {k: v.format(n=DEFAULT_N[layout]) for k, v in _OPTIONS.items()}
    if layout == "flickr-aes":
        opts["workers"] = f"number of workers, panels of {PANEL_SIZE} (default {DEFAULT_WORKERS})"
        opts["test_workers"] = "test workers of the seeded worker split (default workers // 30)"
    return opts


_SPLITS = {"tad66k": ("official",), "ava": ("official",), "flickr-aes": ("workers",)}

for _layout in LAYOUTS:
    register_dataset(DatasetInfo(
        name=f"synth-{_layout}",
        loader=_make_loader(_layout, _SPLITS[_layout]),
        splits=_SPLITS[_layout],
        scale=_SCALES[_layout],
        has_votes=_layout == "ava",
        description=_DESCRIPTIONS[_layout] + " (generated on first use)",
        locate=_locate(_layout),
        themes=_layout == "tad66k",
        options=_options(_layout),
        summary=_summary,
    ))
