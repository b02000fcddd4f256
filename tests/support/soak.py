"""The soak scenario: one job through gateway + 2 workers + beat while the infrastructure is broken on purpose.

Used by ``bench/soak.py`` (10,000 items) and ``tests/test_soak.py`` (300 items). Real parts only: a
private ``redis-server`` with its append-only file, moto S3 behind a TCP proxy that can be cut, the
gateway under uvicorn, two ``celery worker`` processes and one ``mfpo beat``.

The client submits the items in batches (retrying a 503 after its Retry-After: a retried batch is
idempotent), closes the job once, and polls its status until it is finished; nobody calls anything
else. Meanwhile the chaos plan runs, each event when the job has reached a share of its items:
``kill`` SIGKILLs a worker (its pool children too) and starts it again, ``redis-restart`` SIGKILLs
Redis and starts it on its data, ``flushall`` empties Redis (queues and every job's state), ``store-off``
cuts the store off for a while. At the end the dataset is read back from the store and compared with
what was submitted: records, unique ids, lost, duplicated, failed (with reasons).
"""

from __future__ import annotations

import base64
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib

from support.platform import API_KEYS, CeleryWorker, Gateway, platform_env, stop_process_group, wait_for
from support.proxy import tcp_proxy
from support.s3_server import free_port, running_s3_server

REPO = Path(__file__).resolve().parents[2]
ACME = {"Authorization": f"Bearer {API_KEYS['acme']}"}


@dataclass
class ChaosEvent:
    kind: str  # kill | redis-restart | flushall | store-off
    at_share: float  # applied once this share of the items is finished (or at once when 0)
    done_at: float | None = None
    detail: str = ""


@dataclass
class SoakConfig:
    n: int = 300
    size: int = 64
    distinct_images: int = 64
    batch: int = 250
    kills: int = 3
    store_off_s: float = 5.0
    chunk_size: int = 16
    time_limit_s: float = 600.0
    seed: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def plan(self) -> list[ChaosEvent]:
        """Kills spread over the run; Redis restart, FLUSHALL and the store cut at fixed shares."""
        events = [ChaosEvent("kill", 0.05 + 0.8 * k / max(1, self.kills)) for k in range(self.kills)]
        events += [ChaosEvent("redis-restart", 0.25), ChaosEvent("flushall", 0.45), ChaosEvent("store-off", 0.65)]
        return sorted(events, key=lambda e: e.at_share)


class PrivateRedis:
    """redis-server with AOF on a free port, in its own folder (restart = SIGKILL + start on the same data)."""

    def __init__(self, folder: Path) -> None:
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
        wait_for(self.ping, 30, "redis-server to start")

    def ping(self) -> bool:
        try:
            return bool(redis_lib.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis_lib.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def make_rows(config: SoakConfig) -> list[dict[str, Any]]:
    """``n`` native items with inline images (a pool of distinct procedural images, each item its own id)."""
    from PIL import Image

    rng = random.Random(config.seed)
    images = []
    for k in range(config.distinct_images):
        img = Image.new("RGB", (config.size, config.size), (rng.randrange(256), rng.randrange(256), 90))
        box = (config.size // 4, config.size // 4, config.size // 2 + k % (config.size // 4), 3 * config.size // 4)
        img.paste((200, 30 + k, 40), box)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        images.append(("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), box))
    rows = []
    for i in range(config.n):
        uri, box = images[i % len(images)]
        rows.append({"id": f"soak-{i:06d}", "image": uri, "question": "What is in the picture?",
                     "chosen": f"A red box number {i} on a plain background.", "rejected": "A blue ball on grass.",
                     "annotations": [{"label": "red box", "box": list(box)}]})
    return rows


class Client:
    """The user: batches with retries, one close, status polls (every 503 retried after Retry-After)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, headers=ACME, timeout=60)
        self.retries: Counter[str] = Counter()

    def call(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                self.retries[f"{method} {type(exc).__name__}"] += 1
                response = None
            if response is not None and response.status_code < 500 and response.status_code != 409:
                return response
            if response is not None and response.status_code == 409 and not path.endswith("/close"):
                return response
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path}: still failing at the deadline ({response and response.text})")
            if response is not None:
                self.retries[f"{method} {response.status_code}"] += 1
            wait = float(response.headers.get("retry-after", "1")) if response is not None else 1.0
            time.sleep(min(wait, 2.0))


def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Run the scenario; returns the result line (see the module docstring)."""
    started = time.monotonic()
    deadline = started + config.time_limit_s
    rows = make_rows(config)
    folder = Path(tempfile.mkdtemp(prefix="mfpo-soak-"))
    redis_server = PrivateRedis(folder)
    redis_server.start()
    events = config.plan()
    workers: list[CeleryWorker] = []
    beat: subprocess.Popen[bytes] | None = None
    gateway: Gateway | None = None
    try:
        with running_s3_server() as s3, tcp_proxy(s3.endpoint) as proxy:
            bucket = f"soak-{uuid.uuid4().hex[:8]}"
            keys = ",".join(f"{t}:{k}" for t, k in API_KEYS.items())
            env = platform_env(redis_server.url, {**s3.env(), "MFPO_S3_ENDPOINT": proxy.endpoint}, bucket,
                               MFPO_S3_CREATE_BUCKET="true", MFPO_API_KEYS=keys, MFPO_CHUNK_SIZE=str(config.chunk_size),
                               MFPO_HEARTBEAT_INTERVAL_S="2", MFPO_OVERDUE_AFTER_S="15", MFPO_RECONCILE_INTERVAL_S="3",
                               MFPO_RETRY_BACKOFF_MAX_S="5", MFPO_RATE_LIMIT_PER_MINUTE="1000000",
                               MFPO_MAX_ITEMS_PER_REQUEST=str(max(config.batch, 1000)), **config.extra_env)
            gateway = Gateway(env).start()
            workers = [CeleryWorker(env, concurrency=1).start() for _ in range(2)]
            with open(folder / "beat.log", "wb") as log:
                beat = subprocess.Popen([str(Path(sys.executable).parent / "mfpo"), "beat"], cwd=REPO, env=env,
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            client = Client(gateway.url)
            job_id = client.call("POST", "/v1/jobs", deadline, json={"name": "soak", "options": {
                "regions": {"mode": "annotations"}}}).json()["id"]
            accepted: set[str] = set()
            rejected: list[Any] = []
            progress = {"done": 0}
            stop = threading.Event()

            def submit_and_close() -> None:
                for start in range(0, len(rows), config.batch):
                    r = client.call("POST", f"/v1/jobs/{job_id}/items", deadline,
                                    json={"items": rows[start:start + config.batch]})
                    accepted.update(a["id"] for a in r.json()["accepted"])
                    rejected.extend(r.json()["rejected"])
                client.call("POST", f"/v1/jobs/{job_id}/close", deadline)

            submitter = threading.Thread(target=submit_and_close, daemon=True)
            submitter.start()
            chaos = threading.Thread(target=_chaos, args=(events, progress, config, workers, redis_server, proxy,
                                                          stop), daemon=True)
            chaos.start()
            status: dict[str, Any] = {}
            while time.monotonic() < deadline:
                status = client.call("GET", f"/v1/jobs/{job_id}", deadline).json()
                progress["done"] = status["counts"]["done"] + status["counts"]["failed"]
                if status["status"] == "finished" and not submitter.is_alive():
                    break
                time.sleep(0.5)
            stop.set()
            chaos.join(60)
            submitter.join(5)
            seconds = time.monotonic() - started
            from mfpo.jobs import JobKeys
            from mfpo.schemas import ResultRecord
            from mfpo.storage.s3 import S3Store

            store = S3Store(s3.config(bucket))
            keys_ = JobKeys("acme", job_id)
            finished = store.exists(keys_.manifest)
            manifest = store.get(keys_.manifest).decode().splitlines() if finished else []
            ids = [ResultRecord.model_validate_json(line).id for line in manifest]
            failure_lines = store.get(f"{keys_.dataset}/failures.jsonl").decode().splitlines() if finished else []
            failures = [json.loads(line) for line in failure_lines]
    finally:
        for w in workers:
            w.kill()
        if beat is not None:
            stop_process_group(beat, grace_s=0)
        if gateway is not None:
            gateway.stop()
        redis_server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    expected = {r["id"] for r in rows}
    present = set(ids) | {f["id"] for f in failures}
    return {
        "items": config.n,
        "finished": finished,
        "records": len(ids),
        "unique_ids": len(set(ids)),
        "expected": len(expected),
        "accepted": len(accepted),
        "rejected_at_submission": len(rejected),
        "lost": len(expected - present),
        "duplicated": len(ids) - len(set(ids)),
        "failed": len(failures),
        "failure_reasons": dict(Counter(f["reason"][:80] for f in failures)),
        "seconds": round(seconds, 1),
        "events": [{"kind": e.kind, "at_share": round(e.at_share, 2), "applied_at_s": e.done_at, "detail": e.detail}
                   for e in events],
        "client_retries": dict(client.retries),
        "final_status": status.get("status"),
    }


def _chaos(events: list[ChaosEvent], progress: dict[str, int], config: SoakConfig, workers: list[CeleryWorker],
           redis_server: PrivateRedis, proxy: Any, stop: threading.Event) -> None:
    t0 = time.monotonic()
    rng = random.Random(config.seed)
    for event in events:
        while not stop.is_set() and progress["done"] < event.at_share * config.n:
            time.sleep(0.05)
        if stop.is_set():
            return
        if event.kind == "kill":
            k = rng.randrange(len(workers))
            workers[k].kill()
            time.sleep(0.5)
            workers[k].start()
            event.detail = f"worker {k}"
        elif event.kind == "redis-restart":
            redis_server.kill()
            time.sleep(1.0)
            redis_server.start()
        elif event.kind == "flushall":
            redis_lib.Redis(port=redis_server.port).flushall()
        elif event.kind == "store-off":
            proxy.set_down(True)
            time.sleep(config.store_off_s)
            proxy.set_down(False)
            event.detail = f"{config.store_off_s:.0f} s"
        event.done_at = round(time.monotonic() - t0, 1)
