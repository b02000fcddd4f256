"""Procedural preference items with exact ground truth (``mfpo synth``).

Each scene is a textured gradient background with 2-5 everyday objects (ball, cup,
car, house, tree, ...) drawn by PIL as small compositions of shapes, in named
colours, of varied sizes, possibly overlapping, under mild Gaussian grain. Every
scene yields one native-format item (:class:`mfpo.schemas.PreferenceItem`):

- ``annotations``: one per object, labelled with its noun (``"car"``); the colour is
  in the caption. Star and box (cube) carry their exact silhouette ``polygon``, the
  others a ``box``. Both are *exact* in the pixel convention of
  :mod:`mfpo.regions.masks`: the box is the tight box of the object's own pixels
  (``x1``/``y1`` exclusive), the polygon rasterises to exactly those pixels.
  Where objects overlap, the annotation still covers the *full* object, so its
  visible part is smaller; each object keeps at least ``min_visible`` of its pixels
  in view, and ``truth.jsonl`` records the visible fraction.
- ``chosen``: a faithful description (1-3 sentences from several templates) naming
  every object with its colour, a count when there are several, and a spatial
  relation such as "to the left of".
- ``rejected``: the same description with exactly one hallucination (a wrong
  object, a wrong colour or a wrong count), picked with the seed.

``truth.jsonl`` (keyed by ``id``) holds what the item schema has no room for: the
nouns present, per-object colour/box/visibility, and the hallucination's type and
detail. Everything is a pure function of ``(config, index)``, so the same seed
writes the same bytes, and scene ``i`` does not depend on ``n``.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from pydantic import Field, model_validator

from mfpo.config import ComponentConfig
from mfpo.images import encode_png
from mfpo.regions.masks import mask_box, polygon_to_mask
from mfpo.schemas import Annotation, PreferenceItem

RGB = tuple[int, int, int]
Point = tuple[int, int]
BoolMask = npt.NDArray[np.bool_]
HallucinationType = Literal["object", "attribute", "count"]

PALETTE: dict[str, RGB] = {
    "red": (214, 39, 40),
    "orange": (245, 128, 18),
    "yellow": (242, 204, 28),
    "green": (40, 158, 60),
    "blue": (34, 96, 204),
    "purple": (128, 58, 172),
    "pink": (238, 108, 170),
    "white": (246, 246, 246),
    "black": (32, 32, 36),
}
"""Object colours by name; the name is what captions say."""

_BACKGROUNDS: tuple[tuple[str, RGB, RGB], ...] = (
    ("warm", (236, 214, 186), (214, 180, 150)),
    ("cool", (196, 214, 232), (160, 182, 210)),
    ("soft", (222, 226, 204), (190, 200, 170)),
    ("pastel", (232, 206, 222), (200, 180, 214)),
    ("sandy", (230, 218, 178), (200, 184, 140)),
    ("misty", (206, 222, 218), (168, 194, 190)),
)
"""(caption word, light end, dark end). No palette colour names, so a background
never reads as an object's colour; every tone has unequal channels, so grey and
white objects never match it."""

_QUESTIONS = (
    "Describe this image in detail.",
    "What do you see in the picture?",
    "Can you describe the scene shown in this image?",
    "What objects are in this picture, and where are they?",
    "Give a detailed description of the image.",
    "What is happening in this scene?",
)

_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


# --------------------------------------------------------------------------- drawing


def _shade(c: RGB, f: float) -> RGB:
    """Darker (f < 1) version of a colour."""
    return (round(c[0] * f), round(c[1] * f), round(c[2] * f))


def _tint(c: RGB, f: float) -> RGB:
    """Colour mixed with white by fraction f."""
    return (round(c[0] + (255 - c[0]) * f), round(c[1] + (255 - c[1]) * f), round(c[2] + (255 - c[2]) * f))


def _scaled(w: int, h: int, *points: tuple[float, float]) -> list[tuple[float, float]]:
    """Points given as fractions of the patch (w, h), in patch pixels."""
    return [(x * w, y * h) for x, y in points]


_TRUNK: RGB = (112, 72, 36)
_GLASS: RGB = (176, 214, 238)
_STEM: RGB = (36, 110, 40)
_METAL: RGB = (70, 70, 78)

Silhouette: TypeAlias = list[Point] | None
"""A drawer's result: the object's exact outline polygon, or None (the mask is then its pixels)."""
Drawer = Callable[[ImageDraw.ImageDraw, int, int, RGB, np.random.Generator], Silhouette]
"""Draws one object filling a (w, h) RGBA patch (transparent elsewhere); returns its silhouette."""


def _draw_ball(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    d.ellipse((0, 0, w - 1, h - 1), fill=_shade(c, 0.72), outline=_shade(c, 0.45))
    inset = max(2, w // 14)
    d.ellipse((inset // 2, inset // 2, w - 1 - inset * 2, h - 1 - inset * 2), fill=c)
    d.ellipse((w * 0.2, h * 0.16, w * 0.42, h * 0.34), fill=_tint(c, 0.55))
    # a seam, so it reads as a ball rather than a disc
    d.arc((-w * 0.35, h * 0.08, w * 0.62, h * 0.92), -40, 40, fill=_shade(c, 0.5), width=max(1, w // 40))
    return None


def _draw_cup(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    bw = max(2, w // 14)
    d.ellipse((w * 0.52, h * 0.3, w - 1, h * 0.74), outline=_shade(c, 0.7), width=bw)  # handle
    d.polygon([(0, h * 0.12), (w * 0.72, h * 0.12), (w * 0.62, h - 1), (w * 0.1, h - 1)],
              fill=c, outline=_shade(c, 0.5))
    d.rectangle((w * 0.08, h * 0.8, w * 0.64, h * 0.86), fill=_shade(c, 0.8))  # band
    d.ellipse((0, 0, w * 0.72, h * 0.24), fill=_tint(c, 0.35), outline=_shade(c, 0.5))  # rim
    d.ellipse((w * 0.06, h * 0.04, w * 0.66, h * 0.2), fill=(92, 56, 30))  # coffee
    return None


def _draw_box(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    cx, cy = w // 2, h // 2
    q, r = h // 4, h - 1 - h // 4
    hexagon = [(cx, 0), (w - 1, q), (w - 1, r), (cx, h - 1), (0, r), (0, q)]
    d.polygon(hexagon, fill=_shade(c, 0.45), outline=_shade(c, 0.45))
    line = max(1, w // 60)
    d.polygon([(cx, 0), (w - 1, q), (cx, cy), (0, q)], fill=_tint(c, 0.3))  # top
    d.polygon([(0, q), (cx, cy), (cx, h - 1), (0, r)], fill=c)  # left
    d.polygon([(cx, cy), (w - 1, q), (w - 1, r), (cx, h - 1)], fill=_shade(c, 0.72))  # right
    for a, b in (((0, q), (cx, cy)), ((cx, cy), (w - 1, q)), ((cx, cy), (cx, h - 1))):
        d.line((a, b), fill=_shade(c, 0.45), width=line)
    d.line(((w * 0.25, q * 0.5), (w * 0.75, q * 1.5)), fill=_shade(c, 0.6), width=max(1, w // 24))  # tape
    return hexagon


def _draw_tree(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    d.rectangle((w * 0.42, h * 0.55, w * 0.58, h - 1), fill=_TRUNK, outline=_shade(_TRUNK, 0.6))
    leaf = _shade(c, 0.8)
    for x0, y0, x1, y1 in ((0, 0.22, 0.56, 0.66), (0.44, 0.22, 1.0, 0.66), (0.16, 0.0, 0.84, 0.5)):
        d.ellipse((x0 * (w - 1), y0 * h, x1 * (w - 1), y1 * h), fill=leaf, outline=_shade(c, 0.5))
    d.ellipse((w * 0.2, h * 0.06, w * 0.8, h * 0.56), fill=c)
    for _ in range(4):
        x, y = rng.uniform(0.25, 0.7) * w, rng.uniform(0.12, 0.45) * h
        d.ellipse((x, y, x + w * 0.08, y + h * 0.05), fill=_tint(c, 0.3))
    return None


def _draw_house(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    roof = _shade(c, 0.55)
    d.rectangle((w * 0.68, h * 0.08, w * 0.8, h * 0.36), fill=(120, 60, 50))  # chimney
    d.rectangle((w * 0.1, h * 0.45, w * 0.9, h - 1), fill=c, outline=_shade(c, 0.5))
    d.polygon([(0, h * 0.48), (w * 0.5, h * 0.04), (w - 1, h * 0.48)], fill=roof, outline=_shade(c, 0.35))
    d.rectangle((w * 0.42, h * 0.68, w * 0.58, h - 1), fill=(96, 60, 34))  # door
    for x0 in (0.18, 0.66):
        d.rectangle((w * x0, h * 0.56, w * (x0 + 0.16), h * 0.72), fill=_GLASS, outline=(60, 60, 60))
        d.line(((w * (x0 + 0.08), h * 0.56), (w * (x0 + 0.08), h * 0.72)), fill=(60, 60, 60))
    return None


def _draw_car(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    d.polygon(_scaled(w, h, (0.2, 0.4), (0.32, 0.02), (0.7, 0.02), (0.84, 0.4)),
              fill=_shade(c, 0.85), outline=_shade(c, 0.5))
    d.polygon(_scaled(w, h, (0.27, 0.38), (0.35, 0.1), (0.49, 0.1), (0.49, 0.38)), fill=_GLASS)
    d.polygon(_scaled(w, h, (0.53, 0.38), (0.53, 0.1), (0.67, 0.1), (0.78, 0.38)), fill=_GLASS)
    d.rounded_rectangle((0, h * 0.36, w - 1, h * 0.8), radius=max(1, int(h * 0.12)), fill=c,
                        outline=_shade(c, 0.5))
    d.ellipse((w * 0.92, h * 0.46, w * 0.99, h * 0.56), fill=(250, 232, 120))  # headlight
    r = h * 0.2
    for cx in (w * 0.22, w * 0.78):
        d.ellipse((cx - r, h - 1 - 2 * r, cx + r, h - 1), fill=(28, 28, 30))
        d.ellipse((cx - r * 0.45, h - 1 - r * 1.45, cx + r * 0.45, h - 1 - r * 0.55), fill=(160, 160, 168))
    return None


def _draw_star(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    turn = rng.uniform(-0.25, 0.25)
    cx, cy, outer = (w - 1) / 2, (h - 1) / 2 + h * 0.05, (min(w, h) - 1) / 2

    def star(radius: float) -> list[Point]:
        pts = []
        for k in range(10):
            rad = radius if k % 2 == 0 else radius * 0.45
            a = turn - math.pi / 2 + k * math.pi / 5
            x = min(w - 1, max(0, round(cx + rad * math.cos(a))))
            y = min(h - 1, max(0, round(cy + rad * math.sin(a))))
            pts.append((x, y))
        return pts

    silhouette = star(outer)
    d.polygon(silhouette, fill=c, outline=_shade(c, 0.5))
    d.polygon(star(outer * 0.5), fill=_tint(c, 0.35))
    return silhouette


def _draw_flower(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    d.line(((w * 0.5, h * 0.3), (w * 0.5, h - 1)), fill=_STEM, width=max(2, w // 12))
    d.ellipse((w * 0.5, h * 0.62, w - 1, h * 0.74), fill=_STEM)
    d.ellipse((0, h * 0.7, w * 0.5, h * 0.82), fill=_STEM)
    cx, cy, ring, pr = w * 0.5, h * 0.3, w * 0.3, w * 0.2
    for k in range(6):
        a = k * math.pi / 3
        px, py = cx + ring * math.cos(a), cy + ring * math.sin(a)
        d.ellipse((px - pr, py - pr, px + pr, py + pr), fill=c, outline=_shade(c, 0.6))
    heart = (150, 84, 24) if c == PALETTE["yellow"] else (250, 206, 40)
    d.ellipse((cx - pr, cy - pr, cx + pr, cy + pr), fill=heart, outline=_shade(heart, 0.7))
    return None


def _draw_fish(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    fin = _shade(c, 0.7)
    d.polygon([(w * 0.66, h * 0.5), (w - 1, h * 0.08), (w - 1, h * 0.92)], fill=fin, outline=_shade(c, 0.45))
    d.polygon([(w * 0.3, h * 0.2), (w * 0.5, 0), (w * 0.56, h * 0.22)], fill=fin)
    d.ellipse((0, h * 0.12, w * 0.74, h * 0.88), fill=c, outline=_shade(c, 0.45))
    for x in (0.36, 0.48):
        d.arc((w * x, h * 0.25, w * (x + 0.14), h * 0.75), -60, 60, fill=_shade(c, 0.6),
              width=max(1, w // 50))
    d.ellipse((w * 0.12, h * 0.32, w * 0.22, h * 0.48), fill=(250, 250, 250), outline=(20, 20, 20))
    d.ellipse((w * 0.145, h * 0.36, w * 0.195, h * 0.44), fill=(10, 10, 10))
    return None


def _draw_umbrella(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    d.pieslice((0, h * 0.06, w - 1, h * 0.94), 180, 360, fill=c, outline=_shade(c, 0.5))
    scallop = (w - 1) / 4
    for k in range(4):  # cut the rim into scallops (RGBA drawing replaces pixels, alpha included)
        x0 = k * scallop
        d.ellipse((x0, h * 0.44, x0 + scallop, h * 0.56), fill=(0, 0, 0, 0))
    for fx in (0.25, 0.5, 0.75):
        d.line(((w * 0.5, h * 0.07), (w * fx, h * 0.45)), fill=_shade(c, 0.6), width=max(1, w // 80))
    shaft = max(2, w // 28)
    d.line(((w * 0.5, 0), (w * 0.5, h * 0.86)), fill=_METAL, width=shaft)
    d.arc((w * 0.5 - w * 0.12, h * 0.76, w * 0.5 + 1, h - 1), 0, 180, fill=_METAL, width=shaft)  # J handle
    return None


def _draw_kite(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    top, right, bottom, left = (w * 0.5, 0), (w - 1, h * 0.3), (w * 0.5, h * 0.66), (0, h * 0.3)
    d.polygon([top, right, bottom, left], fill=c, outline=_shade(c, 0.45))
    d.polygon([top, (w * 0.5, h * 0.3), left], fill=_tint(c, 0.4))
    d.polygon([(w * 0.5, h * 0.3), right, bottom], fill=_shade(c, 0.75))
    d.line((top, bottom), fill=_shade(c, 0.45), width=max(1, w // 50))
    d.line((left, right), fill=_shade(c, 0.45), width=max(1, w // 50))
    tail = [(w * 0.5 + w * 0.12 * math.sin(k * 1.3), h * 0.66 + k * h * 0.034) for k in range(11)]
    d.line(tail, fill=_METAL, width=max(1, w // 60))
    bow = w * 0.07
    for x, y in tail[3::3]:
        d.polygon([(x - bow, y - bow * 0.6), (x + bow, y + bow * 0.6), (x + bow, y - bow * 0.6),
                   (x - bow, y + bow * 0.6)], fill=_shade(c, 0.6))
    return None


def _draw_balloon(d: ImageDraw.ImageDraw, w: int, h: int, c: RGB, rng: np.random.Generator) -> Silhouette:
    string = [(w * 0.5 + w * 0.1 * math.sin(k * 1.1), h * 0.74 + k * h * 0.0255) for k in range(11)]
    d.line(string, fill=_METAL, width=max(1, w // 50))
    d.polygon([(w * 0.42, h * 0.77), (w * 0.5, h * 0.7), (w * 0.58, h * 0.77)], fill=_shade(c, 0.7))  # knot
    d.ellipse((0, 0, w - 1, h * 0.72), fill=c, outline=_shade(c, 0.5))
    d.ellipse((w * 0.18, h * 0.1, w * 0.38, h * 0.28), fill=_tint(c, 0.5))
    return None


@dataclass(frozen=True)
class Kind:
    """An object kind: its caption noun, plural, patch aspect (w / h) and drawer."""

    noun: str
    plural: str
    aspect: float
    draw: Drawer
    polygon: bool = False
    """True when the drawer returns the exact silhouette polygon (used as the annotation)."""


KINDS: dict[str, Kind] = {
    k.noun: k
    for k in (
        Kind("ball", "balls", 1.0, _draw_ball),
        Kind("cup", "cups", 1.05, _draw_cup),
        Kind("box", "boxes", 0.9, _draw_box, polygon=True),
        Kind("tree", "trees", 0.72, _draw_tree),
        Kind("house", "houses", 1.0, _draw_house),
        Kind("car", "cars", 1.8, _draw_car),
        Kind("star", "stars", 1.0, _draw_star, polygon=True),
        Kind("flower", "flowers", 0.6, _draw_flower),
        Kind("fish", "fish", 1.6, _draw_fish),
        Kind("umbrella", "umbrellas", 1.0, _draw_umbrella),
        Kind("kite", "kites", 0.7, _draw_kite),
        Kind("balloon", "balloons", 0.62, _draw_balloon),
    )
}
"""Every object kind the generator can draw, by noun."""


def render_object(kind: Kind, size: int, color: RGB, rng: np.random.Generator) -> tuple[
        npt.NDArray[np.uint8], BoolMask, Silhouette]:
    """Draw one object into its own patch.

    ``size`` is the patch's longer side in pixels. Returns the RGB patch uint8
    (h, w, 3), the object's pixels bool (h, w) and, for polygon kinds, the
    silhouette polygon in patch pixels. For those the mask is exactly the polygon's
    rasterisation (:func:`mfpo.regions.masks.polygon_to_mask`): the drawer fills the
    silhouette first, and whatever detail strays outside it is clipped away.
    """
    if kind.aspect >= 1:
        w, h = size, max(8, round(size / kind.aspect))
    else:
        w, h = max(8, round(size * kind.aspect)), size
    patch = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    polygon = kind.draw(ImageDraw.Draw(patch), w, h, color, rng)
    rgba = np.asarray(patch)
    drawn = rgba[..., 3] > 0
    mask = drawn if polygon is None else polygon_to_mask(polygon, h, w)
    if not drawn[mask].all() or not mask.any():
        raise RuntimeError(f"drawer of {kind.noun!r} left silhouette pixels unpainted at size {size}")
    return np.ascontiguousarray(rgba[..., :3]), mask, polygon


# --------------------------------------------------------------------------- config


class SynthConfig(ComponentConfig):
    """Options of the procedural scene generator."""

    n: int = Field(default=200, ge=1, description="Number of scenes (items) to write.")
    width: int = Field(default=512, ge=64, le=8192, description="Image width in pixels.")
    height: int = Field(default=512, ge=64, le=8192, description="Image height in pixels.")
    seed: int = Field(default=0, ge=0, description="Seed; scene i is a pure function of (options, i).")
    min_objects: int = Field(default=2, ge=1, description="Fewest objects per scene.")
    max_objects: int = Field(default=5, ge=1, le=10, description="Most objects per scene.")
    kinds: tuple[str, ...] = Field(
        default=(), description="Object kinds to draw (nouns); empty means all: " + ", ".join(KINDS) + ".",
    )
    colors: tuple[str, ...] = Field(
        default=(), description="Colour names to use; empty means all: " + ", ".join(PALETTE) + "."
    )
    min_size: float = Field(
        default=0.18, gt=0.0, le=1.0, description="Smallest object size, as a fraction of min(width, height)."
    )
    max_size: float = Field(
        default=0.36, gt=0.0, le=1.0, description="Largest object size, as a fraction of min(width, height)."
    )
    repeat_prob: float = Field(
        default=0.3, ge=0.0, le=1.0,
        description="Chance that an object repeats a kind already in the scene (half of those also repeat "
        "its colour, giving counts such as 'two red balls').",
    )
    allow_overlap: bool = Field(default=True, description="Let objects overlap (bounded by min_visible).")
    min_visible: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Least fraction of each object's pixels left visible."
    )
    noise_std: float = Field(
        default=2.0, ge=0.0, le=50.0, description="Std of the Gaussian grain over the image, 0-255 units."
    )
    workers: int = Field(
        default=0, ge=0, le=64, description="Processes drawing scenes; 0 = one per CPU (at most 8). "
        "The output does not depend on it."
    )
    max_attempts: int = Field(default=200, ge=1, description="Placement tries per object before giving up.")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) > max_objects ({self.max_objects})")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) > max_size ({self.max_size})")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kind(s) {bad}; valid kinds: {', '.join(KINDS)}")
        bad = [c for c in self.colors if c not in PALETTE]
        if bad:
            raise ValueError(f"unknown colour(s) {bad}; valid colours: {', '.join(PALETTE)}")
        return self

    @property
    def kind_names(self) -> tuple[str, ...]:
        """The kinds in use (all of :data:`KINDS` when ``kinds`` is empty)."""
        return self.kinds or tuple(KINDS)

    @property
    def color_names(self) -> tuple[str, ...]:
        """The colour names in use (all of :data:`PALETTE` when ``colors`` is empty)."""
        return self.colors or tuple(PALETTE)


# --------------------------------------------------------------------------- scene


@dataclass
class SceneObject:
    """One placed object. ``box`` is (x0, y0, x1, y1), x1/y1 exclusive, full image pixels."""

    kind: str
    color: str
    x: int
    y: int
    patch: npt.NDArray[np.uint8]
    patch_mask: BoolMask
    polygon: list[Point] | None
    visible: float = 1.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = mask_box(self.patch_mask)
        return (x0 + self.x, y0 + self.y, x1 + self.x, y1 + self.y)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def full_mask(self, height: int, width: int) -> BoolMask:
        """bool (height, width): every pixel of the object, hidden or not."""
        out = np.zeros((height, width), dtype=bool)
        h, w = self.patch_mask.shape
        out[self.y:self.y + h, self.x:self.x + w] = self.patch_mask
        return out

    def annotation(self) -> Annotation:
        if self.polygon is not None:
            return Annotation(label=self.kind, polygon=[(float(x + self.x), float(y + self.y))
                                                        for x, y in self.polygon])
        return Annotation(label=self.kind, box=self.box)


def _pick_kinds_and_colors(
    config: SynthConfig, count: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Kinds and colour names of a scene's objects; some kinds repeat (for counts > 1)."""
    kinds, colors = config.kind_names, config.color_names
    picked: list[tuple[str, str]] = []
    for _ in range(count):
        if picked and rng.random() < config.repeat_prob:
            kind, color = picked[int(rng.integers(len(picked)))]
            if rng.random() < 0.5:  # same kind and colour: "two red balls"
                picked.append((kind, color))
                continue
        else:
            fresh = [k for k in kinds if k not in {p[0] for p in picked}] or list(kinds)
            kind = fresh[int(rng.integers(len(fresh)))]
        picked.append((kind, colors[int(rng.integers(len(colors)))]))
    return picked


def place_objects(config: SynthConfig, rng: np.random.Generator,
                  picked: Sequence[tuple[str, str]] | None = None) -> list[SceneObject]:
    """Draw and place a scene's objects, back to front.

    Each object lies fully inside the image. A candidate position is refused when it
    overlaps an earlier object and overlap is off, or when it would leave any earlier
    object with less than ``min_visible`` of its pixels in view. ``picked`` gives the
    (kind, colour) of every object to place, in drawing order (the hallucination
    testbed's co-occurrence priors choose them, :mod:`mfpo.testbed.world`); by default
    the count, kinds and colours are drawn here from ``config``.
    """
    width, height = config.width, config.height
    if picked is None:
        count = int(rng.integers(config.min_objects, config.max_objects + 1))
        picked = _pick_kinds_and_colors(config, count, rng)
    side = min(width, height)
    placed: list[SceneObject] = []
    full: list[BoolMask] = []
    cover = np.zeros((height, width), dtype=bool)
    for kind_name, color_name in picked:
        obj = None
        for _ in range(config.max_attempts):
            size = max(12, round(rng.uniform(config.min_size, config.max_size) * side))
            patch, pmask, polygon = render_object(KINDS[kind_name], size, PALETTE[color_name], rng)
            h, w = pmask.shape
            if w > width or h > height:
                continue
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            cand = SceneObject(kind_name, color_name, x, y, patch, pmask, polygon)
            mask = cand.full_mask(height, width)
            if not config.allow_overlap and (cover[y:y + h, x:x + w].any()):
                continue
            if _keeps_visible(full, mask, config.min_visible):
                obj = cand
                break
        if obj is None:
            if len(placed) >= config.min_objects:
                break
            raise ValueError(
                f"could not place {config.min_objects} objects in {width}x{height} after "
                f"{config.max_attempts} tries each; lower min_objects or max_size, raise the image size, "
                "allow overlap or lower min_visible"
            )
        placed.append(obj)
        full.append(obj.full_mask(height, width))
        h, w = obj.patch_mask.shape
        cover[obj.y:obj.y + h, obj.x:obj.x + w] = True
    _set_visibility(placed, full)
    return placed


def _keeps_visible(earlier: Sequence[BoolMask], new: BoolMask, min_visible: float) -> bool:
    """True when, with ``new`` on top, every earlier mask keeps ``min_visible`` of its pixels."""
    hidden_by_later = np.zeros_like(new)
    for mask in reversed(earlier):
        hidden = hidden_by_later | new
        if (mask & ~hidden).sum() < min_visible * mask.sum():
            return False
        hidden_by_later |= mask
    return True


def _set_visibility(objects: Sequence[SceneObject], masks: Sequence[BoolMask]) -> None:
    later = np.zeros_like(masks[0]) if masks else None
    for obj, mask in zip(reversed(objects), reversed(masks), strict=True):
        assert later is not None
        obj.visible = float((mask & ~later).sum() / mask.sum())
        later |= mask


def render_background(config: SynthConfig, rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], str]:
    """A textured gradient, float32 (H, W, 3) in 0-255, and its caption word.

    Linear gradient between two tones of one family at a random angle, a low-frequency
    blotch texture (bilinear upsampling of a coarse random grid) and, half the time, a
    slightly darker floor band. The texture moves all channels together, so the
    tone's unequal channels (never grey) are kept.
    """
    width, height = config.width, config.height
    word, light, dark = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    angle = rng.uniform(0, 2 * math.pi)
    gx = (np.arange(width, dtype=np.float32) / width - 0.5) * np.float32(math.cos(angle))
    gy = (np.arange(height, dtype=np.float32) / height - 0.5) * np.float32(math.sin(angle))
    proj = gy[:, None] + gx[None, :]
    t = ((proj - proj.min()) / max(1e-6, float(proj.max() - proj.min())))[..., None]
    lo, hi = np.asarray(light, np.float32), np.asarray(dark, np.float32)
    img = lo + (hi - lo) * t
    coarse = rng.uniform(-1.0, 1.0, size=(6, 6)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    img += 9.0 * blotch[..., None]
    if rng.random() < 0.5:
        floor = int(height * rng.uniform(0.6, 0.78))
        img[floor:] *= np.float32(0.93)
    return img, word


def _grain(height: int, width: int, std: float, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Monochrome Gaussian grain float32 (H, W, 1), std ``std`` in 0-255 units (zeros when 0).

    One value per pixel for all three channels, like film grain (and a third of the
    random draws of per-channel noise).
    """
    if std <= 0:
        return np.zeros((height, width, 1), np.float32)
    return rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(std)


def _to_uint8(img: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class Group:
    """Objects of one kind and colour, as a caption mentions them."""

    kind: str
    color: str
    count: int

    def phrase(self) -> str:
        """'a red ball', 'an orange cup', 'two red balls'."""
        noun = KINDS[self.kind].noun if self.count == 1 else KINDS[self.kind].plural
        if self.count == 1:
            return f"{_article(self.color)} {self.color} {noun}"
        return f"{_number(self.count)} {self.color} {noun}"

    def name(self) -> str:
        """'red ball' (for 'the red ball')."""
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Relation:
    """Group ``a`` is ``words`` group ``b`` (indexes into the group list)."""

    a: int
    b: int
    words: str


@dataclass(frozen=True)
class Wording:
    """The template choices of one caption; the rejected answer reuses them."""

    intro: int
    relation: int
    closing: int | None
    background: str


_INTROS = (
    "The picture shows {list}.",
    "In this scene, there {be} {list}.",
    "This image contains {list}.",
    "I can see {list} in the picture.",
    "The scene features {list}.",
)
_RELATIONS = (
    "The {a} is {rel} the {b}.",
    "The {a} sits {rel} the {b}.",
    "You can spot the {a} {rel} the {b}.",
    "Notice that the {a} appears {rel} the {b}.",
)
_CLOSINGS = (
    "The background is a {bg} gradient with a subtle texture.",
    "Everything is set against a {bg}, slightly textured background.",
    "The objects rest on a {bg} background.",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _number(n: int) -> str:
    return _COUNT_WORDS[n] if n < len(_COUNT_WORDS) else str(n)


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def group_objects(objects: Sequence[SceneObject]) -> list[Group]:
    """Objects grouped by (kind, colour), ordered left to right by the group's leftmost object."""
    first_x: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for o in objects:
        key = (o.kind, o.color)
        counts[key] = counts.get(key, 0) + 1
        first_x[key] = min(first_x.get(key, math.inf), o.center[0])
    return [Group(k, c, counts[(k, c)]) for k, c in sorted(counts, key=lambda key: (first_x[key], key))]


def find_relation(
    objects: Sequence[SceneObject], groups: Sequence[Group], rng: np.random.Generator
) -> Relation | None:
    """A clear spatial relation between two single-object groups, or None.

    "a to the left of b" needs a's box to end before b's centre and a's centre to lie
    before b's box; likewise for "above"/"below" vertically (boxes of full objects).
    """
    single = {(o.kind, o.color): o for o in objects
              if next(g for g in groups if (g.kind, g.color) == (o.kind, o.color)).count == 1}
    index = {(g.kind, g.color): i for i, g in enumerate(groups)}
    found: list[Relation] = []
    for ka, a in single.items():
        for kb, b in single.items():
            if ka == kb:
                continue
            _, _, ax1, ay1 = a.box
            bx0, by0, _, _ = b.box
            (acx, acy), (bcx, bcy) = a.center, b.center
            if ax1 <= bcx and acx <= bx0:
                found.append(Relation(index[ka], index[kb], "to the left of"))
            elif ay1 <= bcy and acy <= by0:
                found.append(Relation(index[ka], index[kb], "above"))
    if not found:
        return None
    rel = found[int(rng.integers(len(found)))]
    if rng.random() < 0.5:  # say it the other way round half the time
        flipped = {"to the left of": "to the right of", "above": "below"}[rel.words]
        rel = Relation(rel.b, rel.a, flipped)
    return rel


def describe(groups: Sequence[Group], relation: Relation | None, wording: Wording) -> str:
    """The caption of a scene: intro listing every group, relation, closing remark."""
    be = "is" if groups[0].count == 1 else "are"
    sentences = [_INTROS[wording.intro].format(list=_join([g.phrase() for g in groups]), be=be)]
    if relation is not None:
        a, b = groups[relation.a], groups[relation.b]
        sentences.append(_RELATIONS[wording.relation].format(a=a.name(), rel=relation.words, b=b.name()))
    if wording.closing is not None:
        sentences.append(_CLOSINGS[wording.closing].format(bg=wording.background))
    return " ".join(sentences)


@dataclass(frozen=True)
class Hallucination:
    """The one change that turns the chosen caption into the rejected one."""

    type: HallucinationType
    noun: str
    before: str | int
    after: str | int

    @property
    def detail(self) -> str:
        if self.type == "object":
            return f"{self.before} -> {self.after}"
        return f"{self.noun}: {self.before} -> {self.after}"


def hallucinate(groups: Sequence[Group], relation: Relation | None, rng: np.random.Generator) -> tuple[
        list[Group], Hallucination]:
    """Change one group: its kind to an absent one, its colour, or its count (+-1)."""
    present = {g.kind for g in groups}
    absent = [k for k in KINDS if k not in present]
    types: list[HallucinationType] = ["attribute", "count"]
    if absent:
        types.insert(0, "object")
    kind: HallucinationType = types[int(rng.integers(len(types)))]
    out = list(groups)
    if kind == "count":  # prefer a group the relation sentence does not name
        named = set() if relation is None else {relation.a, relation.b}
        choices = [i for i in range(len(groups)) if i not in named] or list(range(len(groups)))
    else:
        choices = list(range(len(groups)))
    i = choices[int(rng.integers(len(choices)))]
    g = groups[i]
    if kind == "object":
        new_kind = absent[int(rng.integers(len(absent)))]
        out[i] = replace(g, kind=new_kind)
        return out, Hallucination("object", g.kind, g.kind, new_kind)
    if kind == "attribute":
        taken = {x.color for x in groups if x.kind == g.kind}
        colors = [c for c in PALETTE if c not in taken]
        new_color = colors[int(rng.integers(len(colors)))]
        out[i] = replace(g, color=new_color)
        return out, Hallucination("attribute", g.kind, g.color, new_color)
    new_count = g.count + 1 if g.count == 1 or rng.random() < 0.5 else g.count - 1
    out[i] = replace(g, count=new_count)
    return out, Hallucination("count", g.kind, g.count, new_count)


# --------------------------------------------------------------------------- items


@dataclass
class Scene:
    """One generated scene: pixels, objects, texts and ground truth."""

    id: str
    image: npt.NDArray[np.uint8]
    """uint8 (H, W, 3): the scene as written to PNG."""
    background: npt.NDArray[np.uint8] | None
    """uint8 (H, W, 3): the same scene without objects (same grain), if asked for."""
    objects: list[SceneObject]
    question: str
    chosen: str
    rejected: str
    hallucination: Hallucination
    groups: list[Group] = field(default_factory=list)
    relation: Relation | None = None

    def item(self, image_ref: str) -> PreferenceItem:
        """The native-format item, with ``image_ref`` as its image."""
        return PreferenceItem(id=self.id, image=image_ref, question=self.question, chosen=self.chosen,
                              rejected=self.rejected, annotations=[o.annotation() for o in self.objects])

    def truth(self) -> dict[str, Any]:
        """What the item schema has no room for (one line of truth.jsonl)."""
        counts: dict[str, int] = {}
        for o in self.objects:
            counts[o.kind] = counts.get(o.kind, 0) + 1
        rel = None
        if self.relation is not None:
            rel = {"a": self.groups[self.relation.a].name(), "relation": self.relation.words,
                   "b": self.groups[self.relation.b].name()}
        h = self.hallucination
        return {
            "id": self.id,
            "nouns": sorted(counts),
            "counts": counts,
            "objects": [{"noun": o.kind, "color": o.color, "box": list(o.box), "visible": round(o.visible, 4)}
                        for o in self.objects],
            "groups": [{"noun": g.kind, "color": g.color, "count": g.count} for g in self.groups],
            "relation": rel,
            "hallucination": {"type": h.type, "detail": h.detail, "noun": h.noun, "from": h.before,
                              "to": h.after},
        }


def render_scene(
    config: SynthConfig, rng: np.random.Generator, picked: Sequence[tuple[str, str]] | None = None,
    keep_background: bool = False,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None, list[SceneObject], str]:
    """(image, image without objects or None, objects, background word) of one scene drawn with ``rng``.

    Background, objects (``picked`` or drawn from ``config``, :func:`place_objects`) back to
    front, then grain; the same draws in the same order as :func:`make_scene` always made.
    """
    background, bg_word = render_background(config, rng)
    objects = place_objects(config, rng, picked)
    canvas = background.copy()
    for o in objects:  # back to front
        h, w = o.patch_mask.shape
        region = canvas[o.y:o.y + h, o.x:o.x + w]
        region[o.patch_mask] = o.patch[o.patch_mask]
    grain = _grain(config.height, config.width, config.noise_std, rng)
    image = _to_uint8(canvas + grain)
    plain = _to_uint8(background + grain) if keep_background else None
    return image, plain, objects, bg_word


def scene_id(config: SynthConfig, index: int) -> str:
    """``synth-{seed}-{index:05d}``: stable, safe as a file name."""
    return f"synth-{config.seed}-{index:05d}"


def make_scene(config: SynthConfig, index: int, keep_background: bool = False) -> Scene:
    """Scene ``index`` of ``config``: a pure function of the two (the seed and index key the RNG).

    With ``keep_background`` the scene also carries the same picture without its
    objects (same grain), for checking annotations against it.
    """
    rng = np.random.default_rng([config.seed, index])
    image, plain, objects, bg_word = render_scene(config, rng, keep_background=keep_background)
    groups = group_objects(objects)
    relation = find_relation(objects, groups, rng)
    closing = int(rng.integers(len(_CLOSINGS) + 1))
    wording = Wording(
        intro=int(rng.integers(len(_INTROS))),
        relation=int(rng.integers(len(_RELATIONS))),
        closing=None if closing == len(_CLOSINGS) else closing,
        background=bg_word,
    )
    wrong_groups, hallucination = hallucinate(groups, relation, rng)
    return Scene(
        id=scene_id(config, index),
        image=image,
        background=plain,
        objects=objects,
        question=_QUESTIONS[int(rng.integers(len(_QUESTIONS)))],
        chosen=describe(groups, relation, wording),
        rejected=describe(wrong_groups, relation, wording),
        hallucination=hallucination,
        groups=groups,
        relation=relation,
    )


def _write_scene(config: SynthConfig, out_dir: Path, index: int) -> tuple[str, str]:
    """Write scene ``index``'s PNG; return its items.jsonl and truth.jsonl lines."""
    scene = make_scene(config, index)
    ref = f"images/{scene.id}.png"
    (out_dir / ref).write_bytes(encode_png(scene.image, compress_level=1))
    truth = json.dumps(scene.truth(), separators=(",", ":"))
    return scene.item(ref).model_dump_json(exclude_none=True), truth


def generate_scenes(config: SynthConfig, out_dir: Path) -> Path:
    """Write ``config.n`` scenes under ``out_dir`` and return the path of ``items.jsonl``.

    Layout: ``images/{id}.png``, ``items.jsonl`` (native format, image paths relative
    to it) and ``truth.jsonl`` (same order, keyed by ``id``; see the module doc).
    Existing files of the same names are overwritten. Scenes are drawn in
    ``config.workers`` processes; the bytes written do not depend on it.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    workers = config.workers or min(8, os.cpu_count() or 1)
    workers = min(workers, max(1, config.n // 16))  # a process pool costs ~0.5 s to start
    write = functools.partial(_write_scene, config, out_dir)
    items_path = out_dir / "items.jsonl"
    with open(items_path, "w", encoding="utf-8") as items, \
            open(out_dir / "truth.jsonl", "w", encoding="utf-8") as truth:
        if workers == 1:
            lines: Iterable[tuple[str, str]] = map(write, range(config.n))
            _write_lines(lines, items, truth)
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                _write_lines(pool.map(write, range(config.n), chunksize=8), items, truth)
    return items_path


def _write_lines(lines: Iterable[tuple[str, str]], items: TextIO, truth: TextIO) -> None:
    for item_line, truth_line in lines:
        items.write(item_line + "\n")
        truth.write(truth_line + "\n")
