"""Stage 4, perturb (CPU): diffusion noise inside the regions, the item's files, then the chunk's outcomes.

Reads ``items``, ``images``, ``keywords``, ``regions``, ``negatives``; per item writes
``images/{stem}{ext}`` (the original bytes) and, when the ``mfpo`` kind is asked for (the default),
``rejected/{stem}.png`` (MFPO section 3.1's m': forward diffusion noise x_t = sqrt(a_t) x +
sqrt(1 - a_t) eps inside the union of the regions' masks, pixels outside byte-identical) and
``masks/{stem}.png``; then the chunk's ``outcomes`` (one ``done`` record or ``failed`` reason per
item, in chunk order), written last so it implies every file before it. A record lists every kind's
rejected image (``negatives``; the siblings' from the negatives stage), and its ``rejected_image`` /
``mask`` are the first kind's. Items are processed one at a time, so one decoded image (plus its
noise) is in memory at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mfpo.images import content_type, encode_png
from mfpo.negatives.noise import noise_details
from mfpo.perturbation import alpha_bar, perturb_in_mask
from mfpo.pipeline.config import GenerateConfig
from mfpo.regions.base import RegionResult
from mfpo.regions.masks import mask_area, mask_box, union
from mfpo.schemas import KeywordScore, NegativeRecord, PerturbationRecord, RegionRecord, ResultRecord
from mfpo.stages.artifacts import (
    ArtifactName,
    Outcome,
    decode_keywords,
    decode_negatives,
    decode_regions,
    encode_outcomes,
)
from mfpo.stages.chunk import StagedItem
from mfpo.stages.io import OutputWriter

if TYPE_CHECKING:
    from mfpo.stages.runner import StageContext


def perturb(image: npt.NDArray[np.uint8], regions: RegionResult, seed: int, config: GenerateConfig) -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.bool_]
]:
    """The rejected image m' and its mask: noise at step t inside the union of the regions (MFPO sec. 3.1).

    image: uint8 (H, W, 3); returns uint8 (H, W, 3) and bool (H, W).
    """
    h, w = image.shape[:2]
    mask = union([r.mask for r in regions.regions], h, w)
    noise = config.perturbation
    rejected = perturb_in_mask(image, mask, alpha_bar(noise), seed, model_resolution=noise.model_resolution,
                               compensate_resampling=noise.compensate_resampling)
    return rejected, mask


def keywords_not_found(keywords: list[KeywordScore], regions: RegionResult, config: GenerateConfig) -> list[str]:
    """Keywords with no region, for the modes that look for keywords (not global / random)."""
    if config.regions.mode in ("global", "random"):
        return []
    located = {r.keyword for r in regions.regions}
    return [k.text for k in keywords if k.text not in located]


def build_record(item: StagedItem, keywords: list[KeywordScore], regions: RegionResult,
                 config: GenerateConfig, negatives: dict[str, NegativeRecord] | None = None) -> ResultRecord:
    """The dataset record of one item (image paths relative to the dataset folder); ``negatives``: every kind's
    record, in the job's order (default: MFPO's alone)."""
    keys = item.keys
    if negatives is None:
        negatives = {"mfpo": NegativeRecord(image=keys.rejected_image, mask=keys.mask)}
    primary = negatives[config.negatives.primary]
    return ResultRecord(
        id=item.id,
        question=item.item.question,
        chosen=item.item.chosen,
        rejected=item.item.rejected,
        image=keys.image,
        rejected_image=primary.image,
        mask=primary.mask,
        keywords=keywords,
        regions=[
            RegionRecord(keyword=r.keyword, box=mask_box(r.mask), source=r.source, area=mask_area(r.mask))
            for r in regions.regions
        ],
        keywords_not_found=keywords_not_found(keywords, regions, config),
        perturbation=PerturbationRecord(
            mode=config.regions.mode,
            noise_step=config.perturbation.noise_step,
            schedule=config.perturbation.schedule,
            seed=item.seed,
            fallback=regions.fallback,
        ),
        source_size=item.source_size,
        system=item.item.system,
        source=item.item.source,
        negatives=negatives,
    )


def finish_item(item: StagedItem, keywords: list[KeywordScore], regions: RegionResult, ctx: StageContext,
                writer: OutputWriter, siblings: dict[str, NegativeRecord]) -> ResultRecord:
    """Perturb one item (when ``mfpo`` is asked for) and hand its files to ``writer``; returns its record with
    every kind's rejected image (``siblings``: the negatives stage's)."""
    kinds = ctx.config.negatives.kinds
    level = ctx.config.png_compress_level
    keys = item.keys
    needs_pixels = "mfpo" in kinds or item.source_size is not None
    image = ctx.io.image(item) if needs_pixels else None
    original = ctx.io.image_bytes(item) if image is None or item.source_size is None else encode_png(image, level)
    writer.put(keys.image, original, content_type(keys.image_ext))  # the image as worked on
    negatives: dict[str, NegativeRecord] = {}
    for kind in kinds:
        if kind != "mfpo":
            negatives[kind] = siblings[kind]
            continue
        assert image is not None
        rejected, mask = perturb(image, regions, item.seed, ctx.config)
        writer.put(keys.rejected_image, encode_png(rejected, level), "image/png")
        writer.put(keys.mask, encode_png(mask.astype(np.uint8) * 255, level), "image/png")
        negatives["mfpo"] = NegativeRecord(
            image=keys.rejected_image, mask=keys.mask, fallback="global_noise: no keyword region" if regions.fallback
            else None, details=noise_details(ctx.config.perturbation, mask))
        del rejected, mask
    return build_record(item, keywords, regions, ctx.config, negatives)


def perturb_stage(ctx: StageContext) -> dict[ArtifactName, bytes]:
    from mfpo.stages.runner import guarded

    keywords = decode_keywords(ctx.read("keywords")).results
    regions = decode_regions(ctx.read("regions"))
    negatives = decode_negatives(ctx.read("negatives"))
    failures = dict(negatives.failures)  # the regions' failures and the negatives stage's own
    siblings = [k for k in ctx.config.negatives.kinds if k != "mfpo"]
    writer = ctx.io.output_writer()
    records: dict[str, ResultRecord] = {}
    for item in ctx.chunk.items:
        if item.id in failures or item.id not in regions.results:
            continue
        made = negatives.results.get(item.id, {})
        if any(kind not in made for kind in siblings):  # cannot happen: the negatives stage records or fails it
            from mfpo.stages.chunk import item_failure

            failures[item.id] = item_failure(item, "negatives", "internal error: the item has no "
                                             f"{', '.join(k for k in siblings if k not in made)} negative")
            continue
        record = guarded("perturb", item, failures, finish_item, item, keywords[item.id], regions.results[item.id],
                         ctx, writer, made, limit_s=ctx.item_time_limit_s)
        if record is not None:
            records[item.id] = record
    writer.flush()  # every file is stored before the outcomes say so
    outcomes = []
    for item in ctx.chunk.items:
        if item.id in records:
            outcomes.append(Outcome(id=item.id, index=item.index, row=item.row, status="done",
                                    record=records[item.id]))
        else:
            failure = failures.get(item.id)
            if failure is None:  # cannot happen: every item has a record or a failure; never lose one silently
                from mfpo.stages.chunk import item_failure

                failure = item_failure(item, "perturb", "internal error: the item had neither regions nor a failure")
            outcomes.append(Outcome(id=item.id, index=item.index, row=item.row, status="failed", failure=failure))
    return {"outcomes": encode_outcomes(outcomes)}
