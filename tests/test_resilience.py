"""Nothing is lost when the broker restarts or the object store is down for a while.

Real parts: a private ``redis-server`` with its append-only file (restarted mid-job), a
moto S3 server behind a TCP proxy that is switched off mid-job, ``celery worker`` processes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.images import inline_synth_items
from support.platform import CeleryWorker, platform_env, wait_for
from support.proxy import tcp_proxy
from support.s3_server import free_port, running_s3_server

from mfpo.jobs import JobKeys, JobStore, accept_item
from mfpo.pipeline.config import GenerateConfig
from mfpo.schemas import ResultRecord
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig

OPTIONS = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=24, seed=12, width=96, height=80))


class RedisServer:
    """A private redis-server with AOF on a free port; ``restart`` = SIGKILL + start on the same data."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (scripts/test-services.sh installs it)")
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        wait_for(lambda: self._ping(redis), 20, "redis-server to start")

    def _ping(self, redis) -> bool:  # type: ignore[no-untyped-def]
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _submit(store: S3Store, celery, rows: list[dict]):  # type: ignore[no-untyped-def]
    from worker.client import enqueue_item

    jobs = JobStore(store)
    job = jobs.create_job("acme", "resilience", OPTIONS)
    for seq, row in enumerate(rows):
        accept_item(jobs, job, row, seq)
        enqueue_item(celery, "acme", job.id, row["id"])
    return jobs, jobs.close_job(job)


def _dataset(jobs: JobStore, job) -> list[ResultRecord] | None:  # type: ignore[no-untyped-def]
    key = f"{JobKeys('acme', job.id).dataset}/dataset.jsonl"
    if not jobs.store.exists(key):
        return None
    return [ResultRecord.model_validate_json(line) for line in jobs.store.get(key).decode().splitlines()]


def _celery(env: dict[str, str]):  # type: ignore[no-untyped-def]
    """A Celery client for the workers started with ``env`` (same broker, same queue names)."""
    from services.settings import Settings
    from worker.app import create_celery

    return create_celery(Settings(redis_url=env["MFPO_REDIS_URL"], queue_prefix=env["MFPO_QUEUE_PREFIX"]))


def _run_through(store: S3Store, env: dict[str, str], items: list[dict], disrupt: Callable[[], None],
                 what: str) -> tuple[JobStore, Any, list[ResultRecord] | None, str]:
    """Submit ``items``, let a worker finish a few, call ``disrupt()``, reconcile (what close does), and wait
    for the dataset. Returns (job store, job, records, worker log)."""
    from worker.client import reconcile

    worker = CeleryWorker(env).start()
    try:
        celery = _celery(env)
        jobs, job = _submit(store, celery, items)
        wait_for(lambda: len(jobs.outcome_ids(job)) >= 3, 180, "the first outcomes", diagnostics=worker.log)
        disrupt()
        reconcile(celery, jobs, "acme", job.id)  # the store re-queues whatever the disruption lost
        wait_for(lambda: _dataset(jobs, job) is not None, 240, f"the dataset after {what}", diagnostics=worker.log)
    finally:
        worker.stop()
    return jobs, job, _dataset(jobs, job), worker.log()


def test_redis_restart_mid_job_loses_nothing(redis_server, items):
    def restart() -> None:
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()  # replays the append-only file: queued tasks come back

    with running_s3_server() as s3:
        bucket = f"rs-{uuid.uuid4().hex[:8]}"
        store = S3Store(s3.config(bucket, create_bucket=True))
        env = platform_env(redis_server.url, s3.env(), bucket)
        _, _, records, _ = _run_through(store, env, items, restart, "the restart")
        assert records is not None and [r.id for r in records] == [r["id"] for r in items]


def test_store_down_for_a_while_then_everything_is_done(items):
    import redis as redis_lib
    from support.platform import redis_url_for_tests, xdist_index

    redis_url = redis_url_for_tests(13 + xdist_index())
    with running_s3_server() as s3, tcp_proxy(s3.endpoint) as proxy:

        def outage() -> None:
            proxy.set_down(True)
            time.sleep(5.0)
            proxy.set_down(False)

        bucket = f"so-{uuid.uuid4().hex[:8]}"
        store = S3Store(s3.config(bucket, create_bucket=True))  # the test reads moto directly
        env = platform_env(redis_url, {**s3.env(), "MFPO_S3_ENDPOINT": proxy.endpoint}, bucket,
                           MFPO_RETRY_BACKOFF_MAX_S="4")
        jobs, job, records, log = _run_through(store, env, items, outage, "the outage")
        assert records is not None and [r.id for r in records] == [r["id"] for r in items]
        assert jobs.counts(job)["failed"] == 0
        assert "Retry in" in log, "the outage should have been retried, not ignored"
        redis_lib.Redis.from_url(redis_url).flushdb()
