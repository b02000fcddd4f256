"""The ``grounded`` provider: keyword -> boxes (GroundingDINO / OWLv2) -> SAM masks.

MFPO section 3.1 maps each top keyword to the region it names with SAM; AdaViP does it
with GroundingDINO + SAM. Per batch of requests: one detector pass for all images
(all keywords of an image in one prompt), one SAM encoder pass per ``batch_size``
images, then one mask per keyword: the union of its boxes' masks, dilated by
``mask_dilation``, dropped when degenerate (empty, too small, almost the whole image).
A keyword with no box, or only a degenerate mask, yields no region; the record lists
it in ``keywords_not_found``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from mfpo.grounding.config import GroundingConfig
from mfpo.grounding.detector import ZeroShotDetector
from mfpo.regions.base import Region, RegionRequest
from mfpo.regions.masks import union
from mfpo.schemas import RegionSource
from mfpo.segmentation.config import SamConfig
from mfpo.segmentation.masks import dilate, is_degenerate
from mfpo.segmentation.sam import SamSegmenter


class GroundedProvider:
    """Grounding model + SAM behind the :class:`~mfpo.regions.base.RegionProvider` protocol."""

    needs_pixels = True
    name: RegionSource = "grounded"

    def __init__(self, detector: ZeroShotDetector, segmenter: SamSegmenter) -> None:
        self.detector = detector
        self.segmenter = segmenter

    def locate(self, requests: Sequence[RegionRequest]) -> list[list[Region]]:
        images = [r.image for r in requests]
        detections = self.detector.detect(images, [r.keywords for r in requests])
        owners: list[list[str]] = []
        boxes: list[np.ndarray] = []
        for found in detections:
            kws = [kw for kw in found for _ in range(len(found[kw].boxes))]
            owners.append(kws)
            boxes.append(np.concatenate([found[kw].boxes for kw in found]) if found else np.zeros((0, 4)))
        masks = self.segmenter.segment(images, boxes)
        return [
            self._keyword_regions(r, o, m) for r, o, m in zip(requests, owners, masks, strict=True)
        ]

    def _keyword_regions(self, request: RegionRequest, owners: list[str], masks: np.ndarray) -> list[Region]:
        cfg = self.segmenter.config
        regions = []
        for kw in request.keywords:
            mine = [m for o, m in zip(owners, masks, strict=True) if o == kw]
            if not mine:
                continue
            mask = dilate(union(mine, request.height, request.width), cfg.mask_dilation)
            if is_degenerate(mask, cfg.min_mask_fraction, cfg.max_mask_fraction) is None:
                regions.append(Region(mask=mask, source="grounded", keyword=kw))
        return regions


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def get_grounded_provider(grounding: GroundingConfig, sam: SamConfig) -> GroundedProvider:
    """The process-wide provider for these settings: models load once per process and are reused."""
    key = grounding.model_dump_json() + sam.model_dump_json()
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = GroundedProvider(ZeroShotDetector(grounding), SamSegmenter(sam))
        provider: GroundedProvider = _MODELS[key]
        return provider
