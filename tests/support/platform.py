"""Real platform processes for tests: a Redis database, Celery worker processes.

Redis is the machine's server on 127.0.0.1:6379 (``.ci/run`` starts one when it is not
answering); each test session takes its own database number and empties it. Workers are
real ``celery worker`` processes (prefork pool), started in their own process group so
a test can SIGKILL the whole worker, children included, as a crash would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.requirements import missing

REPO = Path(__file__).resolve().parents[2]


def xdist_index() -> int:
    """0, 1, ... for pytest-xdist workers gw0, gw1, ... (0 without xdist)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def redis_url_for_tests(db: int) -> str:
    """URL of database ``db`` on the local Redis, emptied; skips (or fails in CI) when Redis is down.

    Callers give each xdist process its own database (``base + xdist_index()``), so the
    workers of one test process never take another's tasks. Bases in use, each two apart so that
    two xdist processes never share (and flush) one database: 2 gateway, 4 read-only root,
    6 worker deploy, 8 worker, 10 jobs / negatives stage / gateway fuzz, 12 gateway API and
    limits; 14 and 15 are the benches'.
    """
    import redis

    url = f"redis://127.0.0.1:6379/{db}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.ping()
        client.flushdb()
    except redis.RedisError as exc:
        missing(f"no Redis at 127.0.0.1:6379 ({exc}); start one with `redis-server --daemonize yes`")
    return url


def stop_process_group(process: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """SIGTERM a process started with ``start_new_session`` and its children, SIGKILL them after ``grace_s``
    (at once when 0)."""
    if process is None or process.poll() is not None:
        return
    if grace_s > 0:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@dataclass
class CeleryWorker:
    """``mfpo worker`` (a Celery worker with a prefork pool) as its own process group."""

    env: dict[str, str]
    queues: str = "cpu,gpu"
    concurrency: int = 2
    gpus: int = 0  # `--gpus N`: N pool processes, one GPU each (concurrency is then ignored)
    beat: bool = False  # `--beat`: also run the periodic reconcile
    command_prefix: list[str] = field(default_factory=list)  # e.g. a sandbox the command runs in
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="celery-", suffix=".log")[1]))

    def start(self) -> CeleryWorker:
        mfpo = str(Path(sys.executable).parent / "mfpo")
        cmd = [*self.command_prefix, mfpo, "worker", "--queues", self.queues]
        cmd += ["--gpus", str(self.gpus)] if self.gpus else ["--concurrency", str(self.concurrency)]
        cmd += ["--beat"] if self.beat else []
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once (a crash, no clean shutdown)."""
        stop_process_group(self.process, grace_s=0)

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def platform_env(redis_url: str, s3_env: Mapping[str, str], bucket: str, **extra: str) -> dict[str, str]:
    """Environment of a gateway or worker process pointing at the test Redis and S3 server.

    The queue names get a fresh prefix, so test runs sharing one Redis (two sessions on one
    machine) never take each other's tasks.
    """
    import uuid

    return {
        **os.environ,
        **s3_env,
        "MFPO_REDIS_URL": redis_url,
        "MFPO_S3_BUCKET": bucket,
        "MFPO_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:10]}-",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.25, diagnostics=None) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true; fail with ``what`` (and diagnostics) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    extra = f"\n{diagnostics()}" if diagnostics else ""
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}{extra}")


@dataclass
class Gateway:
    """``mfpo serve`` (uvicorn) on a free loopback port, in its own process group."""

    env: dict[str, str]
    port: int = 0
    command_prefix: list[str] = field(default_factory=list)  # e.g. a sandbox the command runs in
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Gateway:
        import urllib.request

        from support.s3_server import free_port

        self.port = free_port()
        mfpo = str(Path(sys.executable).parent / "mfpo")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*self.command_prefix, mfpo, "serve", "--host", "127.0.0.1",
                                             "--port", str(self.port)],
                                            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(up, timeout_s, "the gateway to answer /healthz", diagnostics=self.log)
        return self

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


API_KEYS = {"acme": "acme-key-0001", "other": "other-key-0002"}
"""Tenants and keys of :func:`running_platform` (``Authorization: Bearer <key>``)."""


@dataclass
class Platform:
    """A running gateway + Celery worker on the local Redis and a moto S3 server."""

    gateway: Gateway
    worker: CeleryWorker
    env: dict[str, str]
    bucket: str
    s3: object

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEYS[tenant]}"}


@contextmanager
def running_platform(redis_db: int, with_worker: bool = True, **settings: str) -> Iterator[Platform]:
    """Start moto S3, a gateway and (optionally) a worker; ``settings`` are extra ``MFPO_*`` variables."""
    import uuid

    from support.s3_server import running_s3_server

    redis_url = redis_url_for_tests(redis_db)
    with running_s3_server() as s3:
        bucket = f"gw-{uuid.uuid4().hex[:8]}"
        keys = ",".join(f"{t}:{k}" for t, k in API_KEYS.items())
        env = platform_env(redis_url, s3.env(), bucket, MFPO_S3_CREATE_BUCKET="true", MFPO_API_KEYS=keys,
                           **settings)
        gateway = Gateway(env).start()
        worker = CeleryWorker(env)
        if with_worker:
            worker.start()
        try:
            yield Platform(gateway=gateway, worker=worker, env=env, bucket=bucket, s3=s3)
        finally:
            worker.stop()
            gateway.stop()
