"""Jobs: create, list (paginated), status (O(1): one store read, one Redis round trip), close."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import ValidationError

from mfpo.jobs import JobRecord, JobState, JobStore, StateLost
from mfpo.jobs.dispatch import Dispatcher
from mfpo.jobs.intake import validation_message
from mfpo.jobs.settings import PlatformSettings
from mfpo.negatives.config import DEPLOYMENT_FIELDS, NEGATIVE_KINDS
from mfpo.pipeline.config import GenerateConfig
from services.gateway.deps import (
    DispatcherDep,
    JobDep,
    JobStateDep,
    JobStateFactory,
    JobStoreDep,
    PlatformDep,
    SettingsDep,
    TenantDep,
)
from services.gateway.schemas import AUTHED_ERRORS, JobCounts, JobCreate, JobDeleted, JobList, JobPublic, errors
from services.gateway.settings import DEFAULT_OPTION_BOUNDS, GatewaySettings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTHED_ERRORS)


def deployment_fields(value: Any, path: str = "options.negatives") -> list[str]:
    """The dotted paths of deployment settings (model paths, devices, dtypes, batch sizes) in client options."""
    if not isinstance(value, dict):
        return []
    found = []
    for key, child in value.items():
        if key in DEPLOYMENT_FIELDS:
            found.append(f"{path}.{key}")
        found += deployment_fields(child, f"{path}.{key}")
    return found


def check_negatives(negatives: Any, platform: PlatformSettings, region_mode: str) -> None:
    """422 unless the kinds asked for are ones this deployment can make, with no deployment setting among the
    client's negatives options."""
    if not isinstance(negatives, dict):
        raise HTTPException(422, "options.negatives must be an object")
    given = deployment_fields(negatives)
    if given:
        raise HTTPException(422, f"{', '.join(given)}: deployment settings, not job options")
    kinds = negatives.get("kinds") or []
    able = platform.negative_kinds()
    missing = [k for k in kinds if isinstance(k, str) and k in NEGATIVE_KINDS and k not in able]
    if missing:
        needs = {"adavip": "a CLIP model (MFPO_CLIP_MODEL)", "mbpo": "the policy model (MFPO_POLICY_MODEL)"}
        raise HTTPException(422, "; ".join(f"negatives kind '{k}' needs a deployment with {needs[k]}" for k in missing)
                            + f" (this deployment makes: {', '.join(able)})")
    adavip = negatives.get("adavip")
    if isinstance(adavip, dict) and adavip.get("candidates") == "regions+detector" and "adavip" in kinds:
        if not platform.models_configured:
            raise HTTPException(422, "adavip candidates 'regions+detector' need a deployment with a grounding model "
                                     "and SAM")
        if region_mode not in ("auto", "grounded"):
            raise HTTPException(422, "adavip candidates 'regions+detector' use the grounding model: regions.mode "
                                     f"must be auto or grounded, not {region_mode!r}")


def job_options(raw: dict[str, Any], settings: GatewaySettings, platform: PlatformSettings) -> GenerateConfig:
    """Validate client options; model paths are refused (deployment settings), grounded needs models, the
    negatives' models are the deployment's.

    ``limits.max_pixels`` defaults to, and may not exceed, the deployment's ``max_image_pixels``.
    """
    regions, limits = raw.get("regions") or {}, raw.get("limits") or {}
    if not isinstance(regions, dict) or not isinstance(limits, dict):
        raise HTTPException(422, "options.regions and options.limits must be objects")
    if {"grounding", "sam"} & set(regions):
        raise HTTPException(422, "options.regions.grounding/sam are deployment settings, not job options")
    if regions.get("mode") == "grounded" and not platform.models_configured:
        raise HTTPException(422, "regions.mode 'grounded' needs a deployment with a grounding model and SAM")
    limits = {"max_pixels": settings.max_image_pixels, "max_working_pixels": settings.max_working_pixels, **limits}
    extra: dict[str, Any] = {}
    if "negatives" in raw:
        check_negatives(raw["negatives"], platform, str(regions.get("mode", "auto")))
        extra["negatives"] = platform.deployment_negatives(raw["negatives"])
    try:
        options = GenerateConfig.model_validate({**raw, "limits": limits, **extra})
    except (ValidationError, TypeError, ValueError) as exc:
        message = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        raise HTTPException(422, f"invalid options: {message}") from None
    if options.limits.max_pixels > settings.max_image_pixels:
        raise HTTPException(422, f"options.limits.max_pixels is above this deployment's {settings.max_image_pixels}")
    over = options_over_bounds(options, settings.option_bounds)
    if over:
        raise HTTPException(422, f"invalid options: {'; '.join(over)} (this deployment's option_bounds)")
    if options.limits.max_working_pixels > settings.max_working_pixels:
        raise HTTPException(422, "options.limits.max_working_pixels is above this deployment's "
                                 f"{settings.max_working_pixels}")
    return options


def options_over_bounds(options: GenerateConfig, bounds: dict[str, float]) -> list[str]:
    """The options above their server-side bound, as readable lines (a list's bound is its length)."""
    data = options.model_dump(mode="json")
    over = []
    for path, bound in sorted({**DEFAULT_OPTION_BOUNDS, **bounds}.items()):
        value: Any = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        size = len(value) if isinstance(value, (list, tuple)) else value
        if isinstance(size, (int, float)) and not isinstance(size, bool) and size > bound:
            what = "has more than" if isinstance(value, (list, tuple)) else "is above"
            over.append(f"{path} {what} {bound:g}")
    return over


def public(job: JobRecord, jobs: JobStore, state: JobState, dispatcher: Dispatcher,
           settings: GatewaySettings) -> JobPublic:
    """The job's status from its derived state (no LIST, no GET per item). A lost state answers 503 and asks the
    workers for a rebuild (once)."""
    try:
        counts = state.counts()
    except StateLost:
        if state.ask_rebuild_once():
            dispatcher.rebuild(job.tenant, job.id)
        raise
    rate = state.recent_rate(settings.status_rate_window_s)
    remaining = counts.submitted - counts.finished
    if job.cancelled_at is not None or counts.cancelled:
        phase = "cancelled"
    elif job.closed_at is None:
        phase = "closing" if counts.closing else "open"
    elif counts.finalize == "done" and remaining <= 0:
        phase = "finished"
    else:
        phase = "processing"
    if remaining <= 0:
        eta: float | None = 0.0
    else:
        eta = round(remaining / rate, 1) if rate else None
    return JobPublic(
        id=job.id,
        name=job.name,
        options=job.options.model_dump(mode="json"),
        created_at=job.created_at,
        closed_at=job.closed_at,
        cancelled_at=job.cancelled_at,
        status=phase,
        counts=JobCounts(submitted=counts.submitted, queued=counts.queued, running=counts.running,
                         done=counts.done, failed=counts.failed),
        progress=counts.finished / counts.submitted if counts.submitted else 0.0,
        items_per_second=round(rate or 0.0, 4),
        eta_seconds=eta,
        stages=counts.stages,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_job(body: JobCreate, tenant: TenantDep, jobs: JobStoreDep, settings: SettingsDep,
               platform: PlatformDep, dispatcher: DispatcherDep, job_state: JobStateFactory) -> JobPublic:
    """Create a job; items are added with POST /v1/jobs/{id}/items or /v1/jobs/{id}/uploads."""
    job = jobs.create_job(tenant, body.name, job_options(body.options, settings, platform))
    state = job_state(job)
    state.init()
    return public(job, jobs, state, dispatcher, settings)


@router.get("")
def list_jobs(tenant: TenantDep, jobs: JobStoreDep, settings: SettingsDep, dispatcher: DispatcherDep,
              job_state: JobStateFactory,
              limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
              after: Annotated[str | None, Query(pattern=r"^[0-9]{8}T[0-9]{12}-[0-9a-f]{16}$",
                                                 description="The previous page's next_after.")] = None,
              ) -> JobList:
    """The tenant's jobs, oldest first, a page at a time (``next_after`` continues; null at the end)."""
    page, cursor = jobs.list_jobs(tenant, limit, after)
    out = []
    for job in page:
        try:
            out.append(public(job, jobs, job_state(job), dispatcher, settings))
        except StateLost:
            continue
    return JobList(jobs=out, next_after=cursor)


@router.get("/{job_id}")
def get_job_status(job: JobDep, jobs: JobStoreDep, state: JobStateDep, dispatcher: DispatcherDep,
                   settings: SettingsDep) -> JobPublic:
    """Counts queued/running/done/failed, progress, recent items/s and ETA, items per stage."""
    return public(job, jobs, state, dispatcher, settings)


@router.post("/{job_id}/close", responses=errors(409))
def close_job(job: JobDep, jobs: JobStoreDep, state: JobStateDep, dispatcher: DispatcherDep,
              settings: SettingsDep, platform: PlatformDep) -> JobPublic:
    """No more items. Waits (up to ``close_wait_s``) for submissions still in flight, then closes; the dataset
    is written when the last item finishes. 409 when submissions are still running (the job stays closing)."""
    in_flight = state.begin_close()
    deadline = time.monotonic() + platform.close_wait_s
    while in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
        in_flight = state.in_flight()
    if in_flight:
        raise HTTPException(409, f"{in_flight} submission(s) to job {job.id} still in flight; it accepts no more "
                                 "items; call close again once they are answered")
    closed = jobs.close_job(job)
    if state.mark_closed():
        dispatcher.finalize(closed)
    return public(closed, jobs, state, dispatcher, settings)


@router.post("/{job_id}/cancel")
def cancel_job(job: JobDep, jobs: JobStoreDep, state: JobStateDep, dispatcher: DispatcherDep,
               settings: SettingsDep) -> JobPublic:
    """Stop the job: it accepts no items, stages not started yet do nothing, no dataset is written. What is done
    stays readable (items, their files) until the job is deleted."""
    cancelled = jobs.cancel_job(job)
    state.cancel()
    return public(cancelled, jobs, state, dispatcher, settings)


@router.delete("/{job_id}", status_code=status.HTTP_202_ACCEPTED)
def delete_job(job: JobDep, jobs: JobStoreDep, state: JobStateDep, dispatcher: DispatcherDep) -> JobDeleted:
    """Cancel the job and delete all its objects and state (a worker does it in the background; the job answers
    404 once it is gone)."""
    jobs.cancel_job(job)
    state.cancel()
    dispatcher.delete(job.tenant, job.id)
    return JobDeleted(id=job.id, detail="cancelled; its objects are being deleted")
