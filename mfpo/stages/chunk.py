"""A chunk: the unit every stage works on, and what is known of each item before any stage runs.

Items travel through the stage graph in chunks (``chunk_size`` of them, a setting), so a
task, a store object and a model batch serve many items at once. What an item needs
downstream is fixed once, when it enters (``describe_item``): its content-derived id,
output keys and noise seed, and the size of its image, so no stage has to decode an
image it does not use (keywords need only text; annotation regions only the size).
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from mfpo.ids import item_id as content_item_id
from mfpo.ids import seed_for
from mfpo.images import ImageError, decode_image, image_header, verify_image, working_size
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.keys import OutputKeys, content_digest, output_stem
from mfpo.schemas import Failure, PreferenceItem


class ItemError(Exception):
    """A per-item failure with the stage it happened in and a readable reason."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class StagedItem(BaseModel):
    """One item of a chunk, as every stage sees it (its image bytes live beside it, by ``item.id``)."""

    index: int = Field(ge=0, description="Position in the chunk (outcome order).")
    row: int | None = Field(default=None, description="Input row / submission index, for failures.")
    item: PreferenceItem = Field(description="The item; ``item.id`` is set (given or content-derived).")
    stem: str = Field(description="Output stem ``{id}-{hash of content + options}``.")
    image_ext: str = Field(description="Extension of the original image bytes ('.png', '.jpg', ...).")
    seed: int = Field(ge=0, description="Noise seed of the item (from id, stem and run seed).")
    width: int = Field(gt=0, description="Width of the image the stages work on (pixels).")
    height: int = Field(gt=0, description="Height of the image the stages work on (pixels).")
    source_size: tuple[int, int] | None = Field(
        default=None, description="(width, height) as submitted, when over limits.max_working_pixels (reduced)."
    )

    @property
    def id(self) -> str:
        assert self.item.id is not None
        return self.item.id

    @property
    def keys(self) -> OutputKeys:
        return OutputKeys(stem=self.stem, image_ext=self.image_ext)


class Chunk(BaseModel):
    """The items of one chunk, in order. ``key`` names the chunk's objects in the store."""

    key: str = Field(description="Chunk key: the platform's zero-padded chunk number, or a content digest.")
    items: list[StagedItem] = Field(description="Items in submission order.")


def identify_item(
    index: int, row: int | None, item: PreferenceItem, image_bytes: bytes, config: GenerateConfig
) -> StagedItem:
    """Fix the item's id (given or content hash), output stem, seed and image size, from the header alone.

    Raises :class:`ItemError` (stage ``image``) for bytes whose header is not an acceptable image
    (over ``config.limits``, empty, not an image); the pixels are checked by :func:`decode_checked`.
    """
    try:
        source_w, source_h, ext = image_header(image_bytes, config.limits)
    except ImageError as exc:
        raise ItemError("image", str(exc)) from exc
    width, height = working_size(source_w, source_h, config.limits.max_working_pixels)
    reduced = (width, height) != (source_w, source_h)
    annotations_json = json.dumps([a.model_dump(mode="json") for a in item.annotations], sort_keys=True)
    iid = item.id or content_item_id(image_bytes, item.question, item.chosen, item.rejected)
    if item.id is None:
        item = item.model_copy(update={"id": iid})
    extras = json.dumps({"system": item.system, "source": item.source}, sort_keys=True)  # both reach the record
    digest = content_digest(image_bytes, item.question, item.chosen, item.rejected, annotations_json + extras)
    stem = output_stem(iid, digest, config.output_options())
    return StagedItem(index=index, row=row, item=item, stem=stem, image_ext=".png" if reduced else ext,
                      seed=seed_for(iid, stem, config.seed), width=width, height=height,
                      source_size=(source_w, source_h) if reduced else None)


def verify_checked(image_bytes: bytes, config: GenerateConfig) -> None:
    """The intake's integrity check (:func:`mfpo.images.verify_image`); :class:`ItemError` (stage ``image``)."""
    try:
        verify_image(image_bytes, config.limits)
    except ImageError as exc:
        raise ItemError("image", str(exc)) from exc


def decode_checked(image_bytes: bytes, config: GenerateConfig) -> npt.NDArray[np.uint8]:
    """The decoded uint8 (H, W, 3) image; :class:`ItemError` (stage ``image``) for corrupt or truncated bytes."""
    try:
        return np.asarray(decode_image(image_bytes, config.limits), dtype=np.uint8)
    except ImageError as exc:
        raise ItemError("image", str(exc)) from exc


def describe_item(
    index: int, row: int | None, item: PreferenceItem, image_bytes: bytes, config: GenerateConfig
) -> tuple[StagedItem, npt.NDArray[np.uint8]]:
    """:func:`identify_item` and :func:`decode_checked` together: the description and the decoded image."""
    staged = identify_item(index, row, item, image_bytes, config)
    return staged, decode_checked(image_bytes, config)


def item_failure(staged: StagedItem, stage: str, reason: str) -> Failure:
    """The :class:`Failure` of a staged item."""
    return Failure(row=staged.row, id=staged.id, stage=stage, reason=reason)
