"""Region stage of MFPO section 3.1: keywords -> image regions (bool masks).

Providers implement :class:`~mfpo.regions.base.RegionProvider` (``locate`` a batch of
:class:`~mfpo.regions.base.RegionRequest`); :func:`~mfpo.regions.chain.resolve_regions`
tries them in order and falls back to the whole image. Providers here: ``annotations``
(:class:`~mfpo.regions.annotations.AnnotationProvider`), ``global``
(:class:`~mfpo.regions.whole_image.GlobalProvider`) and ``random``
(:class:`~mfpo.regions.random_region.RandomProvider`). A model-based provider (grounding
+ SAM) plugs into the same protocol.
"""

from mfpo.regions.annotations import AnnotationProvider
from mfpo.regions.base import Region, RegionProvider, RegionRequest, RegionResult
from mfpo.regions.chain import resolve_regions
from mfpo.regions.config import RegionMode, RegionsConfig
from mfpo.regions.matching import match_keyword
from mfpo.regions.random_region import RandomProvider
from mfpo.regions.whole_image import GlobalProvider

__all__ = [
    "AnnotationProvider",
    "GlobalProvider",
    "RandomProvider",
    "Region",
    "RegionMode",
    "RegionProvider",
    "RegionRequest",
    "RegionResult",
    "RegionsConfig",
    "match_keyword",
    "resolve_regions",
]
