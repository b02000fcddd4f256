"""Gateway behaviour that needs no worker: rate limit, key parsing, store outage -> 503 (in process)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from support.platform import redis_url_for_tests, xdist_index

from mfpo.jobs.settings import PlatformSettings
from mfpo.storage.base import StoreUnavailable
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

KEY = {"Authorization": "Bearer acme-key-0001"}


def _app(tmp_path, **overrides):  # type: ignore[no-untyped-def]
    settings = GatewaySettings(api_keys=SecretStr("acme:acme-key-0001"), **overrides)
    platform = PlatformSettings(store_dir=tmp_path, redis_url=redis_url_for_tests(12 + xdist_index()),
                                queue_prefix=f"l{uuid.uuid4().hex[:8]}-")
    return create_app(settings, platform)


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    with TestClient(_app(tmp_path, rate_limit_per_minute=3)) as client:
        assert [client.get("/v1/jobs", headers=KEY).status_code for _ in range(3)] == [200, 200, 200]
        limited = client.get("/v1/jobs", headers=KEY)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert "rate limit" in limited.json()["detail"]
        assert client.get("/healthz").status_code == 200  # open routes are not limited


@pytest.mark.parametrize("keys", ["acme", "acme:short", ":no-tenant-key", "acme:ok-key-0001,broken"])
def test_malformed_api_keys_fail_at_start_up(tmp_path, keys):
    with pytest.raises(ValueError, match="tenant:key"):
        create_app(GatewaySettings(api_keys=SecretStr(keys)), PlatformSettings(store_dir=tmp_path))


def test_api_keys_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("acme:acme-key-0001\nother:other-key-0002\n")
    assert GatewaySettings(api_keys_file=keys).tenant_keys() == {"acme-key-0001": "acme", "other-key-0002": "other"}


def test_store_outage_is_503_not_500(tmp_path):
    app = _app(tmp_path)
    with TestClient(app) as client:
        store = app.state.resources.jobs().store

        def down(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise StoreUnavailable("S3 endpoint unreachable")

        store.put = down  # type: ignore[method-assign]
        r = client.post("/v1/jobs", json={"name": "x"}, headers=KEY)
        assert r.status_code == 503 and r.headers["retry-after"] == "5" and "unavailable" in r.json()["detail"]


def test_worker_command_rejects_unknown_queues():
    import subprocess
    import sys
    from pathlib import Path

    mfpo = str(Path(sys.executable).parent / "mfpo")
    bad = subprocess.run([mfpo, "worker", "--queues", "cpu,fast"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown queue(s) ['fast']" in bad.stderr


def test_queue_prefix_names_the_queues():
    from worker.app import create_celery, queue_name

    app = create_celery(PlatformSettings(queue_prefix="prod-"))
    assert (queue_name(app, "cpu"), queue_name(app, "gpu")) == ("prod-cpu", "prod-gpu")
    assert app.conf.task_default_queue == "prod-cpu"
    with pytest.raises(ValueError, match="queue_prefix"):
        PlatformSettings(queue_prefix="bad prefix!")
