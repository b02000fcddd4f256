"""The fallback chain: try providers in order, then the whole image.

MFPO section 3.1 perturbs the regions the top-K keywords name, and the whole image
when no keyword locates a region. The chain records which case happened.
"""

from __future__ import annotations

from collections.abc import Sequence

from mfpo.regions.base import RegionProvider, RegionRequest, RegionResult
from mfpo.regions.whole_image import whole_image_region


def resolve_regions(
    requests: Sequence[RegionRequest],
    providers: Sequence[RegionProvider],
    fallback_to_global: bool = True,
) -> list[RegionResult]:
    """Regions for each request from the first provider that finds any.

    Providers see only the requests still unresolved, as one batch each. A request
    that no provider resolves gets the whole image with ``fallback=True`` when
    ``fallback_to_global``, else no regions.
    """
    results = [RegionResult() for _ in requests]
    pending = list(range(len(requests)))
    for provider in providers:
        if not pending:
            break
        found = provider.locate([requests[i] for i in pending])
        still = []
        for i, regions in zip(pending, found, strict=True):
            if regions:
                results[i].regions = regions
            else:
                still.append(i)
        pending = still
    if fallback_to_global:
        for i in pending:
            results[i] = RegionResult(
                regions=[whole_image_region(requests[i].height, requests[i].width)], fallback=True
            )
    return results
