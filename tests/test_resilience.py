"""Nothing is lost when Redis restarts, is flushed, or the object store is down for a while.

Real parts: a private ``redis-server`` with its append-only file (restarted, flushed), a moto S3
server behind a TCP proxy that is switched off (or slowed) mid-job, ``celery worker`` processes,
and the gateway over a socket.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib
from support.images import inline_synth_items
from support.jobs import celery_client, settings_from_env, submit_rows
from support.platform import API_KEYS, CeleryWorker, Gateway, platform_env, wait_for
from support.proxy import tcp_proxy
from support.s3_server import free_port, running_s3_server

from mfpo.jobs import Dispatcher, JobKeys, JobState, JobStore
from mfpo.pipeline.config import GenerateConfig
from mfpo.schemas import ResultRecord
from mfpo.storage.s3 import S3Store
from mfpo.synth import SynthConfig

OPTIONS = GenerateConfig.model_validate({"regions": {"mode": "annotations"}})
FAST = {"MFPO_CHUNK_SIZE": "4", "MFPO_HEARTBEAT_INTERVAL_S": "1", "MFPO_OVERDUE_AFTER_S": "5",
        "MFPO_RECONCILE_INTERVAL_S": "2", "MFPO_RETRY_BACKOFF_MAX_S": "4"}
ACME = {"Authorization": f"Bearer {API_KEYS['acme']}"}


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    return inline_synth_items(tmp_path_factory.mktemp("scenes"), SynthConfig(n=24, seed=12, width=96, height=80))


class RedisServer:
    """A private redis-server with AOF on a free port; ``restart`` = SIGKILL + start on the same data."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (scripts/test-services.sh installs it)")
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
        wait_for(self._ping, 20, "redis-server to start")

    def _ping(self) -> bool:
        try:
            return bool(redis_lib.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis_lib.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis(port=self.port)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Deployment:
    """Library-side handles on a deployment whose processes run with ``env``."""

    def __init__(self, env: dict[str, str], store: S3Store, redis_client: redis_lib.Redis) -> None:
        self.env, self.store = env, store
        self.settings = settings_from_env(env)
        self.redis = redis_client
        self.jobs = JobStore(store)
        self.dispatcher = Dispatcher(celery_client(self.settings), self.settings.queue_prefix, False)

    def state(self, job: Any) -> JobState:
        return JobState(self.redis, self.settings.queue_prefix, job.tenant, job.id)

    def submit_and_close(self, rows: list[dict]) -> tuple[Any, JobState]:
        job = self.jobs.create_job("acme", "resilience", OPTIONS)
        state = self.state(job)
        state.init()
        assert len(submit_rows(self.jobs, state, self.dispatcher, job, self.settings, rows).accepted) == len(rows)
        state.begin_close()
        job = self.jobs.close_job(job)
        if state.mark_closed():
            self.dispatcher.finalize(job)
        return job, state

    def records(self, job: Any) -> list[ResultRecord] | None:
        key = JobKeys("acme", job.id).manifest
        if not self.store.exists(key):
            return None
        return [ResultRecord.model_validate_json(line) for line in self.store.get(key).decode().splitlines()]


def _run_through(deployment: Deployment, items: list[dict], disrupt: Callable[[], None],
                 what: str) -> tuple[Any, list[ResultRecord] | None, str]:
    """Submit and close ``items``, let a worker (with beat) finish a few, ``disrupt()``, and wait for the dataset
    with no further call (the periodic reconcile finds whatever the disruption lost)."""
    worker = CeleryWorker(deployment.env, beat=True).start()
    try:
        job, state = deployment.submit_and_close(items)
        wait_for(lambda: _done(state) >= 4, 180, "the first outcomes", diagnostics=worker.log)
        disrupt()
        wait_for(lambda: deployment.records(job) is not None, 240, f"the dataset after {what}",
                 diagnostics=worker.log)
    finally:
        worker.stop()
    return job, deployment.records(job), worker.log()


def _done(state: JobState) -> int:
    try:
        return state.counts().done
    except Exception:  # Redis away or state being rebuilt
        return 0


def test_redis_restart_mid_job_loses_nothing(redis_server, items):
    def restart() -> None:
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()  # replays the append-only file: queued tasks and job state come back

    with running_s3_server() as s3:
        bucket = f"rs-{uuid.uuid4().hex[:8]}"
        deployment = Deployment(platform_env(redis_server.url, s3.env(), bucket, **FAST),
                                S3Store(s3.config(bucket, create_bucket=True)), redis_server.client())
        _, records, _ = _run_through(deployment, items, restart, "the restart")
        assert records is not None and [r.id for r in records] == [r["id"] for r in items]


def test_redis_flushed_mid_job_the_state_is_rebuilt_and_the_job_finishes(redis_server, items):
    """FLUSHALL drops the queues and every job's state: the beat's reconcile rebuilds the state from the store
    and dispatches the unfinished chunks; the job still ends in a complete dataset, each item once."""
    with running_s3_server() as s3:
        bucket = f"fl-{uuid.uuid4().hex[:8]}"
        deployment = Deployment(platform_env(redis_server.url, s3.env(), bucket, **FAST),
                                S3Store(s3.config(bucket, create_bucket=True)), redis_server.client())
        job, records, log = _run_through(deployment, items, lambda: redis_server.client().flushall(), "FLUSHALL")
        assert records is not None and [r.id for r in records] == [r["id"] for r in items]
        assert "state rebuilt from the store" in log
        counts = deployment.state(job).counts()
        assert (counts.submitted, counts.done, counts.finalize) == (len(items), len(items), "done")


def test_store_down_for_a_while_then_everything_is_done(redis_server, items):
    with running_s3_server() as s3, tcp_proxy(s3.endpoint) as proxy:

        def outage() -> None:
            proxy.set_down(True)
            time.sleep(5.0)
            proxy.set_down(False)

        bucket = f"so-{uuid.uuid4().hex[:8]}"
        env = platform_env(redis_server.url, {**s3.env(), "MFPO_S3_ENDPOINT": proxy.endpoint}, bucket, **FAST)
        deployment = Deployment(env, S3Store(s3.config(bucket, create_bucket=True)), redis_server.client())
        job, records, log = _run_through(deployment, items, outage, "the outage")
        assert records is not None and [r.id for r in records] == [r["id"] for r in items]
        assert deployment.state(job).counts().failed == 0
        assert "Retry in" in log, "the outage should have been retried, not ignored"


def test_a_redis_outage_during_submission_is_503_with_the_results_so_far_and_a_retry_is_idempotent(
        redis_server, items):
    with running_s3_server() as s3:
        bucket = f"gw-{uuid.uuid4().hex[:8]}"
        keys = ",".join(f"{t}:{k}" for t, k in API_KEYS.items())
        env = platform_env(redis_server.url, s3.env(), bucket, MFPO_S3_CREATE_BUCKET="true", MFPO_API_KEYS=keys,
                           MFPO_CHUNK_SIZE="4")
        gateway = Gateway(env).start()
        try:
            with httpx.Client(base_url=gateway.url, headers=ACME, timeout=60) as c:
                job_id = c.post("/v1/jobs", json={"name": "outage"}).json()["id"]
                assert c.post(f"/v1/jobs/{job_id}/items", json={"items": items[:8]}).status_code == 200
                redis_server.kill()
                down = c.post(f"/v1/jobs/{job_id}/items", json={"items": items})
                assert down.status_code == 503 and down.headers["retry-after"], down.text
                body = down.json()
                assert "broker" in body["detail"] or "store or broker" in body["detail"]
                answered = {a["index"] for a in body.get("accepted", [])} | {r["index"] for r in body.get("rejected",
                                                                                                           [])}
                assert answered | set(body.get("unprocessed", [])) in (set(), set(range(len(items))))
                assert c.get(f"/v1/jobs/{job_id}").status_code == 503  # status: 503, never 500
                redis_server.start()  # back, from its append-only file
                retry = c.post(f"/v1/jobs/{job_id}/items", json={"items": items})
                assert retry.status_code == 200, retry.text
                assert [a["index"] for a in retry.json()["accepted"]] == list(range(len(items)))
                status = c.get(f"/v1/jobs/{job_id}").json()
                assert status["counts"]["submitted"] == len(items)  # the first 8 were not stored twice
                metrics = c.get("/metrics").text
                assert 'status="500"' not in metrics
        finally:
            gateway.stop()


def test_close_waits_for_a_submission_in_flight(redis_server, items):
    """A close that arrives while a batch is being written waits for it: every item answered accepted is in the
    dataset (before, a close mid-submission finished the job with half of them)."""
    with running_s3_server() as s3, tcp_proxy(s3.endpoint) as proxy:
        bucket = f"cw-{uuid.uuid4().hex[:8]}"
        keys = ",".join(f"{t}:{k}" for t, k in API_KEYS.items())
        env = platform_env(redis_server.url, {**s3.env(), "MFPO_S3_ENDPOINT": proxy.endpoint}, bucket,
                           MFPO_S3_CREATE_BUCKET="true", MFPO_API_KEYS=keys, MFPO_CHUNK_SIZE="2",
                           MFPO_SUBMIT_THREADS="1", MFPO_CLOSE_WAIT_S="60")
        gateway = Gateway(env).start()
        worker = CeleryWorker(env).start()
        try:
            with httpx.Client(base_url=gateway.url, headers=ACME, timeout=120) as c:
                job_id = c.post("/v1/jobs", json={"name": "close-race"}).json()["id"]
                proxy.delay_s = 0.3  # every store request of the submission is slow
                posted: dict[str, Any] = {}
                thread = threading.Thread(target=lambda: posted.update(
                    r=c.post(f"/v1/jobs/{job_id}/items", json={"items": items[:12]})))
                thread.start()
                wait_for(lambda: c.get(f"/v1/jobs/{job_id}").json()["counts"]["submitted"] > 0, 60,
                         "the first chunk of the submission", interval_s=0.1, diagnostics=gateway.log)
                closed = c.post(f"/v1/jobs/{job_id}/close")
                thread.join(120)
                proxy.delay_s = 0.0
                assert closed.status_code == 200, closed.text
                accepted = [a["id"] for a in posted["r"].json()["accepted"]]
                assert len(accepted) == 12
                wait_for(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] == "finished", 180, "the dataset",
                         diagnostics=worker.log)
                lines = c.get(f"/v1/jobs/{job_id}/dataset").text.splitlines()
                assert [ResultRecord.model_validate_json(line).id for line in lines] == accepted
                late = c.post(f"/v1/jobs/{job_id}/items", json={"items": items[12:13]})
                assert late.status_code == 409
        finally:
            proxy.delay_s = 0.0
            worker.stop()
            gateway.stop()
