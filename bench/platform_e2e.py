"""Benchmark of the platform against the embedded pipeline, on one machine. Prints ONE JSON line.

    .venv/bin/python bench/platform_e2e.py [--n 60] [--size 96] [--requests 200] [--threads 8]

(a) embedded: ``mfpo.pipeline.embedded.run_generate`` on ``--n`` synthetic scenes of
    ``--size``^2, ``workers=2``, regions mode ``annotations``, no gallery; items/s over the
    whole run (process pool start and model loads included, as a CLI user pays them), and
    ``items_per_s_after_first_batch``: the rate from the first finished batch (pool up, models
    loaded) to the last, comparable with the platform's warm worker.
(b) platform: a gateway (uvicorn) + 1 Celery worker process (prefork, concurrency 2) on the
    local Redis 127.0.0.1:6379 db 15 and a moto S3 server, all started here
    (``tests/support/platform.py``). After a 2-item warm-up job (the worker loads its
    resources), the same ``--n`` items go as data: URIs in POSTs of 20; items/s is timed from
    the first POST until ``GET /v1/jobs/ID`` says ``finished`` (the dataset is written).
    ``platform_over_embedded`` = platform items/s / embedded items/s (below 1: the overhead);
    ``platform_over_embedded_warm``: the same against the embedded rate after the first batch.
(c) submission: the worker stopped (the gateway alone), ``--requests`` POST
    /v1/jobs/ID/items with 1 small item (64^2) each, then ``--requests`` GET /v1/jobs/ID, from
    a pool of ``--threads`` httpx threads on loopback; requests/s and p50/p99 latency in ms
    per endpoint (and the count of non-2xx answers).

Everything is bounded: fixed request counts, a timeout per request, a deadline on every wait.
Only 127.0.0.1 is contacted. Redis database 15 is emptied at start.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file shares its name with the stdlib's ``platform``: take bench/ off the path before anything imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform as host  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from mfpo.pipeline.config import GenerateConfig  # noqa: E402
from mfpo.pipeline.embedded import run_generate  # noqa: E402
from mfpo.synth import SynthConfig, generate_scenes  # noqa: E402

REDIS_DB = 15
OPTIONS = {"regions": {"mode": "annotations"}}
POST_BATCH = 20
FINISH_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 30.0


def _per_s(n: int, seconds: float) -> float:
    return round(n / seconds, 3) if seconds > 0 else float("inf")


def scenes(n: int, size: int, folder: Path, seed: int) -> tuple[Path, list[dict]]:
    """``n`` synthetic scenes: the items.jsonl path and the rows with images inlined as data: URIs."""
    path = generate_scenes(SynthConfig(n=n, seed=seed, width=size, height=size), folder)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r["image"] = "data:image/png;base64," + base64.b64encode((path.parent / r["image"]).read_bytes()).decode()
    return path, rows


def bench_embedded(items_path: Path, out: Path, n: int) -> dict:
    """items/s of ``run_generate`` (workers=2) on the ``n`` items: whole run, and from the first finished batch."""
    config = GenerateConfig.model_validate(OPTIONS)
    marks: list[tuple[float, int]] = []  # (time, items finished so far) at each finished batch

    def progress(count: int) -> None:
        marks.append((time.perf_counter(), (marks[-1][1] if marks else 0) + count))

    started = time.perf_counter()
    summary = run_generate(items_path, out, config, workers=2, gallery=False, progress=progress)
    seconds = time.perf_counter() - started
    if summary.done != n:
        raise RuntimeError(f"embedded run: {summary.as_dict()}")
    (t_first, first), (t_last, last) = marks[0], marks[-1]
    return {"items": n, "seconds": round(seconds, 3), "items_per_s": _per_s(n, seconds),
            "first_batch_seconds": round(t_first - started, 3),
            "items_per_s_after_first_batch": _per_s(last - first, t_last - t_first)}


def run_job(c: httpx.Client, name: str, rows: list[dict]) -> tuple[str, float]:
    """Create a job, POST ``rows``, close it, wait until finished; (job id, seconds from first POST)."""
    job = c.post("/v1/jobs", json={"name": name, "options": OPTIONS})
    job.raise_for_status()
    job_id = job.json()["id"]
    started = time.perf_counter()
    for start in range(0, len(rows), POST_BATCH):
        r = c.post(f"/v1/jobs/{job_id}/items", json={"items": rows[start:start + POST_BATCH]})
        r.raise_for_status()
        if r.json()["rejected"]:
            raise RuntimeError(f"items refused: {r.json()['rejected'][:3]}")
    c.post(f"/v1/jobs/{job_id}/close").raise_for_status()
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while True:
        status = c.get(f"/v1/jobs/{job_id}").json()
        if status["status"] == "finished":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {FINISH_TIMEOUT_S:.0f} s: {status['counts']}")
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if status["counts"]["done"] != len(rows):
        raise RuntimeError(f"job {job_id}: {status['counts']}")
    return job_id, seconds


def _latency_stats(latencies_s: list[float], wall_s: float, errors: int) -> dict:
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "requests": len(latencies_s),
        "non_2xx": errors,
        "requests_per_s": _per_s(len(latencies_s), wall_s),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def load(c: httpx.Client, calls: list[tuple[str, str, dict | None]], threads: int) -> dict:
    """Send ``calls`` (method, path, json) from ``threads`` threads; latency stats."""

    def one(call: tuple[str, str, dict | None]) -> tuple[float, int]:
        method, path, body = call
        t0 = time.perf_counter()
        r = c.request(method, path, json=body)
        return time.perf_counter() - t0, r.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, calls))
    wall = time.perf_counter() - started
    return _latency_stats([t for t, _ in results], wall, sum(1 for _, s in results if not 200 <= s < 300))


def bench_submission(c: httpx.Client, small: list[dict], requests: int, threads: int) -> dict:
    job_id = c.post("/v1/jobs", json={"name": "load", "options": OPTIONS}).json()["id"]
    posts = [("POST", f"/v1/jobs/{job_id}/items", {"items": [{**small[i % len(small)], "id": f"load-{i}"}]})
             for i in range(requests)]
    gets = [("GET", f"/v1/jobs/{job_id}", None)] * requests
    return {
        "threads": threads,
        "post_items": load(c, posts, threads),
        "get_job": load(c, gets, threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60, help="items of (a) and (b)")
    parser.add_argument("--size", type=int, default=96, help="scene width and height in pixels (64 or more)")
    parser.add_argument("--requests", type=int, default=200, help="requests per endpoint in (c)")
    parser.add_argument("--threads", type=int, default=8, help="load generator threads in (c)")
    args = parser.parse_args()
    if not (1 <= args.n <= 5000 and 64 <= args.size <= 2048 and 1 <= args.requests <= 10000
            and 1 <= args.threads <= 64):
        parser.error("--n 1..5000, --size 64..2048, --requests 1..10000, --threads 1..64")

    from support.platform import running_platform

    result: dict = {"bench": "platform", "n": args.n, "size": args.size, "cpus": os.cpu_count(),
                    "python": host.python_version(),
                    "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="mfpo-bench-platform-") as tmp:
        work = Path(tmp)
        items_path, rows = scenes(args.n, args.size, work / "scenes", seed=args.size)
        _, warm_rows = scenes(2, args.size, work / "warm", seed=10_000 + args.size)
        _, small = scenes(min(args.requests, 20), 64, work / "small", seed=64)

        result["embedded"] = bench_embedded(items_path, work / "embedded", args.n)

        settings = {"MFPO_RATE_LIMIT_PER_MINUTE": "1000000", "MFPO_MAX_ITEMS_PER_REQUEST": str(POST_BATCH)}
        with running_platform(REDIS_DB, **settings) as plat, \
                httpx.Client(base_url=plat.gateway.url, headers=plat.headers("acme"),
                             timeout=REQUEST_TIMEOUT_S) as c:
            _, warm_s = run_job(c, "warm-up", warm_rows)
            _, seconds = run_job(c, "bench", rows)
            result["platform"] = {"items": args.n, "seconds": round(seconds, 3), "items_per_s": _per_s(args.n, seconds),
                                  "warmup_seconds": round(warm_s, 3), "worker_concurrency": plat.worker.concurrency,
                                  "redis_db": REDIS_DB}
            plat.worker.stop()
            result["submission"] = {"worker": "stopped", **bench_submission(c, small, args.requests, args.threads)}
    platform_rate = result["platform"]["items_per_s"]
    result["platform_over_embedded"] = round(platform_rate / result["embedded"]["items_per_s"], 3)
    warm_rate = result["embedded"]["items_per_s_after_first_batch"]
    result["platform_over_embedded_warm"] = round(platform_rate / warm_rate, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
