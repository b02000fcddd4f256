"""The region-provider seam: keywords of an item -> image regions (MFPO section 3.1).

A provider answers a *batch* of requests at once (``locate``), so model-based
providers (grounding + SAM) can batch images through their encoders; the simple
providers loop. Providers that find nothing for a request return an empty list, and
:func:`mfpo.regions.chain.resolve_regions` moves on to the next provider of the
fallback chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mfpo.schemas import Annotation, RegionSource


@dataclass(frozen=True)
class RegionRequest:
    """What a provider gets for one item.

    image: uint8 (H, W, 3) RGB; keywords: the ranked top-K keyword texts;
    annotations: the item's labelled regions (may be empty); seed: the item's seed
    for providers that draw random numbers.
    """

    image: npt.NDArray[np.uint8]
    keywords: tuple[str, ...]
    annotations: tuple[Annotation, ...] = ()
    seed: int = 0

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Region:
    """One region: a bool (H, W) mask, the keyword it stands for, and its provider."""

    mask: npt.NDArray[np.bool_]
    source: RegionSource
    keyword: str | None = None


@dataclass
class RegionResult:
    """Regions for one item, plus whether the global fallback was used."""

    regions: list[Region] = field(default_factory=list)
    fallback: bool = False


@runtime_checkable
class RegionProvider(Protocol):
    """Maps each request's keywords to regions. ``name`` is its RegionSource."""

    name: RegionSource
    needs_pixels: bool
    """True when the provider looks at the image (a model); False when its size is enough."""

    def locate(self, requests: Sequence[RegionRequest]) -> list[list[Region]]:
        """One list of regions per request, in order; empty when nothing was found."""
        ...
