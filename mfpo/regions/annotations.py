"""The ``annotations`` provider: keywords matched to an item's labelled regions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mfpo.regions.base import Region, RegionRequest
from mfpo.regions.masks import annotation_mask, union
from mfpo.schemas import RegionSource

LabelMatcher = Callable[[str, Sequence[str]], list[int]]
"""(keyword, labels) -> indexes of the labels the keyword names."""


class AnnotationProvider:
    """For each keyword, the union of the masks of the annotations it names.

    A keyword that names no annotation label gives no region; an item without
    annotations gives no regions (the chain then falls back).
    """

    needs_pixels = False
    name: RegionSource = "annotations"

    def __init__(self, matcher: LabelMatcher) -> None:
        self.matcher = matcher

    def locate(self, requests: Sequence[RegionRequest]) -> list[list[Region]]:
        return [self._locate_one(r) for r in requests]

    def _locate_one(self, request: RegionRequest) -> list[Region]:
        if not request.annotations:
            return []
        labels = [a.label for a in request.annotations]
        regions = []
        for keyword in request.keywords:
            hits = self.matcher(keyword, labels)
            if not hits:
                continue
            masks = [annotation_mask(request.annotations[i], request.height, request.width) for i in hits]
            mask = union(masks, request.height, request.width)
            if mask.any():
                regions.append(Region(mask=mask, source="annotations", keyword=keyword))
        return regions
