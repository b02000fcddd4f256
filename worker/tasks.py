"""Celery tasks: thin shells over the library's distributed executor (:mod:`mfpo.jobs`).

* ``mfpo.stage(tenant, job, chunk, stage)`` - :func:`mfpo.jobs.execute.execute_stage`: one stage of the
  graph on one chunk, then the next stage queued (cpu queue; the regions stage on the gpu queue when
  the deployment has grounding + SAM);
* ``mfpo.finalize(tenant, job)`` - the dataset, streamed, once the last chunk is done;
* ``mfpo.reconcile()`` - periodic (beat): overdue work, unregistered chunks and lost state of every
  active job (:func:`mfpo.jobs.recovery.reconcile_job`);
* ``mfpo.rebuild(tenant, job)`` - the job's state from the store, after Redis lost it.

Transient errors (store or Redis unavailable) are retried with exponential backoff; every stage is
idempotent, so a retried or redelivered task redoes at most its own stage.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import redis

from mfpo.jobs import Dispatcher, JobNotFound, JobRecord, JobState, JobStore, StateLost, finalize_job
from mfpo.jobs.dispatch import TASK_DELETE, TASK_FINALIZE, TASK_REBUILD, TASK_RECONCILE, TASK_STAGE
from mfpo.jobs.execute import execute_stage
from mfpo.jobs.finalize import JobNotFinished
from mfpo.jobs.recovery import reconcile_job
from mfpo.jobs.settings import get_platform_settings
from mfpo.pipeline.resources import StageResources, build_resources
from mfpo.stages.graph import Stage
from mfpo.stages.runner import TRANSIENT
from worker.app import celery_app

log = logging.getLogger(__name__)

RETRIED = (*TRANSIENT, redis.RedisError, StateLost)


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    return JobStore(get_platform_settings().open_store())


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(get_platform_settings().broker_url(), socket_timeout=30, socket_connect_timeout=10)


def job_state(job: JobRecord) -> JobState:
    return JobState(redis_client(), get_platform_settings().queue_prefix, job.tenant, job.id)


def dispatcher() -> Dispatcher:
    settings = get_platform_settings()
    return Dispatcher(celery_app, settings.queue_prefix, settings.models_configured)


@lru_cache(maxsize=256)
def _job_options(tenant: str, job_id: str) -> JobRecord:
    return job_store().get_job(tenant, job_id)


def load_job(tenant: str, job_id: str, fresh: bool = False) -> JobRecord | None:
    """The job record (cached per process for stages: their options never change), None when deleted."""
    try:
        return job_store().get_job(tenant, job_id) if fresh else _job_options(tenant, job_id)
    except JobNotFound:
        log.warning("job %s/%s no longer exists; dropping the task", tenant, job_id)
        return None


def resources_for(job: JobRecord, stage: Stage) -> StageResources:
    """Stage resources (embedder and models are cached per process). Only the stage marked ``gpu`` gets the
    deployment's grounding + SAM models; CPU workers never load them."""
    settings = get_platform_settings()
    regions = settings.job_regions(job.options.regions) if stage.device == "gpu" else job.options.regions
    return build_resources(regions)


def _hard_time_limit() -> float:
    settings = get_platform_settings()
    return settings.item_time_limit_s * settings.chunk_size + settings.task_time_margin_s


TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "autoretry_for": RETRIED,
    "retry_backoff": True,
    "retry_backoff_max": get_platform_settings().retry_backoff_max_s,
    "retry_jitter": True,
    "max_retries": get_platform_settings().task_max_retries,
    "acks_late": True,
}


@celery_app.task(name=TASK_STAGE, time_limit=_hard_time_limit(), **TASK_OPTIONS)
def stage_task(self: Any, tenant: str, job_id: str, chunk: str, stage: str) -> None:
    job = load_job(tenant, job_id)
    if job is not None:
        execute_stage(job_store(), job_state(job), dispatcher(), job, chunk, stage,
                      lambda s: resources_for(job, s), get_platform_settings())


@celery_app.task(name=TASK_FINALIZE, **TASK_OPTIONS)
def finalize_task(self: Any, tenant: str, job_id: str) -> None:
    """Write the dataset of a closed job whose chunks are all done (idempotent)."""
    job = load_job(tenant, job_id, fresh=True)
    if job is None:
        return
    try:
        finalize_job(job_store(), job_state(job), job, get_platform_settings())
    except JobNotFinished as exc:  # a chunk was reopened; the reconcile queues it, and finalize after it
        log.warning("%s", exc)


@celery_app.task(name=TASK_RECONCILE, **TASK_OPTIONS)
def reconcile_task(self: Any) -> int:
    """Periodic (celery beat): reconcile every active job; returns how many chunks were dispatched again."""
    jobs = job_store()
    redispatched = 0
    for tenant, job_id in jobs.active_jobs():
        job = load_job(tenant, job_id, fresh=True)
        if job is None:
            continue
        try:
            report = reconcile_job(jobs, job_state(job), dispatcher(), job, get_platform_settings())
        except RETRIED:
            log.warning("reconcile of job %s/%s failed; the next run retries", tenant, job_id, exc_info=True)
            continue
        redispatched += report.redispatched
    return redispatched


@celery_app.task(name=TASK_REBUILD, **TASK_OPTIONS)
def rebuild_task(self: Any, tenant: str, job_id: str) -> None:
    """Rebuild a job's lost state from the store and dispatch its unfinished chunks (asked for by a gateway
    that found the state missing; the periodic reconcile would get there too)."""
    job = load_job(tenant, job_id, fresh=True)
    if job is not None:
        reconcile_job(job_store(), job_state(job), dispatcher(), job, get_platform_settings())


@celery_app.task(name=TASK_DELETE, **TASK_OPTIONS)
def delete_task(self: Any, tenant: str, job_id: str) -> int:
    """Delete a cancelled job's objects and its state (asked for by ``DELETE /v1/jobs/{id}``)."""
    job = load_job(tenant, job_id, fresh=True)
    if job is None:
        return 0
    deleted = job_store().delete_job(job)
    job_state(job).drop()
    log.info("job %s/%s deleted (%d objects)", tenant, job_id, deleted)
    return deleted
