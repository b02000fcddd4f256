"""What a cluster deployment of the workers relies on (helm/mfpo): the Redis password kept out of the
broker URL, and ``mfpo beat`` alone, with its schedule file outside a read-only working directory.

Real parts: a private ``redis-server`` that wants a password, an ``mfpo beat`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import helm_python
import pytest
import redis
from support.k8s import load_yaml_documents
from support.platform import REPO, CeleryWorker, platform_env, redis_url_for_tests, wait_for, xdist_index
from support.requirements import missing
from support.s3_server import free_port, running_s3_server

from mfpo.jobs.settings import PlatformSettings
from mfpo.storage.settings import S3Settings
from worker.gpus import GPUS_ENV, pin_gpu

PASSWORD = "p@ss:w/rd #1"  # characters that must be URL-quoted


@pytest.mark.parametrize(
    ("url", "password", "expected"),
    [
        ("redis://redis:6379/0", "", "redis://redis:6379/0"),
        ("redis://redis:6379/0", PASSWORD, "redis://:p%40ss%3Aw%2Frd%20%231@redis:6379/0"),
        ("rediss://default@redis:6380/2", "pw", "rediss://default:pw@redis:6380/2"),
        ("redis://:inline@redis:6379/0", "other", "redis://:inline@redis:6379/0"),  # the URL's own password wins
    ],
)
def test_broker_url_puts_the_password_in_quoted(url: str, password: str, expected: str) -> None:
    assert PlatformSettings(redis_url=url, redis_password=password).broker_url() == expected


def test_the_redis_password_is_not_shown_by_the_settings() -> None:
    settings = PlatformSettings(redis_url="redis://redis:6379/0", redis_password=PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


@pytest.fixture
def redis_with_password(tmp_path: Path):  # type: ignore[no-untyped-def]
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed (scripts/test-services.sh installs it)")

    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--requirepass", PASSWORD],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(answers, 20, "redis-server to start")
        yield port, client
    finally:
        process.kill()
        process.wait(timeout=10)


def test_beat_alone_sends_the_reconcile_through_a_password_protected_redis(redis_with_password, tmp_path: Path):
    """``mfpo beat`` with MFPO_REDIS_PASSWORD (URL without it), TMPDIR as the only writable place: the
    reconcile task lands on the deployment's cpu queue and the schedule file is in TMPDIR."""

    port, client = redis_with_password
    with pytest.raises(redis.AuthenticationError):  # the URL alone is refused
        redis.Redis(port=port, socket_connect_timeout=1).ping()
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "MFPO_REDIS_URL": f"redis://127.0.0.1:{port}/0", "MFPO_REDIS_PASSWORD": PASSWORD,
           "MFPO_QUEUE_PREFIX": prefix, "MFPO_RECONCILE_INTERVAL_S": "10", "TMPDIR": str(scratch)}
    log = tmp_path / "beat.log"
    with log.open("wb") as out:
        beat = subprocess.Popen([str(Path(sys.executable).parent / "mfpo"), "beat"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: client.llen(f"{prefix}control") > 0, 40, "the beat's reconcile task on the control queue",
                 diagnostics=lambda: log.read_text(errors="replace")[-3000:])
    finally:
        beat.terminate()
        beat.wait(timeout=20)

    message = json.loads(client.lindex(f"{prefix}control", 0))
    assert message["headers"]["task"] == "mfpo.reconcile"
    assert list(scratch.glob(f"mfpo-celerybeat-{prefix}*")), "the schedule file belongs in TMPDIR"
    assert not list(REPO.glob("celerybeat-schedule*")) and not list(REPO.glob("mfpo-celerybeat-*"))
    assert PASSWORD not in log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("gpus", "visible", "index", "expected"),
    [
        ("0", None, 1, None),  # no pinning asked
        ("2", None, 0, "0"),
        ("2", None, 1, "1"),
        ("2", None, 3, "1"),  # a replaced process keeps its index; wrap around anyway
        ("2", "GPU-aa,GPU-bb", 1, "GPU-bb"),  # the GPUs already visible, e.g. UUIDs
        ("1", "3", 0, "3"),
    ],
)
def test_each_pool_process_takes_its_own_gpu(gpus: str, visible: str | None, index: int, expected: str | None) -> None:

    environ = {GPUS_ENV: gpus, **({"CUDA_VISIBLE_DEVICES": visible} if visible else {})}
    assert pin_gpu(index, environ) == expected
    assert environ.get("CUDA_VISIBLE_DEVICES") == (expected if expected is not None else visible)


def test_a_worker_with_two_gpus_runs_two_processes_on_different_gpus(tmp_path: Path) -> None:
    """``mfpo worker --gpus 2``: two pool processes, which pin GPU 0 and GPU 1 at start (log lines)."""

    env = platform_env(redis_url_for_tests(6 + xdist_index()), {}, "unused")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    worker = CeleryWorker(env, queues="cpu", gpus=2).start()
    try:
        wait_for(lambda: "pool process 1 uses GPU 1" in worker.log(), 60, "both pool processes to pin a GPU",
                 diagnostics=lambda: worker.log()[-3000:])
        log = worker.log()
        assert "pool process 0 uses GPU 0" in log and "concurrency: 2" in log
    finally:
        worker.stop()


def test_the_platforms_presigned_urls_use_the_public_endpoint() -> None:
    """MFPO_S3_PUBLIC_ENDPOINT / _SECURE (the chart sets them from MinIO's Ingress) reach the store's URLs."""

    with running_s3_server() as s3:
        env = s3.env()
        s3_settings = S3Settings(endpoint=env["MFPO_S3_ENDPOINT"], access_key=env["MFPO_S3_ACCESS_KEY"],
                                 secret_key=env["MFPO_S3_SECRET_KEY"], secure=False, bucket="pub-urls",
                                 create_bucket=True, public_endpoint="s3.mfpo.example.com", public_secure=True)
        store = PlatformSettings(s3=s3_settings).open_store()
        store.put("a.png", b"x")
        assert store.url("a.png").startswith("https://s3.mfpo.example.com/pub-urls/a.png?")
        plain = PlatformSettings(s3=s3_settings.model_copy(update={"public_endpoint": None})).open_store()
        assert plain.url("a.png").startswith(f"http://{env['MFPO_S3_ENDPOINT']}/pub-urls/a.png?")


def test_the_charts_worker_liveness_probe_pings_a_real_worker(tmp_path: Path) -> None:
    """The exec probe of the chart's worker pods, run as the kubelet would (HOSTNAME = the pod's host name):
    it succeeds against a running `mfpo worker` and fails once the worker is gone."""


    rendered = helm_python.Chart.load(str(REPO / "helm" / "mfpo")).render({}, name="mfpo", namespace="ml")
    (deployment,) = load_yaml_documents(rendered["mfpo/templates/worker-cpu/deployment.yaml"])
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    command = probe["exec"]["command"]
    env = platform_env(redis_url_for_tests(6 + xdist_index()), {}, "unused", HOSTNAME=socket.gethostname(),
                       PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    worker = CeleryWorker(env, queues="cpu", concurrency=1).start()
    try:
        def answers() -> bool:
            return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0

        wait_for(answers, 60, "the probe to get the worker's pong", diagnostics=lambda: worker.log()[-3000:])
    finally:
        worker.stop()
    failed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0, failed.stdout
    assert probe["timeoutSeconds"] > int(command[-1].rsplit(" ", 1)[-1])  # the kubelet waits longer than celery


def test_the_charts_flower_reads_the_queues_through_a_password_protected_redis(redis_with_password,
                                                                               tmp_path: Path) -> None:
    """Flower as the chart runs it (the platform's Celery app, password from MFPO_REDIS_PASSWORD) answers its
    health check and lists the deployment's queue lengths, which it can only read once Redis let it in."""


    port, _client = redis_with_password
    web_port = free_port()
    rendered = helm_python.Chart.load(str(REPO / "helm" / "mfpo")).render(
        {"flower": {"enabled": True, "port": web_port}}, name="mfpo", namespace="ml")
    (deployment,) = load_yaml_documents(rendered["mfpo/templates/flower/deployment.yaml"])
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    env = {**os.environ, "MFPO_REDIS_URL": f"redis://127.0.0.1:{port}/0", "MFPO_REDIS_PASSWORD": PASSWORD,
           "MFPO_QUEUE_PREFIX": prefix, "HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:"
           + os.environ["PATH"]}
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        flower = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def page(path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=5) as response:
                return response.read().decode()
        except OSError:
            return ""

    try:
        wait_for(lambda: page("/healthcheck") == "OK", 60, "Flower's health check",
                 diagnostics=lambda: log.read_text(errors="replace")[-3000:])
        wait_for(lambda: f"{prefix}cpu" in page("/broker"), 30, "Flower to read the queues from Redis",
                 diagnostics=lambda: log.read_text(errors="replace")[-3000:])
    finally:
        flower.terminate()
        flower.wait(timeout=20)
    assert PASSWORD not in log.read_text(errors="replace")
