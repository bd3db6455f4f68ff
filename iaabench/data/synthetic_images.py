"""The shared image generator of the synthetic datasets (`data/synthetic.py`): attributes, the
painted scenes, the theme rules and the latent quality. Every layout's writer uses it.

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
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

CROWD_NOISE = 0.45  # sd of the image-level deviation no pixel explains, in quality units

COMPOSITIONS = ("thirds", "centre", "edge")
COMPOSITION_PRIOR = (0.4, 0.35, 0.25)
JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False, "progressive": False}
LONG_SIDE = (160, 192)
SHORT_SIDE_MIN = 128
#: The smallest and largest `long_side` of photo-size images (AVA and TAD66K photos: about 800 px).
MIN_LONG_SIDE, MAX_LONG_SIDE = 256, 4096


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


def _image_size(rng, long_side: int | None = None) -> tuple[int, int]:
    """(width, height): the default small size, or the same shape with its long side `long_side`."""
    long = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    short = max(SHORT_SIDE_MIN, round(long / rng.uniform(1.0, 1.5)))
    if long_side is not None:
        long, short = long_side, round(short * long_side / long)
    return (long, short) if rng.random() < 0.7 else (short, long)  # (width, height)


def _photo_detail(cv: _Canvas, rng: np.random.Generator, bg: "_Layer", fg: "_Layer") -> None:
    """Photographic detail for photo-size images: surface texture at every scale (1/f noise,
    as in foliage, fabric, stone), fine edges (grass, twigs, wires) in the background, and
    texture on the subject. Without it a large painted scene is flat and its JPEG is a
    fraction of a photo's weight."""
    octaves = [c for c in (6, 16, 48, 128, 384) if c <= cv.s // 2]
    shade = sum(cv.texture(rng, c, 0.05 * (6 / c) ** 0.35) for c in octaves)
    fine = rng.normal(0, 0.02, size=(cv.h, cv.w, 1)).astype(np.float32)
    bg.rgb += shade + fine + cv.texture(rng, 24, 0.02) * rng.normal(0, 1, size=(1, 1, 3)).astype(np.float32)
    for _ in range(int(rng.integers(60, 140))):  # thin strokes: grass, twigs, wires
        x0, y0 = rng.uniform(0, cv.w), rng.uniform(0, cv.h)
        ang, length = rng.uniform(0, math.pi), rng.uniform(0.02, 0.15) * cv.s
        x1, y1 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
        ys, xs, y, x = cv.region(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        d = np.hypot(x - x0 - t * dx, y - y0 - t * dy)
        tone = float(rng.uniform(-0.25, 0.25))
        bg.paint(_Mask(ys, xs, np.clip(rng.uniform(0.6, 1.6) - d, 0, 1)), np.clip(bg.rgb[ys, xs].mean((0, 1)) + tone, 0, 1),
                 alpha=0.7)
    fg.rgb += fg.a * (0.6 * shade + 0.7 * fine)


def render(a: Attributes, rng: np.random.Generator, long_side: int | None = None) -> Image.Image:
    """Paint the theme's scene with its subject where the composition says, then apply the
    photographic attributes to the pixels. `long_side` (None: the default small images) makes a
    photo-size image of that long side, with photographic detail (`_photo_detail`) and sensor
    grain, whose JPEG weighs like a photo's."""
    from scipy.ndimage import gaussian_filter  # imported here: importing iaabench stays quick

    rule = _RULES[a.theme]
    w, h = _image_size(rng, long_side)
    cv = _Canvas(h, w)
    cx, cy = _subject_position(rng, a.composition, w, h)
    accent = _hsv(rule.hue + a.hue_offset, 0.75, 0.85)
    bg, fg = rule.paint(cv, rng, cx, cy, accent)
    if long_side is not None:
        _photo_detail(cv, rng, bg, fg)
    scale = cv.s / 160
    back = gaussian_filter(bg.rgb, sigma=(3.5 * a.bokeh * scale, 3.5 * a.bokeh * scale, 0))
    img = back * (1 - fg.a) + fg.rgb
    gray = img @ _rgb((0.299, 0.587, 0.114))
    img = gray[..., None] + 2.0 ** a.saturation * (img - gray[..., None])
    img = img * 2.0 ** (1.1 * a.exposure)
    sigma = 1.8 * a.blur * scale
    img = gaussian_filter(img, sigma=(sigma, sigma, 0))
    if long_side is None:
        img = img + rng.normal(0, 0.09 * a.noise, size=img.shape).astype(np.float32)
    else:  # `noise` at the grain of a default-size image (what a model sees after resizing), plus sensor grain
        from scipy.ndimage import zoom

        coarse = rng.normal(0, 0.09 * a.noise, size=(math.ceil(h / scale), math.ceil(w / scale), 3))
        img = img + zoom(coarse.astype(np.float32), (h / coarse.shape[0], w / coarse.shape[1], 1), order=1)[:h, :w]
        img = img + rng.normal(0, 0.006, size=img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")


def write_lines(path: Path, lines: list[str], newline: str) -> None:
    """Write a layout's text file: UTF-8, each line ended by `newline` (as the real files end theirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(line + newline for line in lines))
