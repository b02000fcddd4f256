"""Celery workers for real: Redis broker, moto S3 over HTTP, ``celery worker`` processes.

Every item ends exactly once in the dataset, also when the worker is SIGKILLed mid-job.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from support.images import inline_synth_items
from support.platform import CeleryWorker, platform_env, redis_url_for_tests, wait_for, xdist_index
from support.s3_server import running_s3_server

from mfpo.jobs import JobKeys, JobStore, accept_item
from mfpo.pipeline.config import GenerateConfig
from mfpo.schemas import ResultRecord
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig
from worker.client import enqueue_item, reconcile

OPTIONS = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[dict]:
    redis_url = redis_url_for_tests(8 + xdist_index())  # one Redis database per xdist process
    with running_s3_server() as s3:
        bucket = f"mfpo-{uuid.uuid4().hex[:8]}"
        store = S3Store(s3.config(bucket, create_bucket=True))
        env = platform_env(redis_url, s3.env(), bucket)
        os.environ.update({k: v for k, v in env.items() if k.startswith("MFPO_")})
        from services.settings import get_settings
        from worker.app import create_celery

        get_settings.cache_clear()
        yield {"store": store, "env": env, "s3": s3, "celery": create_celery(get_settings())}


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=24, seed=6, width=96, height=80))


def _submit(platform: dict, rows: list[dict]) -> tuple[JobStore, object]:
    jobs = JobStore(platform["store"])
    job = jobs.create_job("acme", "worker-test", OPTIONS)
    for seq, row in enumerate(rows):
        accept_item(jobs, job, row, seq)  # written to the store before it is queued
        enqueue_item(platform["celery"], "acme", job.id, row["id"])
    return jobs, jobs.close_job(job)


def _dataset_ids(jobs: JobStore, job) -> list[str] | None:
    key = f"{JobKeys('acme', job.id).dataset}/dataset.jsonl"
    if not jobs.store.exists(key):
        return None
    return [ResultRecord.model_validate_json(line).id for line in jobs.store.get(key).decode().splitlines()]


def test_worker_processes_a_job_into_a_dataset(platform, items):
    worker = CeleryWorker(platform["env"]).start()
    try:
        jobs, job = _submit(platform, items[:12])
        # what close does: re-queue anything pending (nothing is, here) and ask for the dataset
        reconcile(platform["celery"], JobStore(platform["store"]), "acme", job.id)
        wait_for(lambda: _dataset_ids(jobs, job) is not None, 180, "the job's dataset", diagnostics=worker.log)
        assert _dataset_ids(jobs, job) == [r["id"] for r in items[:12]]
    finally:
        worker.stop()


def test_sigkilled_worker_loses_nothing(platform, items):
    first = CeleryWorker(platform["env"]).start()
    jobs, job = _submit(platform, items)
    try:
        wait_for(lambda: len(jobs.outcome_ids(job)) >= 3, 180, "the first outcomes", diagnostics=first.log)
    finally:
        first.kill()
    assert len(jobs.outcome_ids(job)) < len(items), "the crash came too late to test anything"
    second = CeleryWorker(platform["env"]).start()
    try:
        # tasks held by the dead worker come back on reconcile (or after the visibility timeout)
        reconcile(platform["celery"], JobStore(platform["store"]), "acme", job.id)
        wait_for(lambda: _dataset_ids(jobs, job) is not None, 240, "the dataset after the crash",
                 diagnostics=second.log)
    finally:
        second.stop()
    ids = _dataset_ids(jobs, job)
    assert ids == [r["id"] for r in items] and len(set(ids)) == len(items)


def test_a_stage_error_fails_the_item_but_transient_and_passthrough_errors_propagate(platform, items, monkeypatch):
    """What every task does around its stage (worker.tasks._run_stage), on the real store: a bug or unforeseen
    input ends the item `failed` with the reason; a transient store error propagates (Celery retries); so does
    a pass-through error (perturb's lost regions output, which re-queues the regions stage)."""
    import worker.tasks as tasks
    from mfpo.jobs.stages import MissingStageOutput
    from mfpo.storage.base import StoreUnavailable

    jobs = JobStore(platform["store"])
    monkeypatch.setattr(tasks, "job_store", lambda: jobs)
    job = jobs.create_job("acme", "stage-errors", OPTIONS)
    accept_item(jobs, job, items[0], 0)
    item_id = items[0]["id"]
    assert tasks._run_stage(job, item_id, "keywords", lambda: True) is True
    assert jobs.get_outcome(job, item_id) is None

    def bug() -> bool:
        raise ZeroDivisionError("division by zero")

    assert tasks._run_stage(job, item_id, "regions", bug) is False
    outcome = jobs.get_outcome(job, item_id)
    assert outcome is not None and outcome.status == "failed"
    assert outcome.failure is not None and outcome.failure.stage == "regions"
    assert "internal error in regions: ZeroDivisionError" in outcome.failure.reason

    def store_down() -> bool:
        raise StoreUnavailable("S3 endpoint unreachable")

    def lost_output() -> bool:
        raise MissingStageOutput("regions.npz")

    with pytest.raises(StoreUnavailable):
        tasks._run_stage(job, "other", "keywords", store_down)
    with pytest.raises(MissingStageOutput):
        tasks._run_stage(job, "other", "perturb", lost_output, passthrough=(MissingStageOutput,))
    assert tasks._run_stage(job, "other", "perturb", lost_output) is False  # not passed through: a failure
    assert jobs.get_outcome(job, "other").status == "failed"
