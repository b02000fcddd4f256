"""Accepting submitted items into a job: validate, store the image, then the item.

Items come from untrusted clients, so an image reference may only be a ``data:`` URI
(inline bytes) or ``store://uploads/...`` naming an object this tenant uploaded before;
filesystem paths and URLs are refused (no reading the server's files, no requests to
arbitrary hosts). The image is decoded under the job's limits before anything is
stored, so a truncated file, non-image bytes or a decompression bomb is refused here,
with a reason, and never reaches a worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mfpo.ids import item_id as content_item_id
from mfpo.images import ImageError, decode_image, load_image_bytes
from mfpo.jobs.records import JobRecord, StoredItem
from mfpo.jobs.store import DuplicateItem, JobKeys, JobStore
from mfpo.pipeline.item import image_extension
from mfpo.schemas import PreferenceItem
from mfpo.storage.base import InvalidKey, ObjectNotFound, check_key


class ItemRejected(ValueError):
    """The item was not accepted; the message says why, for the client."""


def uploads_prefix(tenant: str) -> str:
    """Store prefix of a tenant's uploaded objects (``store://`` references resolve under it)."""
    return f"tenants/{tenant}/uploads/"


def validation_message(exc: ValidationError) -> str:
    """Pydantic errors as one readable line: ``field: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "item"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def read_image_reference(jobs: JobStore, job: JobRecord, ref: str) -> bytes:
    """Bytes of a ``data:`` URI or of ``store://uploads/...`` of this tenant; anything else is refused."""
    limits = job.options.limits
    if ref.startswith("data:"):
        try:
            return load_image_bytes(ref, None, limits)
        except ImageError as exc:
            raise ItemRejected(str(exc)) from None
    if ref.startswith("store://"):
        key = ref.removeprefix("store://")
        try:
            check_key(key)
        except InvalidKey as exc:
            raise ItemRejected(str(exc)) from None
        if not key.startswith("uploads/"):
            raise ItemRejected(f"image key {key!r} must name an uploaded object: store://uploads/NAME")
        try:
            return jobs.store.get(uploads_prefix(job.tenant) + key.removeprefix("uploads/"))
        except ObjectNotFound:
            raise ItemRejected(f"no uploaded object {key!r}") from None
    raise ItemRejected("image must be a data: URI (base64) or store://uploads/NAME of an uploaded object")


def accept_item(jobs: JobStore, job: JobRecord, raw: Mapping[str, Any] | Any, seq: int) -> str:
    """Validate one native-format item and store it (image first) in ``job``; returns its id.

    Raises :class:`ItemRejected` with a readable reason for anything wrong with the item.
    """
    if not isinstance(raw, Mapping):
        raise ItemRejected(f"an item must be a JSON object, got {type(raw).__name__}")
    try:
        item = PreferenceItem.model_validate(raw)
    except ValidationError as exc:
        raise ItemRejected(validation_message(exc)) from None
    return store_item(jobs, job, item, read_image_reference(jobs, job, item.image), seq)


def store_item(jobs: JobStore, job: JobRecord, item: PreferenceItem, data: bytes, seq: int) -> str:
    """Check the image bytes under the job's limits, then store image and item; returns the item id."""
    try:
        decode_image(data, job.options.limits)
    except ImageError as exc:
        raise ItemRejected(str(exc)) from None
    iid = item.id or content_item_id(data, item.question, item.chosen, item.rejected)
    ext = image_extension(data)
    image_key = JobKeys(job.tenant, job.id).input(iid, ext)
    stored = StoredItem(seq=seq, item=item.model_copy(update={"id": iid, "image": f"store://{image_key}"}),
                        image_key=image_key)
    try:
        jobs.add_item(job, stored, data, ext)
    except DuplicateItem as exc:
        raise ItemRejected(str(exc)) from None
    return iid
