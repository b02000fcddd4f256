"""One item through the MFPO data stages: keywords -> regions -> perturbation -> record.

The functions here are the whole method for a batch of items; the embedded runner,
the Celery worker and the benchmarks all call :func:`generate_batch`. Nothing here
touches the store except :func:`store_outputs`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from mfpo.ids import item_id as content_item_id
from mfpo.ids import seed_for
from mfpo.images import ImageError, decode_image, encode_png, load_image_bytes
from mfpo.keywords import extract_keywords
from mfpo.perturbation import alpha_bar, perturb_in_mask
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.keys import OutputKeys, content_digest, output_stem
from mfpo.pipeline.resources import StageResources
from mfpo.regions.base import RegionRequest, RegionResult
from mfpo.regions.chain import resolve_regions
from mfpo.regions.masks import mask_area, mask_box, union
from mfpo.schemas import (
    Failure,
    KeywordScore,
    PerturbationRecord,
    PreferenceItem,
    RegionRecord,
    ResultRecord,
)
from mfpo.storage.base import ObjectStore

_FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class ItemError(Exception):
    """A per-item failure with the stage it happened in and a readable reason."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


@dataclass
class PreparedItem:
    """An item whose image is loaded and decoded, with its id, keys and seed fixed.

    image: uint8 (H, W, 3) RGB, decoded from ``image_bytes`` (kept byte-exact).
    """

    row: int | None
    item: PreferenceItem
    image_bytes: bytes
    image: npt.NDArray[np.uint8]
    keys: OutputKeys
    seed: int


@dataclass
class ItemOutputs:
    """Everything one item writes: the record and three images (bytes)."""

    prepared: PreparedItem
    record: ResultRecord
    rejected_png: bytes
    mask_png: bytes


def prepare_item(
    row: int | None,
    item: PreferenceItem,
    image_bytes: bytes | None,
    config: GenerateConfig,
    store: ObjectStore | None = None,
) -> PreparedItem:
    """Load and decode the image, fill a content id if missing, derive keys and seed.

    Raises :class:`ItemError` (stage ``image``) for unreadable, missing or oversized images.
    """
    try:
        data = (
            image_bytes
            if image_bytes is not None
            else load_image_bytes(item.image, None, config.limits, store=store)
        )
        pil = decode_image(data, config.limits)
    except ImageError as exc:
        raise ItemError("image", str(exc)) from exc
    except OSError as exc:
        raise ItemError("image", f"cannot read image {item.image!r}: {exc}") from exc
    image = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    annotations_json = json.dumps([a.model_dump(mode="json") for a in item.annotations], sort_keys=True)
    iid = item.id or content_item_id(data, item.question, item.chosen, item.rejected)
    if item.id is None:
        item = item.model_copy(update={"id": iid})
    options = config.output_options()
    stem = output_stem(
        iid, content_digest(data, item.question, item.chosen, item.rejected, annotations_json), options
    )
    keys = OutputKeys(stem=stem, image_ext=image_extension(data))
    return PreparedItem(
        row=row,
        item=item,
        image_bytes=data,
        image=image,
        keys=keys,
        seed=seed_for(iid, stem, config.seed),
    )


def select_keywords(prepared: PreparedItem, config: GenerateConfig, resources: StageResources) -> list[KeywordScore]:
    """Stage 1: top-K keywords of the chosen answer (MFPO sec. 3.1, multipartite graph + PageRank)."""
    try:
        return extract_keywords(prepared.item.chosen, config.keywords, embedder=resources.embedder)
    except ValueError as exc:
        raise ItemError("keywords", str(exc)) from exc


def locate_regions(
    prepared: Sequence[PreparedItem], keywords: Sequence[list[KeywordScore]], resources: StageResources
) -> list[RegionResult]:
    """Stage 2: keywords -> region masks through the provider chain, one batch for all items."""
    requests = [
        RegionRequest(
            image=p.image,
            keywords=tuple(k.text for k in kws),
            annotations=tuple(p.item.annotations),
            seed=p.seed,
        )
        for p, kws in zip(prepared, keywords, strict=True)
    ]
    return resolve_regions(requests, resources.providers, resources.fallback_to_global)


def perturb(prepared: PreparedItem, regions: RegionResult, config: GenerateConfig) -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.bool_]
]:
    """Stage 3: diffusion noise inside the union of the regions' masks (MFPO sec. 3.1).

    Returns the rejected image uint8 (H, W, 3) and the mask bool (H, W).
    """
    h, w = prepared.image.shape[:2]
    mask = union([r.mask for r in regions.regions], h, w)
    rejected = perturb_in_mask(prepared.image, mask, alpha_bar(config.perturbation), prepared.seed)
    return rejected, mask


def keywords_not_found(keywords: list[KeywordScore], regions: RegionResult, config: GenerateConfig) -> list[str]:
    """Keywords with no region, for the modes that look for keywords (not global / random)."""
    if config.regions.mode in ("global", "random"):
        return []
    located = {r.keyword for r in regions.regions}
    return [k.text for k in keywords if k.text not in located]


def build_record(
    prepared: PreparedItem,
    keywords: list[KeywordScore],
    regions: RegionResult,
    config: GenerateConfig,
) -> ResultRecord:
    """The dataset record of one item (paths relative to the dataset folder)."""
    item = prepared.item
    assert item.id is not None
    return ResultRecord(
        id=item.id,
        question=item.question,
        chosen=item.chosen,
        rejected=item.rejected,
        image=prepared.keys.image,
        rejected_image=prepared.keys.rejected_image,
        mask=prepared.keys.mask,
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
            seed=prepared.seed,
            fallback=regions.fallback,
        ),
    )


def generate_batch(
    prepared: Sequence[PreparedItem], config: GenerateConfig, resources: StageResources
) -> list[ItemOutputs | Failure]:
    """Run keywords -> regions -> perturbation for a batch; one output or failure per item."""
    results: list[ItemOutputs | Failure | None] = [None] * len(prepared)
    ok: list[int] = []
    keywords: list[list[KeywordScore]] = []
    for i, p in enumerate(prepared):
        try:
            keywords.append(select_keywords(p, config, resources))
            ok.append(i)
        except ItemError as exc:
            results[i] = _failure(p, exc.stage, exc.reason)
    region_results = locate_regions([prepared[i] for i in ok], keywords, resources)
    for i, kws, regions in zip(ok, keywords, region_results, strict=True):
        results[i] = finish_item(prepared[i], kws, regions, config)
    return [r for r in results if r is not None]


def finish_item(
    prepared: PreparedItem, keywords: list[KeywordScore], regions: RegionResult, config: GenerateConfig
) -> ItemOutputs:
    """Stage 3 and the record: perturb inside the regions, encode the PNGs, build the record."""
    rejected, mask = perturb(prepared, regions, config)
    return ItemOutputs(
        prepared=prepared,
        record=build_record(prepared, keywords, regions, config),
        rejected_png=encode_png(rejected, config.png_compress_level),
        mask_png=encode_png(mask.astype(np.uint8) * 255, config.png_compress_level),
    )


def store_outputs(store: ObjectStore, outputs: ItemOutputs) -> None:
    """Write the images first and the record last, so a record implies complete outputs."""
    keys = outputs.prepared.keys
    store.put(keys.image, outputs.prepared.image_bytes, _content_type(keys.image_ext))
    store.put(keys.rejected_image, outputs.rejected_png, "image/png")
    store.put(keys.mask, outputs.mask_png, "image/png")
    store.put(keys.record, outputs.record.model_dump_json().encode("utf-8"), "application/json")


def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes (``.png``, ``.jpg``, ...), from the header."""
    return _FORMAT_EXT.get(_image_format(data), ".png")


def _image_format(data: bytes) -> str:
    """PIL's name of the encoded format ("PNG", "JPEG", ...), read from the header only."""
    with Image.open(io.BytesIO(data)) as im:
        return (im.format or "PNG").upper()


def _content_type(ext: str) -> str:
    return {".jpg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp",
            ".tif": "image/tiff"}.get(ext, "image/png")


def _failure(prepared: PreparedItem, stage: str, reason: str) -> Failure:
    return Failure(row=prepared.row, id=prepared.item.id, stage=stage, reason=reason, raw=None)
