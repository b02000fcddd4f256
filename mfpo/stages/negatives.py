"""Stage 3, negatives (GPU when a model kind is asked for): the siblings' rejected images.

Reads ``items``, ``keywords``, ``regions`` and, when a kind other than ``mfpo`` is asked for, ``images``;
per item and kind writes ``rejected-{kind}/{stem}.png`` and ``masks-{kind}/{stem}.png``
(:mod:`mfpo.negatives`: AdaViP's object removal, mDPO's crop, MBPO's attacked image and answer, MFPO's
global ablation), then ``negatives``: each item's records by kind, plus every failure so far.
MFPO's own noise (the ``mfpo`` kind) is made by the next stage, ``perturb``, from the same regions.

Items go to the constructors in batches (the largest model batch of the kinds asked for), so the GPU
sees full batches and one batch of decoded images is in memory at a time. An item a constructor cannot
serve fails alone with the constructor's reason; a batch that fails as a whole (not an item's fault,
not transient) is retried item by item, as the regions stage does. With only ``mfpo`` asked for, the
stage reads no image and writes no file: it carries the failures on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mfpo.images import encode_png
from mfpo.negatives import MODEL_KINDS, NegativeRequest, NegativeResult, NegativesConfig, check_request
from mfpo.negatives.config import NegativeKind
from mfpo.regions.base import RegionResult
from mfpo.schemas import KeywordScore, NegativeRecord
from mfpo.stages.artifacts import ArtifactName, StageOutput, decode_keywords, decode_regions, encode_negatives
from mfpo.stages.chunk import ItemError, StagedItem
from mfpo.stages.io import OutputWriter

if TYPE_CHECKING:
    from mfpo.stages.runner import StageContext

log = logging.getLogger(__name__)

STAGE = "negatives"


def sibling_kinds(config: NegativesConfig) -> list[NegativeKind]:
    """The kinds this stage makes: every kind asked for but ``mfpo`` (made by ``perturb``)."""
    return [k for k in config.kinds if k != "mfpo"]


def uses_models(config: NegativesConfig) -> bool:
    """Whether the stage loads models (adavip's CLIP / inpainter, mbpo's policy): the GPU queue's work."""
    return any(k in MODEL_KINDS for k in config.kinds)


def batch_size(config: NegativesConfig) -> int:
    """Items per constructor call: the largest model batch among the kinds asked for (8 for numpy kinds)."""
    sizes = [8]
    if "adavip" in config.kinds and config.adavip.clip is not None:
        sizes.append(config.adavip.clip.batch_size)
        if config.adavip.diffusers is not None:
            sizes.append(config.adavip.diffusers.batch_size)
    if "mbpo" in config.kinds:
        sizes.append(config.mbpo.batch_size)
    return max(sizes)


def negative_request(item: StagedItem, keywords: list[KeywordScore], regions: RegionResult,
                     ctx: StageContext) -> NegativeRequest:
    """What the constructors get for one item: its working image (decoded), regions, texts and seed."""
    return NegativeRequest(image=ctx.io.image(item), seed=item.seed, regions=tuple(regions.regions),
                           keywords=tuple(k.text for k in keywords), question=item.item.question,
                           chosen=item.item.chosen, id=item.id)


def store_negative(item: StagedItem, result: NegativeResult, writer: OutputWriter, level: int) -> NegativeRecord:
    """Hand one constructor's image and mask to ``writer``; its record. A method without a region mask (mdpo's
    crop, mbpo's attack) changed every pixel of its image: its mask is all set."""
    keys = item.keys
    mask = result.mask if result.mask is not None else np.ones(result.image.shape[:2], dtype=bool)
    image_key, mask_key = keys.negative_image(result.kind), keys.negative_mask(result.kind)
    writer.put(image_key, encode_png(result.image, level), "image/png")
    writer.put(mask_key, encode_png(mask.astype(np.uint8) * 255, level), "image/png")
    return NegativeRecord(image=image_key, mask=mask_key, response=result.response, fallback=result.fallback,
                          details=result.details)


def construct_batch(items: list[StagedItem], keywords: dict[str, list[KeywordScore]],
                    regions: dict[str, RegionResult], ctx: StageContext,
                    writer: OutputWriter) -> dict[str, dict[str, NegativeRecord]]:
    """Every sibling kind of a batch of items (the images decoded once for all kinds); records by item, then kind."""
    from mfpo.negatives import construct_negatives

    config = ctx.config.negatives
    requests = [negative_request(it, keywords[it.id], regions[it.id], ctx) for it in items]
    out: dict[str, dict[str, NegativeRecord]] = {it.id: {} for it in items}
    for kind in sibling_kinds(config):
        for request in requests:
            check_request(kind, request, config)
        results = construct_negatives(kind, requests, config, ctx.config.perturbation,
                                      detector=ctx.resources.detector)
        for item, result in zip(items, results, strict=True):
            out[item.id][kind] = store_negative(item, result, writer, ctx.config.png_compress_level)
    return out


def check_deployment(ctx: StageContext) -> str | None:
    """Why this process cannot run the kinds asked for (a detector AdaViP needs is not loaded), or None."""
    config = ctx.config.negatives
    if "adavip" in config.kinds and config.adavip.candidates == "regions+detector" and ctx.resources.detector is None:
        return ("adavip candidates 'regions+detector' need the grounding model and SAM (regions.grounding, "
                "regions.sam; on the platform MFPO_GROUNDING_MODEL and MFPO_SAM_CHECKPOINT)")
    return None


def negatives_stage(ctx: StageContext) -> dict[ArtifactName, bytes]:
    from mfpo.stages.runner import TRANSIENT, guarded, item_deadline

    regions = decode_regions(ctx.read("regions"))
    output: StageOutput[dict[str, NegativeRecord]] = StageOutput(failures=dict(regions.failures))
    kinds = sibling_kinds(ctx.config.negatives)
    todo = [it for it in ctx.chunk.items if it.id in regions.results and it.id not in output.failures]
    if not kinds:
        return {"negatives": encode_negatives(output)}
    unusable = check_deployment(ctx)
    if unusable is not None:
        from mfpo.stages.chunk import item_failure

        for item in todo:
            output.failures[item.id] = item_failure(item, STAGE, unusable)
        return {"negatives": encode_negatives(output)}
    keywords = decode_keywords(ctx.read("keywords")).results
    size = batch_size(ctx.config.negatives)
    writer = ctx.io.output_writer()
    log.info("negatives %s of chunk %s: %d items in batches of %d", ",".join(kinds), ctx.io.chunk_key, len(todo), size)
    for start in range(0, len(todo), size):
        batch = todo[start:start + size]
        try:
            limit = ctx.item_time_limit_s * len(batch) if ctx.item_time_limit_s else None
            with item_deadline(limit):
                output.results.update(construct_batch(batch, keywords, regions.results, ctx, writer))
            continue
        except TRANSIENT:
            raise
        except ItemError as exc:  # one item of the batch cannot be served: find it, item by item
            log.info("negatives batch of %d items: %s; running them one by one", len(batch), exc.reason)
        except Exception:  # a batch that fails as a whole: each item alone, so only the bad one fails
            log.warning("negatives batch of %d items failed; retrying them one by one", len(batch), exc_info=True)
        for item in batch:
            one = guarded(STAGE, item, output.failures, construct_batch, [item], keywords, regions.results, ctx,
                          writer, limit_s=ctx.item_time_limit_s)
            if one is not None:
                output.results.update(one)
    writer.flush()  # every file is stored before the artifact says so
    return {"negatives": encode_negatives(output)}
