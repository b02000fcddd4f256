"""Uploads: a JSONL/JSON/Parquet file in any format the readers know, images inline or in a zip.

The request is authenticated before its body is read (the route takes no form parameters:
FastAPI would read and spool the body before running the dependencies). The multipart body is
then streamed to a temporary folder, part by part, with the file writes off the event loop
(``max_upload_bytes`` per part). An attached zip is never extracted: each image is read from it on
demand, bounded by the job's ``limits.max_bytes`` (zip-slip and zip-bomb proof by construction).
The rows are read and submitted in a worker thread through the one intake path
(:class:`~mfpo.jobs.intake.Submission`), so ``/healthz`` keeps answering during a big upload.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from mfpo.images import ImageError, load_image_bytes
from mfpo.jobs import ItemRejected, JobClosing, JobRecord, JobState, JobStore, Submission, SubmissionInterrupted
from mfpo.jobs.dispatch import Dispatcher
from mfpo.jobs.intake import IntakeLimits, check_text_limits
from mfpo.jobs.settings import PlatformSettings
from mfpo.readers import FORMATS, ReadItem, read_items
from services.gateway.deps import DispatcherDep, JobDep, JobStateDep, JobStoreDep, PlatformDep, SettingsDep
from services.gateway.routes.items import count, interrupted, items_result
from services.gateway.schemas import AUTHED_ERRORS, ItemsInterrupted, ItemsResult, UploadForm, errors

router = APIRouter(prefix="/v1/jobs/{job_id}/uploads", tags=["uploads"],
                   responses={**AUTHED_ERRORS, **errors(409)})

SUFFIXES = (".jsonl", ".json", ".parquet")
MAX_ZIP_MEMBERS = 1_000_000
FLUSH_BYTES = 1 << 20
FIELD_LIMIT = 1024


class _Part:
    def __init__(self) -> None:
        self.name = ""
        self.filename: str | None = None
        self.path: Path | None = None
        self.buffer = bytearray()
        self.size = 0
        self.handle: Any = None
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}


class MultipartUpload:
    """A streamed multipart/form-data body: file parts as files in ``folder``, text fields in memory."""

    def __init__(self, folder: Path, part_limit: int) -> None:
        self.folder = folder
        self.part_limit = part_limit
        self.files: dict[str, tuple[str, Path]] = {}
        self.fields: dict[str, str] = {}
        self._part: _Part | None = None
        self._done: list[_Part] = []
        self._error: HTTPException | None = None

    # python-multipart callbacks (synchronous, called from parser.write) --------------------------

    def on_part_begin(self) -> None:
        self._part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        assert self._part is not None
        self._part.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        assert self._part is not None
        self._part.header_value += data[start:end]

    def on_header_end(self) -> None:
        part = self._part
        assert part is not None
        part.headers[part.header_field.lower()] = part.header_value
        part.header_field = part.header_value = b""

    def on_headers_finished(self) -> None:
        part = self._part
        assert part is not None
        _, params = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if part.name not in ("file", "images", "format"):
            self._error = HTTPException(422, f"unknown form field {part.name!r}: send file, images (zip), format")
        elif part.name in self.files or part.name in self.fields:
            self._error = HTTPException(422, f"form field {part.name!r} given twice")
        elif part.filename is not None:
            part.path = self.folder / f"part-{part.name}"
            part.handle = open(part.path, "wb")  # noqa: SIM115 (closed at part end)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        part.size += end - start
        limit = self.part_limit if part.filename is not None else FIELD_LIMIT
        if part.size > limit:
            what = f"upload {part.filename!r}" if part.filename is not None else f"form field {part.name!r}"
            self._error = self._error or HTTPException(413, f"{what} is over {limit} bytes (max_upload_bytes)")
            return
        part.buffer += data[start:end]

    def on_part_end(self) -> None:
        assert self._part is not None
        self._done.append(self._part)
        self._part = None

    # the body, streamed --------------------------------------------------------------------------

    async def read(self, request: Request) -> None:
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or b"boundary" not in params:
            raise HTTPException(422, "send the upload as multipart/form-data with a 'file' part")
        callbacks: Any = {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end")}
        parser = MultipartParser(params[b"boundary"], callbacks)
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if self._error is not None:
                    raise self._error
                await self._flush(final=False)
            parser.finalize()
        except HTTPException:
            raise
        except Exception as exc:  # malformed multipart
            raise HTTPException(422, f"malformed multipart body: {exc}") from None
        finally:
            await self._flush(final=True)
        if self._error is not None:
            raise self._error

    async def _flush(self, final: bool) -> None:
        """Write buffered file data (1 MiB at a time, in a thread) and settle finished parts."""
        parts = [*self._done, *([self._part] if self._part is not None else [])]
        for part in parts:
            if part.handle is not None and (final or len(part.buffer) >= FLUSH_BYTES or part in self._done):
                data, part.buffer = bytes(part.buffer), bytearray()
                if data:
                    await anyio.to_thread.run_sync(part.handle.write, data)
        for part in self._done:
            if part.handle is not None:
                await anyio.to_thread.run_sync(part.handle.close)
                part.handle = None
                assert part.path is not None
                self.files[part.name] = (part.filename or "", part.path)
            elif part.filename is None:
                self.fields[part.name] = bytes(part.buffer).decode("utf-8", "replace")
        self._done = []
        if final and self._part is not None and self._part.handle is not None:
            self._part.handle.close()


def _zip_image(zf: zipfile.ZipFile, ref: str, root: Path, max_bytes: int) -> bytes:
    """An image of the attached zip, named by the row relative to the file (paths cannot leave the zip)."""
    try:
        rel = Path(ref).relative_to(root)
    except ValueError:
        raise ItemRejected(f"image path {ref!r} is outside the upload (attach the images as a zip)") from None
    name = PurePosixPath(*rel.parts).as_posix()
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ItemRejected(f"image {name!r} is not in the attached zip") from None
    if info.file_size > max_bytes:
        raise ItemRejected(f"image {name!r} is {info.file_size} bytes, over max_bytes={max_bytes}")
    try:
        with zf.open(info) as member:
            data = member.read(max_bytes + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        raise ItemRejected(f"cannot read {name!r} from the zip: {exc}") from None
    if len(data) > max_bytes:
        raise ItemRejected(f"image {name!r} is over max_bytes={max_bytes}")
    return data


def _image_bytes(entry: ReadItem, root: Path, job: JobRecord, zf: zipfile.ZipFile | None) -> bytes:
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
    if zf is None:
        raise ItemRejected(f"row names image {Path(ref).name!r}, but no zip of images was attached")
    return _zip_image(zf, ref, root, job.options.limits.max_bytes)


def open_zip(path: Path, limit: int) -> zipfile.ZipFile:
    """The attached zip, checked: a valid archive, not too many members, declared sizes within ``limit``."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise HTTPException(422, f"images is not a valid zip file: {exc}") from None
    members = zf.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        zf.close()
        raise HTTPException(422, f"zip has {len(members)} members; the limit is {MAX_ZIP_MEMBERS}")
    if sum(m.file_size for m in members) > limit:
        zf.close()
        raise HTTPException(413, f"zip expands to more than {limit} bytes (max_upload_bytes)")
    for m in members:
        if m.filename.startswith("/") or ".." in PurePosixPath(m.filename).parts:
            zf.close()
            raise HTTPException(422, f"zip member {m.filename!r} would be outside the upload")
    return zf


def accept_rows(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord, platform: PlatformSettings,
                limits: IntakeLimits, items_path: Path, root: Path, zip_path: Path | None, format: str | None,
                zip_limit: int, filename: str = "the file") -> ItemsResult:
    """Read the uploaded rows and submit them (runs in a worker thread)."""
    zf = open_zip(zip_path, zip_limit) if zip_path is not None else None
    try:
        rows = read_items(items_path, format, job.options.limits)
        with Submission(jobs, state, dispatcher, job, platform) as submission:
            try:
                for entry in rows:
                    if not isinstance(entry, ReadItem):
                        index = entry.row if entry.row is not None else -1
                        submission.reject(index, entry.reason)
                        continue
                    try:
                        check_text_limits(entry.item, limits)
                        data = _image_bytes(entry, root, job, zf)
                    except ItemRejected as exc:
                        submission.reject(entry.row, str(exc))
                        continue
                    submission.add(entry.row, entry.item, data)
            except (ValueError, OSError) as exc:  # the file itself cannot be read (format, broken Parquet)
                message = str(exc).replace(str(items_path), filename).replace(str(root), "<upload>")
                raise HTTPException(422, f"cannot read the uploaded file: {message}") from None
            return items_result(submission.finish())
    finally:
        if zf is not None:
            zf.close()


@router.post("", openapi_extra={"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": UploadForm.model_json_schema()}}}},
    responses={503: {"model": ItemsInterrupted, "description": "Store or broker failed mid-way."}})
async def upload_items(request: Request, job: JobDep, jobs: JobStoreDep, state: JobStateDep,
                       dispatcher: DispatcherDep, settings: SettingsDep, platform: PlatformDep) -> Any:
    """Submit many items as one file (multipart: ``file``, optional ``images`` zip, optional ``format``);
    per-row accepted ids or reasons, like POST .../items (the index is the row of the file)."""
    if job.closed_at is not None:
        raise HTTPException(409, f"job {job.id} is closed; create a new job for more items")
    folder = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="mfpo-upload-"))).resolve()
    try:
        body = MultipartUpload(folder, settings.max_upload_bytes)
        await body.read(request)
        format = body.fields.get("format") or None
        if format is not None and format not in FORMATS:
            raise HTTPException(422, f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        if "file" not in body.files:
            raise HTTPException(422, "the upload needs a 'file' part (.jsonl, .json or .parquet)")
        filename, path = body.files["file"]
        suffix = Path(filename).suffix.lower()
        if suffix not in SUFFIXES:
            raise HTTPException(422, f"file must end in {', '.join(SUFFIXES)}, got {filename!r}")
        items_path = path.rename(folder / f"items{suffix}")
        zip_path = body.files["images"][1] if "images" in body.files else None
        try:
            result = await run_in_threadpool(
                accept_rows, jobs, state, dispatcher, job, platform, settings.intake_limits(), items_path, folder,
                zip_path, format, settings.max_upload_bytes, filename)
        except JobClosing:
            raise HTTPException(409, f"job {job.id} is closed; create a new job for more items") from None
        except SubmissionInterrupted as exc:
            return interrupted(exc)
        count(request, result)
        return result
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
