"""Celery workers for real: Redis broker, moto S3 over HTTP, ``celery worker`` processes.

Each stage runs once per item in a fault-free run, and every item ends exactly once in the
dataset also when a worker is SIGKILLed mid-job (open job, no close needed to find its work) or
during finalize.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.images import inline_synth_items
from support.jobs import celery_client, settings_from_env, submit_rows
from support.platform import CeleryWorker, platform_env, redis_url_for_tests, wait_for, xdist_index
from support.proxy import tcp_proxy
from support.s3_server import running_s3_server

from mfpo.jobs import Dispatcher, JobKeys, JobState, JobStore
from mfpo.pipeline.config import GenerateConfig
from mfpo.schemas import ResultRecord
from mfpo.stages import GRAPH
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig

OPTIONS = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
FAST = {"MFPO_CHUNK_SIZE": "4", "MFPO_HEARTBEAT_INTERVAL_S": "1", "MFPO_OVERDUE_AFTER_S": "5",
        "MFPO_RECONCILE_INTERVAL_S": "2"}


class Platform:
    """moto (behind a switchable proxy), a Redis database, and the library side of a deployment."""

    def __init__(self, s3: Any, proxy: Any, redis_url: str) -> None:
        bucket = f"mfpo-{uuid.uuid4().hex[:8]}"
        self.store = S3Store(s3.config(bucket, create_bucket=True))  # the test reads moto directly
        self.proxy = proxy
        self.env = platform_env(redis_url, {**s3.env(), "MFPO_S3_ENDPOINT": proxy.endpoint}, bucket, **FAST)
        self.settings = settings_from_env(self.env)
        self.redis = redis.Redis.from_url(redis_url)
        self.jobs = JobStore(self.store)
        self.dispatcher = Dispatcher(celery_client(self.settings), self.settings.queue_prefix, False)

    def state(self, job: Any) -> JobState:
        return JobState(self.redis, self.settings.queue_prefix, job.tenant, job.id)

    def submit(self, rows: list[dict]) -> tuple[Any, JobState]:
        job = self.jobs.create_job("acme", "worker-test", OPTIONS)
        state = self.state(job)
        state.init()
        result = submit_rows(self.jobs, state, self.dispatcher, job, self.settings, rows)
        assert len(result.accepted) == len(rows), result
        return job, state

    def close(self, job: Any, state: JobState) -> Any:
        state.begin_close()
        job = self.jobs.close_job(job)
        if state.mark_closed():
            self.dispatcher.finalize(job)
        return job

    def dataset_ids(self, job: Any) -> list[str] | None:
        key = JobKeys("acme", job.id).manifest
        if not self.store.exists(key):
            return None
        return [ResultRecord.model_validate_json(line).id for line in self.store.get(key).decode().splitlines()]

    def queued(self) -> int:
        return sum(int(self.redis.llen(f"{self.settings.queue_prefix}{q}")) for q in ("cpu", "gpu", "control"))


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    redis_url = redis_url_for_tests(8 + xdist_index())  # one Redis database per xdist process
    with running_s3_server() as s3, tcp_proxy(s3.endpoint) as proxy:
        yield Platform(s3, proxy, redis_url)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=24, seed=6, width=96, height=80))


@pytest.fixture(scope="module")
def big_items(tmp_path_factory) -> list[dict]:
    """Items slow enough (640 px) that a worker can be killed in the middle of a chunk."""
    return inline_synth_items(tmp_path_factory.mktemp("big"), SynthConfig(n=12, seed=7, width=640, height=640))


def test_each_stage_runs_once_per_item_and_the_job_finishes_once(platform, items):
    worker = CeleryWorker(platform.env).start()
    try:
        job, state = platform.submit(items)
        job = platform.close(job, state)
        wait_for(lambda: platform.dataset_ids(job) is not None, 180, "the job's dataset", diagnostics=worker.log)
        assert platform.dataset_ids(job) == [r["id"] for r in items]
        counts = state.counts()
        assert counts.stages == {s.name: 24 for s in GRAPH}  # no stage ran twice, none skipped
        assert (counts.done, counts.failed, counts.finalize) == (24, 0, "done")
        wait_for(lambda: platform.queued() == 0, 10, "empty queues")
        time.sleep(1.0)
        assert platform.queued() == 0 and worker.log().count("finalized:") == 1  # no finalize work left behind
        assert not any(k for k in platform.jobs.active_jobs() if k[1] == job.id)
    finally:
        worker.stop()


def test_a_worker_killed_mid_job_is_found_overdue_while_the_job_is_open(platform, big_items):
    first = CeleryWorker(platform.env, concurrency=1).start()
    job, state = platform.submit(big_items)
    try:
        wait_for(lambda: any(c.status == "running" and c.stage == "perturb" for c in state.chunk_states()), 120,
                 "a worker in the middle of a chunk", interval_s=0.05, diagnostics=first.log)
    finally:
        first.kill()
    killed = time.monotonic()
    assert state.counts().done < len(big_items), "the crash came too late to test anything"
    second = CeleryWorker(platform.env, concurrency=1, beat=True).start()  # beat: the periodic reconcile
    try:
        # the job is still open: nobody calls close; the dead worker's chunk must be found overdue
        wait_for(lambda: state.counts().done == len(big_items), 120, "every item done after the crash",
                 diagnostics=second.log)
        assert time.monotonic() - killed < 120  # minutes at most, not the 3 h visibility timeout
        assert "dispatching it again" in second.log()
        job = platform.close(job, state)
        wait_for(lambda: platform.dataset_ids(job) is not None, 60, "the dataset", diagnostics=second.log)
    finally:
        second.stop()
    ids = platform.dataset_ids(job)
    assert ids == [r["id"] for r in big_items] and len(set(ids)) == len(big_items)


def test_a_worker_killed_during_finalize_still_finishes_the_job(platform, items):
    env = {**platform.env, "MFPO_FINALIZE_PREFETCH": "1"}
    first = CeleryWorker(env, concurrency=1).start()
    job, state = platform.submit(items)
    try:
        wait_for(lambda: state.counts().done == len(items), 120, "every item done", diagnostics=first.log)
        platform.proxy.delay_s = 0.5  # a slow store: finalize (7 LIST/GETs one at a time) takes seconds
        job = platform.close(job, state)
        wait_for(lambda: state.counts().finalize == "claimed" and "mfpo.finalize" in first.log(), 30,
                 "finalize to start", interval_s=0.05, diagnostics=first.log)
        time.sleep(1.5)
    finally:
        first.kill()
        platform.proxy.delay_s = 0.0
    assert platform.dataset_ids(job) is None, "finalize ended before the kill: nothing tested"
    second = CeleryWorker(env, concurrency=1, beat=True).start()
    try:
        wait_for(lambda: platform.dataset_ids(job) is not None, 90, "the dataset without anyone closing again",
                 diagnostics=second.log)
    finally:
        second.stop()
    assert platform.dataset_ids(job) == [r["id"] for r in items] and state.counts().finalize == "done"


def test_the_regions_stage_runs_on_the_gpu_queue_in_model_batches(platform, items, tmp_path):
    """With grounding + SAM configured (tiny random-weight models of the real architectures, on CPU here), the
    regions stage goes to the gpu queue and runs a chunk's images through the models in batches; so does the
    negatives stage of a job asking for AdaViP (the deployment's CLIP, the detector's candidates); the cpu worker
    never loads the models."""
    import subprocess
    import sys
    from pathlib import Path

    models = tmp_path / "models"
    made = subprocess.run([str(Path(sys.executable).parent / "mfpo"), "models", "tiny", "--out", str(models)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    env = {**platform.env, "MFPO_GROUNDING_MODEL": str(models / "grounding-dino"),
           "MFPO_SAM_CHECKPOINT": str(models / "sam_vit_tiny.pth"), "MFPO_SAM_TYPE": "vit_tiny",
           "MFPO_CLIP_MODEL": str(models / "clip"), "MFPO_CHUNK_SIZE": "8"}
    settings = settings_from_env(env)
    dispatcher = Dispatcher(celery_client(settings), settings.queue_prefix, settings.models_configured)
    cpu = CeleryWorker(env, queues="cpu").start()
    gpu = CeleryWorker(env, queues="gpu", concurrency=1).start()
    try:
        asked = {"kinds": ["mfpo", "adavip"], "adavip": {"candidates": "regions+detector", "labels_per_query": 40}}
        auto = GenerateConfig.model_validate({"regions": {"mode": "auto"},  # as the gateway makes the options
                                              "negatives": settings.deployment_negatives(asked)})
        job = platform.jobs.create_job("acme", "gpu-queue", auto)
        state = platform.state(job)
        state.init()
        rows = [{**r, "annotations": []} for r in items[:16]]  # no annotations: auto goes to the models
        assert len(submit_rows(platform.jobs, state, dispatcher, job, settings, rows).accepted) == 16
        state.begin_close()
        job = platform.jobs.close_job(job)
        if state.mark_closed():
            dispatcher.finalize(job)
        wait_for(lambda: platform.dataset_ids(job) is not None, 240, "the dataset", diagnostics=gpu.log)
    finally:
        cpu.stop()
        gpu.stop()
    assert platform.dataset_ids(job) == [r["id"] for r in rows]
    import re

    batches = [int(b) for b in re.findall(r"8 items in batches of (\d+) \(models, decoded images\)", gpu.log())]
    assert len(batches) == 2 and min(batches) >= 8  # 2 chunks of 8, each through the models as one batch
    assert "mfpo.stage" in gpu.log() and "regions of chunk" not in cpu.log()
    assert "grounding" not in cpu.log().lower()
    assert state.counts().stages == {s.name: 16 for s in GRAPH}
    assert len(re.findall(r"negatives adavip of chunk \S+: 8 items in batches of 32", gpu.log())) == 2
    assert "negatives adavip" not in cpu.log() and "clip" not in cpu.log().lower()
    lines = platform.jobs.store.get(JobKeys(job.tenant, job.id).manifest).decode().splitlines()
    for record in map(ResultRecord.model_validate_json, lines):
        adavip = record.negatives["adavip"]
        assert adavip.fallback or adavip.details["candidates"], record.id  # removed an object, or said why not
        assert all(c["source"] in ("grounded", "detector", "global") for c in adavip.details["candidates"])
