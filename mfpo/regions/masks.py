"""Boxes and polygons to boolean masks, and masks back to boxes.

Pixel convention: pixel (row r, column c) covers [c, c+1) x [r, r+1). A box
(x0, y0, x1, y1) in pixel coordinates covers columns floor(x0) .. ceil(x1) - 1 and
rows floor(y0) .. ceil(y1) - 1, clipped to the image. A mask's box is its tight box
in the same convention, so box -> mask -> box is exact for integer boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from mfpo.schemas import Annotation, Box

BoolMask = npt.NDArray[np.bool_]


def box_to_mask(box: Sequence[float], height: int, width: int) -> BoolMask:
    """bool (height, width) mask of the pixels a box covers (clipped to the image)."""
    x0, y0, x1, y1 = box
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    c1, r1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    mask = np.zeros((height, width), dtype=bool)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = True
    return mask


def polygon_to_mask(points: Sequence[tuple[float, float]], height: int, width: int) -> BoolMask:
    """bool (height, width) mask of a filled polygon (PIL's even-odd scan fill)."""
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def annotation_mask(annotation: Annotation, height: int, width: int) -> BoolMask:
    """Mask of an annotation's box or polygon."""
    if annotation.box is not None:
        return box_to_mask(annotation.box, height, width)
    assert annotation.polygon is not None
    return polygon_to_mask(annotation.polygon, height, width)


def mask_box(mask: BoolMask) -> Box:
    """Tight box (x0, y0, x1, y1) of a non-empty mask; (0, 0, 0, 0) for an empty one."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def mask_area(mask: BoolMask) -> float:
    """Fraction of the image covered by ``mask`` (float in [0, 1])."""
    return float(mask.mean()) if mask.size else 0.0


def union(masks: Sequence[BoolMask], height: int, width: int) -> BoolMask:
    """Pixel-wise OR of masks; an all-False mask when there are none."""
    out = np.zeros((height, width), dtype=bool)
    for m in masks:
        out |= m
    return out
