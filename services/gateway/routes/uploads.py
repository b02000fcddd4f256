"""Uploads: a JSONL/JSON/Parquet file in any format the readers know, images inline or in a zip.

The file is streamed to a temporary folder (``max_upload_bytes``); an attached zip is
extracted there with zip-slip and zip-bomb checks (member names must stay inside the
folder; the uncompressed total is bounded by ``max_upload_bytes``). Image paths in the
file may only point inside that folder. Each row is then accepted or refused like a
submitted item, and the accepted ones are queued.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile

from mfpo.images import ImageError, load_image_bytes
from mfpo.jobs import ItemRejected, JobRecord, JobStore
from mfpo.jobs.intake import store_item
from mfpo.readers import FORMATS, ReadItem, read_items
from services.gateway.deps import CeleryDep, JobDep, JobStoreDep, SettingsDep
from services.gateway.schemas import AUTHED_ERRORS, ItemAccepted, ItemRefused, ItemsResult, errors
from worker.client import enqueue_item

router = APIRouter(prefix="/v1/jobs/{job_id}/uploads", tags=["uploads"],
                   responses={**AUTHED_ERRORS, **errors(409)})

SUFFIXES = (".jsonl", ".json", ".parquet")
MAX_ZIP_MEMBERS = 1_000_000


async def _save(upload: UploadFile, target: Path, limit: int) -> None:
    size = 0
    with target.open("wb") as fh:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload {upload.filename!r} is over {limit} bytes (max_upload_bytes)")
            fh.write(chunk)


def extract_zip(path: Path, root: Path, limit: int) -> None:
    """Extract ``path`` into ``root``; 422 for a broken zip, an escaping name, or too much data."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise HTTPException(422, f"zip has {len(members)} members; the limit is {MAX_ZIP_MEMBERS}")
            if sum(m.file_size for m in members) > limit:
                raise HTTPException(413, f"zip expands to more than {limit} bytes (max_upload_bytes)")
            for m in members:
                target = (root / m.filename).resolve()
                if not target.is_relative_to(root) or m.filename.startswith("/"):
                    raise HTTPException(422, f"zip member {m.filename!r} would be written outside the upload")
            zf.extractall(root)
    except zipfile.BadZipFile as exc:
        raise HTTPException(422, f"images is not a valid zip file: {exc}") from None


def _image_bytes(entry: ReadItem, root: Path, job: JobRecord) -> bytes:
    if entry.image_bytes is not None:
        return entry.image_bytes
    ref = entry.item.image
    if ref.startswith("data:"):
        try:
            return load_image_bytes(ref, None, job.options.limits)
        except ImageError as exc:
            raise ItemRejected(str(exc)) from None
    if "://" in ref:
        raise ItemRejected("uploaded rows may reference images inline, as data: URIs, or inside the attached zip")
    path = Path(ref).resolve()
    if not path.is_relative_to(root):
        raise ItemRejected(f"image path {ref!r} is outside the upload (attach the images as a zip)")
    try:
        return load_image_bytes(str(path), None, job.options.limits)
    except ImageError as exc:
        raise ItemRejected(str(exc)) from None


@router.post("")
async def upload_items(
    request: Request,
    job: JobDep,
    jobs: JobStoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="Items: .jsonl, .json or .parquet in a known format.")],
    images: Annotated[UploadFile | None, File(description="Optional zip of the images the file refers to.")] = None,
    format: Annotated[str | None, Form(description=f"Force the format: {', '.join(FORMATS)}.")] = None,
) -> ItemsResult:
    """Submit many items as one file; per-row accepted ids or reasons, like POST .../items."""
    if job.closed_at is not None:
        raise HTTPException(409, f"job {job.id} is closed; create a new job for more items")
    if format is not None and format not in FORMATS:
        raise HTTPException(422, f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in SUFFIXES:
        raise HTTPException(422, f"file must end in {', '.join(SUFFIXES)}, got {file.filename!r}")
    folder = Path(tempfile.mkdtemp(prefix="mfpo-upload-")).resolve()
    try:
        items_path = folder / f"items{suffix}"
        await _save(file, items_path, settings.max_upload_bytes)
        if images is not None:
            archive = folder.parent / f"{folder.name}.zip"
            try:
                await _save(images, archive, settings.max_upload_bytes)
                extract_zip(archive, folder, settings.max_upload_bytes)
            finally:
                archive.unlink(missing_ok=True)
        return _accept_rows(request, job, jobs, celery, items_path, folder, format)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _accept_rows(request: Request, job: JobRecord, jobs: JobStore, celery: CeleryDep, items_path: Path,
                 root: Path, format: str | None) -> ItemsResult:
    accepted, rejected = [], []
    base = len(jobs.item_ids(job))
    metrics = request.app.state.resources
    try:
        entries = list(read_items(items_path, format, job.options.limits))
    except (ValueError, OSError) as exc:
        raise HTTPException(422, f"cannot read the uploaded file: {exc}") from None
    for index, entry in enumerate(entries):
        if not isinstance(entry, ReadItem):
            rejected.append(ItemRefused(index=entry.row if entry.row is not None else index, error=entry.reason))
            metrics.items_rejected.inc()
            continue
        try:
            item_id = store_item(jobs, job, entry.item, _image_bytes(entry, root, job), seq=base + index)
        except ItemRejected as exc:
            rejected.append(ItemRefused(index=entry.row, error=str(exc)))
            metrics.items_rejected.inc()
            continue
        enqueue_item(celery, job.tenant, job.id, item_id)
        accepted.append(ItemAccepted(index=entry.row, id=item_id))
        metrics.items_accepted.inc()
    return ItemsResult(accepted=accepted, rejected=rejected)
