"""The finished dataset of a job: the manifest (JSONL, Parquet), an export format, or everything as one tar."""

from __future__ import annotations

import io
import queue
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from mfpo.exporters import export_dataset
from mfpo.jobs import JobKeys, JobRecord, JobStore
from mfpo.pipeline.dataset import DatasetStats, read_dataset
from mfpo.schemas import ResultRecord
from services.gateway.deps import JobDep, JobStoreDep
from services.gateway.schemas import AUTHED_ERRORS, errors

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["datasets"], responses={**AUTHED_ERRORS, **errors(409)})


class DatasetFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"
    tar = "tar"
    trl = "trl"
    rlaifv = "rlaifv"
    hf = "hf"
    llamafactory = "llamafactory"


def require_finished(jobs: JobStore, job: JobRecord) -> None:
    if not jobs.dataset_ready(job):
        raise HTTPException(409, f"job {job.id} is not finished: close it and wait until every item is done")


def _materialize(jobs: JobStore, job: JobRecord, folder: Path) -> None:
    """Copy the dataset and the images it references into ``folder`` (the layout exporters read)."""
    (folder / "dataset.jsonl").write_bytes(jobs.store.get(JobKeys(job.tenant, job.id).manifest))
    outputs = jobs.outputs(job)
    for record in read_dataset(folder):
        for rel in record.files():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(outputs.get(rel))


class _QueueSink(io.RawIOBase):
    """A write-only file whose bytes go, 1 MiB at a time, into a bounded queue a response reads from."""

    def __init__(self, out: queue.Queue[bytes | BaseException | None], block: int = 1 << 20) -> None:
        self.out, self.block, self.data = out, block, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.data += b
        if len(self.data) >= self.block:
            self.out.put(bytes(self.data), timeout=600)  # a client gone for 10 min: stop writing
            self.data = bytearray()
        return len(b)

    def finish(self) -> None:
        if self.data:
            self.out.put(bytes(self.data))
        self.data = bytearray()


class _StoreReader(io.RawIOBase):
    """A readable file over one stored object, read in ranges (never the whole object in memory)."""

    def __init__(self, jobs: JobStore, key: str, size: int) -> None:
        self.jobs, self.key, self.size, self.pos = jobs, key, size, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        data = self.jobs.store.get_range(self.key, self.pos, n)
        self.pos += len(data)
        return data


def _records(jobs: JobStore, job: JobRecord, stats: DatasetStats) -> Iterator[ResultRecord]:
    """The manifest's records a page (one range request) at a time."""
    manifest = JobKeys(job.tenant, job.id).manifest
    for page in range(len(stats.page_offsets)):
        offset, length = stats.page_range(page)
        for line in jobs.store.get_range(manifest, offset, length).decode("utf-8").splitlines():
            if line.strip():
                yield ResultRecord.model_validate_json(line)


def write_tar(jobs: JobStore, job: JobRecord, sink: io.RawIOBase) -> None:
    """The whole dataset as an uncompressed tar: ``dataset.jsonl`` (read in ranges), ``dataset.parquet``,
    ``failures.jsonl``, ``stats.json`` and every record's three images at their relative paths."""
    keys = JobKeys(job.tenant, job.id)
    stats = DatasetStats.model_validate_json(jobs.store.get(keys.stats))
    outputs = jobs.outputs(job)
    mtime = int(job.created_at.timestamp())

    def info(name: str, size: int) -> tarfile.TarInfo:
        entry = tarfile.TarInfo(name)
        entry.size, entry.mode, entry.mtime = size, 0o644, mtime
        return entry

    with tarfile.open(fileobj=sink, mode="w|") as tar:
        tar.addfile(info("dataset.jsonl", stats.jsonl_bytes), _StoreReader(jobs, keys.manifest, stats.jsonl_bytes))
        for name in ("dataset.parquet", "failures.jsonl", "stats.json"):
            data = jobs.store.get(f"{keys.dataset}/{name}")
            tar.addfile(info(name, len(data)), io.BytesIO(data))
        for record in _records(jobs, job, stats):
            for rel in record.files():
                data = outputs.get(rel)
                tar.addfile(info(rel, len(data)), io.BytesIO(data))


def tar_stream(jobs: JobStore, job: JobRecord, queued_blocks: int = 8) -> Iterator[bytes]:
    """:func:`write_tar`, streamed: a thread writes the tar into a bounded queue (``queued_blocks`` MiB at
    most in memory) while the response sends it."""
    out: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=queued_blocks)
    sink = _QueueSink(out)

    def produce() -> None:
        try:
            write_tar(jobs, job, sink)
            sink.finish()
            out.put(None)
        except BaseException as exc:
            out.put(exc)

    threading.Thread(target=produce, daemon=True, name="mfpo-tar").start()
    while True:
        block = out.get()
        if block is None:
            return
        if isinstance(block, BaseException):
            raise block
        yield block


@router.get("/dataset", responses={200: {"description": "The dataset in the asked format", "content": {
    "application/x-ndjson": {}, "application/vnd.apache.parquet": {}, "application/x-tar": {}}}})
def get_dataset(job: JobDep, jobs: JobStoreDep, format: DatasetFormat = DatasetFormat.jsonl) -> Response:
    """The dataset once the job is finished (409 before).

    * ``jsonl`` / ``parquet``: the manifest (image paths relative to the job's ``out/``; fetch them through the
      item URLs, or read ``s3://BUCKET/tenants/T/jobs/J/out`` directly);
    * ``tar``: everything in one self-contained, streamed download (manifest, failures, images);
    * ``trl``, ``rlaifv``, ``hf``: the export Parquet with the image bytes inside (what ``mfpo export`` writes);
    * ``llamafactory``: a tar of LLaMA-Factory's folder (rows, images, ``dataset_info.json``).
    """
    keys = JobKeys(job.tenant, job.id)
    require_finished(jobs, job)
    if format is DatasetFormat.jsonl:
        return Response(jobs.store.get(keys.manifest), media_type="application/x-ndjson")
    if format is DatasetFormat.parquet:
        return Response(jobs.store.get(f"{keys.dataset}/dataset.parquet"), media_type="application/vnd.apache.parquet")
    if format is DatasetFormat.tar:
        return StreamingResponse(tar_stream(jobs, job), media_type="application/x-tar",
                                 headers={"Content-Disposition": f'attachment; filename="{job.id}.tar"'})
    stats = DatasetStats.model_validate_json(jobs.store.get(keys.stats))
    if stats.records == 0:
        raise HTTPException(409, f"job {job.id} has no records ({stats.failures} failed): there is nothing to export "
                                 "as a training set; see format=jsonl for the failures' reasons")
    folder = Path(tempfile.mkdtemp(prefix="mfpo-export-"))
    try:
        _materialize(jobs, job, folder)
        if format is DatasetFormat.llamafactory:
            target = folder / "llamafactory"
            export_dataset(folder, "llamafactory", target)
            path = Path(shutil.make_archive(str(folder / f"{job.id}-llamafactory"), "tar", target))
            media, name = "application/x-tar", f"{job.id}-llamafactory.tar"
        else:
            path = export_dataset(folder, format.value, folder / f"{format.value}.parquet")
            media, name = "application/vnd.apache.parquet", f"{job.id}-{format.value}.parquet"
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type=media, filename=name,
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
