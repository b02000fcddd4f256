"""Stage 2, regions (GPU when grounding + SAM are configured): keywords -> region masks.

Reads ``items``, ``keywords`` and, only when a provider needs pixels (grounding + SAM), ``images``;
writes ``regions``: per item the masks of its keywords through the provider chain
(annotations -> grounded -> whole image, :func:`mfpo.regions.chain.resolve_regions`).

Items go to the providers in batches of ``resources.region_batch_size`` (the models' batch), so
the GPU sees full batches and only one batch of decoded images is in memory at a time. Annotation,
global and random regions need only the image size, which the chunk already holds: no image is
read or decoded for them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mfpo.regions.base import RegionRequest, RegionResult
from mfpo.regions.chain import resolve_regions
from mfpo.schemas import Annotation, KeywordScore
from mfpo.stages.artifacts import ArtifactName, StageOutput, decode_keywords, encode_regions
from mfpo.stages.chunk import StagedItem

if TYPE_CHECKING:
    from mfpo.stages.runner import StageContext

log = logging.getLogger(__name__)


def size_only_image(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 view of one zero pixel: the shape without the memory (size-only providers)."""
    return np.broadcast_to(np.zeros(3, dtype=np.uint8), (height, width, 3))


def region_request(item: StagedItem, keywords: list[KeywordScore], ctx: StageContext, pixels: bool) -> RegionRequest:
    """What the providers get for one item: its image (or its size), keywords, annotations and seed."""
    image = ctx.io.image(item) if pixels else size_only_image(item.height, item.width)
    annotations = tuple(item.item.annotations)
    if item.source_size is not None:  # the image was reduced: so are the annotations' coordinates
        annotations = tuple(scale_annotation(a, item.width / item.source_size[0], item.height / item.source_size[1])
                            for a in annotations)
    return RegionRequest(image=image, keywords=tuple(k.text for k in keywords), annotations=annotations,
                         seed=item.seed)


def scale_annotation(annotation: Annotation, sx: float, sy: float) -> Annotation:
    """An annotation's box or polygon in a reduced image's pixels."""
    if annotation.box is not None:
        x0, y0, x1, y1 = annotation.box
        return annotation.model_copy(update={"box": (x0 * sx, y0 * sy, x1 * sx, y1 * sy)})
    assert annotation.polygon is not None
    return annotation.model_copy(update={"polygon": [(x * sx, y * sy) for x, y in annotation.polygon]})


def locate_batch(items: list[StagedItem], keywords: dict[str, list[KeywordScore]], ctx: StageContext,
                 pixels: bool) -> list[RegionResult]:
    """One provider-chain call for a batch of items (one model batch)."""
    requests = [region_request(it, keywords[it.id], ctx, pixels) for it in items]
    return resolve_regions(requests, ctx.resources.providers, ctx.resources.fallback_to_global)


def locate_one(item: StagedItem, keywords: dict[str, list[KeywordScore]], ctx: StageContext,
               pixels: bool) -> RegionResult:
    return locate_batch([item], keywords, ctx, pixels)[0]


def regions_stage(ctx: StageContext) -> dict[ArtifactName, bytes]:
    from mfpo.stages.runner import TRANSIENT, guarded, item_deadline

    keywords = decode_keywords(ctx.read("keywords"))
    output: StageOutput[RegionResult] = StageOutput(failures=dict(keywords.failures))
    todo = [it for it in ctx.chunk.items if it.id in keywords.results]
    pixels = any(p.needs_pixels for p in ctx.resources.providers)
    size = max(1, ctx.resources.region_batch_size)
    log.info("regions of chunk %s: %d items in batches of %d (%s)", ctx.io.chunk_key, len(todo), size,
             "models, decoded images" if pixels else "sizes only")
    for start in range(0, len(todo), size):
        batch = todo[start:start + size]
        try:
            limit = ctx.item_time_limit_s * len(batch) if ctx.item_time_limit_s else None
            with item_deadline(limit):
                found = locate_batch(batch, keywords.results, ctx, pixels)
        except TRANSIENT:
            raise
        except Exception:  # one bad (or too slow) item must not fail its batch: find it, item by item
            log.warning("region batch of %d items failed; retrying them one by one", len(batch), exc_info=True)
            for item in batch:
                one = guarded("regions", item, output.failures, locate_one, item, keywords.results, ctx, pixels,
                              limit_s=ctx.item_time_limit_s)
                if one is not None:
                    output.results[item.id] = one
            continue
        for item, result in zip(batch, found, strict=True):
            output.results[item.id] = result
    return {"regions": encode_regions(output)}
