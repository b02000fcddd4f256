"""Celery tasks: keywords (cpu) -> regions (gpu when models are configured, else cpu) -> perturb (cpu).

Each task takes ids, loads what it needs from the store, runs one stage of
:mod:`mfpo.jobs.stages` and enqueues the next. Stages are idempotent, so a redelivered
or duplicated task is harmless. Transient store errors are retried with exponential
backoff; anything else that goes wrong with an item is recorded as its failure by the
stage itself, so the item still ends ``failed`` with a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from mfpo.jobs import JobNotFound, JobRecord, JobStore, write_job_dataset
from mfpo.jobs.dataset import JobNotFinished
from mfpo.jobs.records import ItemOutcome
from mfpo.jobs.stages import MissingStageOutput, keywords_stage, perturb_stage, regions_stage
from mfpo.pipeline.resources import StageResources, build_resources
from mfpo.regions.config import RegionsConfig
from mfpo.schemas import Failure
from mfpo.storage.base import StoreUnavailable
from services.settings import Settings, get_settings
from worker.app import celery_app
from worker.client import CPU_QUEUE, GPU_QUEUE, queue_name, reconcile, request_finalize

log = logging.getLogger(__name__)

TRANSIENT = (StoreUnavailable, ConnectionError, TimeoutError)


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    return JobStore(get_settings().open_store())


def models_configured(settings: Settings) -> bool:
    return bool(settings.grounding_model and settings.sam_checkpoint)


def effective_regions(regions: RegionsConfig, settings: Settings) -> RegionsConfig:
    """The job's region settings plus this deployment's models (model paths are deployment settings)."""
    if regions.mode in ("grounded", "auto") and models_configured(settings):
        models = {
            "grounding": {"model_path": settings.grounding_model},
            "sam": {"checkpoint": settings.sam_checkpoint, "sam_type": settings.sam_type},
        }
        return RegionsConfig.model_validate(regions.model_dump() | models)
    return regions


def regions_queue(job: JobRecord, settings: Settings) -> str:
    kind = GPU_QUEUE if effective_regions(job.options.regions, settings).models_configured else CPU_QUEUE
    return queue_name(celery_app, kind)


def resources_for(job: JobRecord, with_models: bool) -> StageResources:
    """Stage resources for a job (embedder and models are cached per process). Only the regions stage needs
    the grounding + SAM models; keywords and perturbation run on CPU workers that never load them."""
    regions = effective_regions(job.options.regions, get_settings()) if with_models else job.options.regions
    return build_resources(regions)


def _load(tenant: str, job_id: str) -> JobRecord | None:
    try:
        return job_store().get_job(tenant, job_id)
    except JobNotFound:
        log.warning("job %s/%s no longer exists; dropping the task", tenant, job_id)
        return None


def _fail_unexpected(job: JobRecord, item_id: str, stage: str, exc: Exception) -> None:
    """A bug or an unforeseen input: record it on the item, so it ends failed instead of vanishing."""
    log.exception("item %s of job %s failed in %s", item_id, job.id, stage)
    reason = f"internal error in {stage}: {type(exc).__name__}: {exc}"
    failure = Failure(row=None, id=item_id, stage=stage, reason=reason)
    job_store().put_outcome(job, ItemOutcome(item_id=item_id, status="failed", failure=failure))


TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": get_settings().retry_backoff_max_s,
    "retry_jitter": True,
    "max_retries": get_settings().task_max_retries,
    "acks_late": True,
}


def _run_stage(
    job: JobRecord, item_id: str, stage: str, run: Callable[[], object], passthrough: tuple[type[Exception], ...] = ()
) -> bool:
    """Run one stage of an item: True when the next stage should follow. Transient store errors (and
    ``passthrough``) propagate, so the task retries; anything else is recorded on the item as failed, and the
    item stops there."""
    try:
        return bool(run())
    except TRANSIENT + passthrough:
        raise
    except Exception as exc:
        _fail_unexpected(job, item_id, stage, exc)
        return False


@celery_app.task(name="mfpo.keywords", **TASK_OPTIONS)
def keywords_task(self: Any, tenant: str, job_id: str, item_id: str) -> None:
    job = _load(tenant, job_id)
    if job is None:
        return

    def run() -> bool:
        return keywords_stage(job_store(), job, item_id, resources_for(job, with_models=False))

    if _run_stage(job, item_id, "keywords", run):
        regions_task.apply_async((tenant, job_id, item_id), queue=regions_queue(job, get_settings()))
    else:
        request_finalize(celery_app, tenant, job_id)


@celery_app.task(name="mfpo.regions", **TASK_OPTIONS)
def regions_task(self: Any, tenant: str, job_id: str, item_id: str) -> None:
    job = _load(tenant, job_id)
    if job is None:
        return

    def run() -> bool:
        return regions_stage(job_store(), job, item_id, resources_for(job, with_models=True))

    if _run_stage(job, item_id, "regions", run):
        perturb_task.apply_async((tenant, job_id, item_id), queue=queue_name(celery_app, CPU_QUEUE))
    else:
        request_finalize(celery_app, tenant, job_id)


@celery_app.task(name="mfpo.perturb", **TASK_OPTIONS)
def perturb_task(self: Any, tenant: str, job_id: str, item_id: str) -> None:
    job = _load(tenant, job_id)
    if job is None:
        return

    def run() -> object:
        return perturb_stage(job_store(), job, item_id, resources_for(job, with_models=False), recompute_missing=False)

    try:
        _run_stage(job, item_id, "perturb", run, passthrough=(MissingStageOutput,))
    except MissingStageOutput:  # the regions output was lost: redo that stage where the models are
        regions_task.apply_async((tenant, job_id, item_id), queue=regions_queue(job, get_settings()))
        return
    request_finalize(celery_app, tenant, job_id)


@celery_app.task(name="mfpo.finalize", **TASK_OPTIONS)
def finalize_task(self: Any, tenant: str, job_id: str) -> None:
    """Write the dataset of a closed job once every item has an outcome (idempotent)."""
    job = _load(tenant, job_id)
    if job is None or job.closed_at is None:
        return
    try:
        write_job_dataset(job_store(), job)
    except JobNotFinished:
        return


@celery_app.task(name="mfpo.reconcile_unfinished", **TASK_OPTIONS)
def reconcile_unfinished_task(self: Any) -> int:
    """Periodic (celery beat): re-queue the unfinished items of every closed, unfinished job.

    Covers tasks lost between a broker restart and the next ``close``; duplicates of
    queued tasks are harmless (every stage is idempotent).
    """
    jobs = job_store()
    requeued = 0
    for tenant, job_id in jobs.unfinished_jobs():
        try:
            requeued += reconcile(celery_app, jobs, tenant, job_id)
        except JobNotFound:
            continue
    return requeued
