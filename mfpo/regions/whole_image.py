"""The ``global`` provider: the whole image is the region (and the fallback)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mfpo.regions.base import Region, RegionRequest
from mfpo.schemas import RegionSource


class GlobalProvider:
    """One region covering every pixel. MFPO section 3.1: 'for images whose keywords
    fail to locate any visual region, we add diffusion noise across all image areas'."""

    needs_pixels = False
    name: RegionSource = "global"

    def locate(self, requests: Sequence[RegionRequest]) -> list[list[Region]]:
        return [[whole_image_region(r.height, r.width)] for r in requests]


def whole_image_region(height: int, width: int) -> Region:
    """A region whose mask is all True, shape (height, width)."""
    return Region(mask=np.ones((height, width), dtype=bool), source="global")
