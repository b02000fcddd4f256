"""The ``random`` provider: a random rectangle of a fixed area fraction (ablation)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mfpo.regions.base import Region, RegionRequest
from mfpo.regions.masks import box_to_mask
from mfpo.schemas import RegionSource


def random_box(
    height: int, width: int, fraction: float, aspect_range: tuple[float, float], seed: int
) -> tuple[int, int, int, int]:
    """An integer box (x0, y0, x1, y1) of area ~ fraction * H * W, seeded.

    The aspect ratio w/h is drawn log-uniformly from ``aspect_range`` and then limited so
    the box fits; its position is uniform over the places it fits.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    target = fraction * height * width
    lo, hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    aspect = math.exp(rng.uniform(lo, hi)) if hi > lo else aspect_range[0]
    w = min(width, max(1, round(math.sqrt(target * aspect))))
    h = min(height, max(1, round(target / w)))
    w = min(width, max(1, round(target / h)))
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    return (x0, y0, x0 + w, y0 + h)


class RandomProvider:
    """A random region covering ``fraction`` of the image, from the request's seed."""

    needs_pixels = False
    name: RegionSource = "random"

    def __init__(self, fraction: float = 0.2, aspect_range: tuple[float, float] = (0.5, 2.0)) -> None:
        self.fraction = fraction
        self.aspect_range = aspect_range

    def locate(self, requests: Sequence[RegionRequest]) -> list[list[Region]]:
        out = []
        for r in requests:
            box = random_box(r.height, r.width, self.fraction, self.aspect_range, r.seed)
            out.append([Region(mask=box_to_mask(box, r.height, r.width), source="random")])
        return out
