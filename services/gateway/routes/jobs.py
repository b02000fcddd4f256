"""Jobs: create, list, status, close."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import ValidationError

from mfpo.jobs import JobRecord, JobStore
from mfpo.jobs.intake import validation_message
from mfpo.jobs.records import utc_now
from mfpo.pipeline.config import GenerateConfig
from services.gateway.deps import CeleryDep, JobDep, JobStoreDep, SettingsDep, TenantDep
from services.gateway.schemas import AUTHED_ERRORS, JobCounts, JobCreate, JobPublic
from services.settings import Settings
from worker.client import reconcile

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTHED_ERRORS)


def job_options(raw: dict[str, Any], settings: Settings) -> GenerateConfig:
    """Validate client options; model paths are refused (deployment settings), grounded needs models.

    ``limits.max_pixels`` defaults to, and may not exceed, the deployment's ``max_image_pixels``.
    """
    regions, limits = raw.get("regions") or {}, raw.get("limits") or {}
    if not isinstance(regions, dict) or not isinstance(limits, dict):
        raise HTTPException(422, "options.regions and options.limits must be objects")
    if {"grounding", "sam"} & set(regions):
        raise HTTPException(422, "options.regions.grounding/sam are deployment settings, not job options")
    if regions.get("mode") == "grounded" and not (settings.grounding_model and settings.sam_checkpoint):
        raise HTTPException(422, "regions.mode 'grounded' needs a deployment with a grounding model and SAM")
    limits = {"max_pixels": settings.max_image_pixels, **limits}
    try:
        options = GenerateConfig.model_validate({**raw, "limits": limits})
    except (ValidationError, TypeError, ValueError) as exc:
        message = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        raise HTTPException(422, f"invalid options: {message}") from None
    if options.limits.max_pixels > settings.max_image_pixels:
        raise HTTPException(422, f"options.limits.max_pixels is above this deployment's {settings.max_image_pixels}")
    return options


def public(job: JobRecord, jobs: JobStore) -> JobPublic:
    counts = jobs.counts(job)
    finished = counts["done"] + counts["failed"]
    elapsed = max((utc_now() - job.created_at).total_seconds(), 1e-6)
    rate = finished / elapsed
    remaining = counts["submitted"] - finished
    if job.closed_at is None:
        state = "open"
    elif remaining == 0 and jobs.dataset_ready(job):
        state = "finished"
    else:
        state = "processing"
    return JobPublic(
        id=job.id,
        name=job.name,
        options=job.options.model_dump(mode="json"),
        created_at=job.created_at,
        closed_at=job.closed_at,
        status=state,
        counts=JobCounts(**counts),
        progress=finished / counts["submitted"] if counts["submitted"] else 0.0,
        items_per_second=round(rate, 4),
        eta_seconds=round(remaining / rate, 1) if rate > 0 and remaining else (0.0 if not remaining else None),
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_job(body: JobCreate, tenant: TenantDep, jobs: JobStoreDep, settings: SettingsDep) -> JobPublic:
    """Create a job; items are added with POST /v1/jobs/{id}/items."""
    job = jobs.create_job(tenant, body.name, job_options(body.options, settings))
    return public(job, jobs)


@router.get("")
def list_jobs(tenant: TenantDep, jobs: JobStoreDep) -> list[JobPublic]:
    """The tenant's jobs."""
    return [public(j, jobs) for j in jobs.list_jobs(tenant)]


@router.get("/{job_id}")
def get_job_status(job: JobDep, jobs: JobStoreDep) -> JobPublic:
    """Counts queued/running/done/failed, progress, items/s and ETA."""
    return public(job, jobs)


@router.post("/{job_id}/close")
def close_job(job: JobDep, jobs: JobStoreDep, celery: CeleryDep) -> JobPublic:
    """No more items; unfinished items are re-queued and the dataset is built when all are done."""
    closed = jobs.close_job(job)
    reconcile(celery, jobs, closed.tenant, closed.id)
    return public(closed, jobs)
