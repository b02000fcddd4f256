"""The finished dataset of a job (JSONL, Parquet, TRL's vision DPO Parquet) and its gallery, paged."""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from enum import Enum
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.background import BackgroundTask

from mfpo.exporters import export_dataset
from mfpo.gallery import render_gallery_page
from mfpo.jobs import JobKeys, JobRecord, JobStore
from mfpo.pipeline.dataset import DatasetStats, read_dataset
from mfpo.schemas import ResultRecord
from services.gateway.deps import JobDep, JobStoreDep
from services.gateway.schemas import AUTHED_ERRORS, errors

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["datasets"], responses={**AUTHED_ERRORS, **errors(409)})


class DatasetFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"
    trl = "trl"


def _materialize(jobs: JobStore, job: JobRecord, folder: Path) -> None:
    """Copy the dataset and the images it references into ``folder`` (the layout exporters read)."""
    (folder / "dataset.jsonl").write_bytes(jobs.store.get(JobKeys(job.tenant, job.id).manifest))
    outputs = jobs.outputs(job)
    for record in read_dataset(folder):
        for rel in (record.image, record.rejected_image, record.mask):
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(outputs.get(rel))


def _require_finished(jobs: JobStore, job: JobRecord) -> None:
    if not jobs.dataset_ready(job):
        raise HTTPException(409, f"job {job.id} is not finished: close it and wait until every item is done")


@router.get("/dataset", responses={200: {"description": "JSONL lines or a Parquet file", "content": {
    "application/x-ndjson": {}, "application/vnd.apache.parquet": {}}}})
def get_dataset(job: JobDep, jobs: JobStoreDep, format: DatasetFormat = DatasetFormat.jsonl) -> Response:
    """The dataset once the job is finished (409 before). jsonl/parquet: the manifest (image paths relative
    to the job's outputs, fetch them through the item URLs); trl: a self-contained Parquet with image bytes."""
    keys = JobKeys(job.tenant, job.id)
    _require_finished(jobs, job)
    if format is DatasetFormat.jsonl:
        return Response(jobs.store.get(keys.manifest), media_type="application/x-ndjson")
    if format is DatasetFormat.parquet:
        return Response(jobs.store.get(f"{keys.dataset}/dataset.parquet"), media_type="application/vnd.apache.parquet")
    folder = Path(tempfile.mkdtemp(prefix="mfpo-export-"))
    try:
        _materialize(jobs, job, folder)
        path = export_dataset(folder, "trl", folder / "trl.parquet")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(path, media_type="application/vnd.apache.parquet", filename=f"{job.id}-trl.parquet",
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


GALLERY_URL_TTL = timedelta(hours=1)


def dataset_page(jobs: JobStore, job: JobRecord, stats: DatasetStats, page: int) -> list[ResultRecord]:
    """The records of one page, read with one range request on the manifest (never the whole dataset)."""
    offset, length = stats.page_range(page)
    if length == 0:
        return []
    data = jobs.store.get_range(JobKeys(job.tenant, job.id).manifest, offset, length)
    return [ResultRecord.model_validate_json(line) for line in data.decode("utf-8").splitlines() if line.strip()]


@router.get("/gallery", response_class=Response,
            responses={200: {"description": "The gallery page", "content": {"text/html": {}}}})
def get_gallery(job: JobDep, jobs: JobStoreDep, page: int = Query(1, ge=1, description="1-based page.")
                ) -> HTMLResponse:
    """The job's gallery (original, rejected image and mask per item; presigned image URLs), a page at a time."""
    _require_finished(jobs, job)
    stats = DatasetStats.model_validate_json(jobs.store.get(JobKeys(job.tenant, job.id).stats))
    try:
        records = dataset_page(jobs, job, stats, page - 1)
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from None
    outputs = jobs.outputs(job)
    html = render_gallery_page(
        records,
        f"MFPO job {job.name}",
        link=lambda rel: outputs.url(rel, GALLERY_URL_TTL),
        page_href=lambda k: f"?page={k + 1}",
        stats=stats,
        page=page - 1,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
