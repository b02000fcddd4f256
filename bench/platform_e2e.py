"""The platform against the embedded runner on the same items, side by side in one run. Prints ONE JSON line.

    .venv/bin/python bench/platform_e2e.py [--n 200] [--size 512] [--small-n 400] [--small-size 96]

For each (items, size) - ``--n`` x ``--size`` and ``--small-n`` x ``--small-size``:

(a) **embedded**: ``run_generate`` with 2 worker processes; ``items_per_s_warm`` is the rate from its first
    finished chunk to its last (pool started, models loaded);
(b) **platform, S3**: a gateway (uvicorn), one ``celery worker`` with 2 pool processes, the local Redis
    (database 15) and a moto S3 server over HTTP, all on this machine. After a warm-up job (the workers load
    their models), the items are uploaded as one JSONL file with inline images, the job is closed and
    polled until finished. ``items_per_s`` counts from the start of the upload to the finished dataset;
    ``s3_requests_per_item`` counts moto's request log over the same span (every GET/PUT/HEAD/LIST/...,
    submission and finalize included; ``s3_requests_by_object_per_item`` splits them by method and object:
    the job record, chunk inputs, stage artifacts, the per-item files, the dataset); ``stage_runs_per_item``
    is, per stage, the items it ran on over the items submitted (1.00: no stage ran twice) from the job's own counters;
(c) **platform, local folder store**: the same with ``MFPO_STORE_DIR`` (no S3 server): the platform's
    overhead apart from the S3 server's CPU, which on this 2-core machine competes with the workers.

Both executors use ``--chunk-size`` items per chunk. ``platform_over_embedded_warm`` compares the warm
(steady) rates: the platform's from its first finished chunk to its last (the job's own completion times
in Redis), the embedded runner's from its first finished chunk to its last, same number of worker processes;
``end_to_end_over_embedded`` compares whole runs (upload, pool start and finalize included).
``items_per_s_queue_full``: a second job of the same items uploaded and closed while the workers take nothing
(Celery's cancel_consumer), then let go: the warm workers' rate with a full queue, no upload competing for the
cores (``queue_full_over_embedded_warm``).
``cpu_ms_per_item`` splits the platform run's CPU between the workers, the gateway and the S3 server (psutil,
the process trees), beside the embedded pool's (``cpu_ms_per_item_workers``).
Only 127.0.0.1 is contacted; Redis database 15 is emptied at start.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder is bench/; take it off the path before anything imports the stdlib's ``platform``.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform as host  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import ExitStack  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402

from mfpo.pipeline.config import GenerateConfig  # noqa: E402
from mfpo.pipeline.embedded import run_generate  # noqa: E402
from mfpo.synth import SynthConfig, generate_scenes  # noqa: E402

REDIS_DB = 15
OPTIONS = {"regions": {"mode": "annotations"}}
FINISH_TIMEOUT_S = 1800.0
REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /[^/ ]+/([^ ?]*)')
OBJECT_KINDS = (  # (kind, pattern of the key under the bucket), first match wins; layout in mfpo.jobs.store
    ("job record", re.compile(r"tenants/[^/]+/jobs/[^/]+/job\.json$")),
    ("chunk inputs", re.compile(r"tenants/[^/]+/jobs/[^/]+/chunks/")),
    ("stage artifacts", re.compile(r"tenants/[^/]+/jobs/[^/]+/(work|outcomes)/")),
    ("item files", re.compile(r"tenants/[^/]+/jobs/[^/]+/out/(images|rejected|masks)[^/]*/")),
    ("dataset", re.compile(r"tenants/[^/]+/jobs/[^/]+/(out|dataset)/")),
)


def object_kind(key: str) -> str:
    """What a request's object is, for the per-object breakdown of the S3 traffic."""
    return next((kind for kind, pattern in OBJECT_KINDS if pattern.match(key)), "other")


def _per_s(n: int, seconds: float) -> float:
    return round(n / seconds, 3) if seconds > 0 else float("inf")


def scenes(n: int, size: int, folder: Path, seed: int) -> tuple[Path, bytes]:
    """``n`` synthetic scenes: the items.jsonl path, and the same rows as JSONL with images inline."""
    import base64

    path = generate_scenes(SynthConfig(n=n, seed=seed, width=size, height=size), folder)
    lines = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        row["image"] = "data:image/png;base64," + base64.b64encode((path.parent / row["image"]).read_bytes()).decode()
        lines.append(json.dumps(row))
    return path, ("\n".join(lines) + "\n").encode()


def bench_embedded(items_path: Path, out: Path, n: int, chunk_size: int) -> dict:
    config = GenerateConfig.model_validate(OPTIONS)
    marks: list[tuple[float, int]] = []

    def progress(count: int) -> None:
        marks.append((time.perf_counter(), (marks[-1][1] if marks else 0) + count))

    started = time.perf_counter()
    summary = run_generate(items_path, out, config, workers=2, chunk_size=chunk_size, gallery=False,
                           progress=progress)
    seconds = time.perf_counter() - started
    if summary.done != n:
        raise RuntimeError(f"embedded run: {summary.as_dict()}")
    (t_first, first), (t_last, last) = marks[0], marks[-1]
    return {"items": n, "seconds": round(seconds, 3), "items_per_s": _per_s(n, seconds),
            "items_per_s_warm": _per_s(last - first, t_last - t_first)}


def steady_rate(redis_url: str, prefix: str, tenant: str, job_id: str) -> float:
    """Items/s from the first finished chunk to the last (the platform's warm rate, like the embedded one's)."""
    import redis

    entries = redis.Redis.from_url(redis_url).zrange(f"mfpo:{prefix}job:{tenant}:{job_id}:rate", 0, -1,
                                                     withscores=True)
    times = sorted((score, int(member.decode().rsplit(":", 1)[1])) for member, score in entries)
    if len(times) < 2:
        return float("nan")
    return round(sum(n for _, n in times[1:]) / (times[-1][0] - times[0][0]), 3)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its children (psutil), 0 when gone or None."""
    import psutil

    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def consume(celery_app, queues: list[str], on: bool) -> None:  # type: ignore[no-untyped-def]
    """Celery remote control: the workers stop (or start again) taking tasks from ``queues``."""
    for queue in queues:
        if on:
            celery_app.control.add_consumer(queue, reply=True, timeout=10)
        else:
            celery_app.control.cancel_consumer(queue, reply=True, timeout=10)


def run_job(c: httpx.Client, name: str, jsonl: bytes, n: int, paused: tuple | None = None) -> dict:
    """Create, upload, close, wait: seconds from the upload to finished, and the job's final status.

    With ``paused`` = (celery app, queues), the workers take nothing while the items are uploaded and the job
    closed; the clock of ``processing_seconds`` starts when they are let go (a full queue, warm workers)."""
    job_id = c.post("/v1/jobs", json={"name": name, "options": OPTIONS}).raise_for_status().json()["id"]
    if paused:
        consume(*paused, on=False)
    started = time.perf_counter()
    r = c.post(f"/v1/jobs/{job_id}/uploads", files={"file": ("items.jsonl", jsonl)})
    r.raise_for_status()
    uploaded = time.perf_counter()
    if len(r.json()["accepted"]) != n:
        raise RuntimeError(f"upload: {r.text[:500]}")
    c.post(f"/v1/jobs/{job_id}/close").raise_for_status()
    closed = time.perf_counter()
    if paused:
        consume(*paused, on=True)
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while True:
        status = c.get(f"/v1/jobs/{job_id}").json()
        if status["status"] == "finished":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished: {status['counts']}")
        time.sleep(0.1)
    finished = time.perf_counter()
    if status["counts"]["done"] != n:
        raise RuntimeError(f"job {job_id}: {status['counts']}")
    return {"job": job_id, "seconds": finished - started, "upload_seconds": uploaded - started,
            "close_to_finished_seconds": finished - closed, "status": status}


def celery_client(env: dict[str, str]):  # type: ignore[no-untyped-def]
    from support.jobs import celery_client as client
    from support.jobs import settings_from_env

    return client(settings_from_env(env))


def bench_platform(jsonl: bytes, warm: bytes, n: int, store: str, work: Path, chunk_size: int) -> dict:
    from support.platform import API_KEYS, CeleryWorker, Gateway, platform_env, redis_url_for_tests
    from support.s3_server import running_s3_server

    redis_url = redis_url_for_tests(REDIS_DB)
    keys = ",".join(f"{t}:{k}" for t, k in API_KEYS.items())
    common = {"MFPO_API_KEYS": keys, "MFPO_RATE_LIMIT_PER_MINUTE": "1000000", "MFPO_S3_CREATE_BUCKET": "true",
              "MFPO_CHUNK_SIZE": str(chunk_size)}
    with ExitStack() as stack:
        s3 = stack.enter_context(running_s3_server()) if store == "s3" else None
        s3_env = s3.env() if s3 is not None else {}
        env = platform_env(redis_url, s3_env, f"b{uuid.uuid4().hex[:8]}", **common)
        if s3 is None:
            env = {k: v for k, v in env.items() if not k.startswith("MFPO_S3_")}
            env["MFPO_STORE_DIR"] = str(work / f"store-{uuid.uuid4().hex[:6]}")
        gateway = Gateway(env).start()
        stack.callback(gateway.stop)
        worker = CeleryWorker(env, concurrency=2).start()
        stack.callback(worker.stop)
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {API_KEYS['acme']}"},
                          timeout=600) as c:
            run_job(c, "warm-up", warm, warm.count(b"\n"))
            log_mark = len(s3.log().splitlines()) if s3 is not None else 0
            pids = {"workers": worker.process.pid if worker.process else None,
                    "gateway": gateway.process.pid if gateway.process else None,
                    "s3_server": s3.process.pid if s3 is not None else None}
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            job = run_job(c, "bench", jsonl, n)
            cpu = {k: round(cpu_seconds(p) - before[k], 2) for k, p in pids.items()}
            job["steady"] = steady_rate(redis_url, env["MFPO_QUEUE_PREFIX"], "acme", job["job"])
            time.sleep(0.5)
            logged = [(m.group(1), object_kind(m.group(2))) for line in (s3.log().splitlines()[log_mark:] if s3 else [])
                      if (m := REQUEST.search(line))]
            requests = Counter(method for method, _ in logged)
            by_object = Counter(f"{method} {kind}" for method, kind in logged)
            queues = [f"{env['MFPO_QUEUE_PREFIX']}{q}" for q in ("cpu", "control")]
            queued = run_job(c, "bench-queued", jsonl.replace(b'"id": "', b'"id": "q-'), n,
                             paused=(celery_client(env), queues))
    stages = job["status"]["stages"]
    return {
        "store": store,
        "items": n,
        "worker_processes": 2,
        "seconds": round(job["seconds"], 3),
        "items_per_s": _per_s(n, job["seconds"]),
        "items_per_s_warm": job["steady"],
        "items_per_s_queue_full": _per_s(n, queued["close_to_finished_seconds"]),
        "upload_seconds": round(job["upload_seconds"], 3),
        "close_to_finished_seconds": round(job["close_to_finished_seconds"], 3),
        "s3_requests_per_item": round(sum(requests.values()) / n, 3) if s3 is not None else None,
        "s3_requests_by_method_per_item": {k: round(v / n, 3) for k, v in sorted(requests.items())},
        "s3_requests_by_object_per_item": {k: round(v / n, 3) for k, v in sorted(by_object.items())},
        "stage_runs_per_item": {k: round(v / n, 3) for k, v in sorted(stages.items())},
        "cpu_seconds": cpu,
        "cpu_ms_per_item": {k: round(v * 1000 / n, 1) for k, v in cpu.items()},
    }


def bench_case(n: int, size: int, work: Path, chunk_size: int) -> dict:
    items_path, jsonl = scenes(n, size, work / f"scenes-{size}", seed=size)
    _, warm = scenes(8, size, work / f"warm-{size}", seed=10_000 + size)
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    embedded = bench_embedded(items_path, work / f"embedded-{size}", n, chunk_size)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    embedded["cpu_ms_per_item_workers"] = round(
        (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000 / n, 1)
    out: dict = {"size": size, "items": n, "chunk_size": chunk_size, "embedded": embedded}
    for store in ("s3", "local"):
        result = bench_platform(jsonl, warm, n, store, work, chunk_size)
        result["platform_over_embedded_warm"] = round(result["items_per_s_warm"] / embedded["items_per_s_warm"], 3)
        result["queue_full_over_embedded_warm"] = round(result["items_per_s_queue_full"] / embedded["items_per_s_warm"],
                                                        3)
        result["end_to_end_over_embedded"] = round(result["items_per_s"] / embedded["items_per_s"], 3)
        out[f"platform_{store}"] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="items of the main case")
    parser.add_argument("--size", type=int, default=512, help="image size of the main case")
    parser.add_argument("--small-n", type=int, default=400, help="items of the small-image case (0: skip)")
    parser.add_argument("--small-size", type=int, default=96, help="image size of the small-image case")
    parser.add_argument("--chunk-size", type=int, default=16, help="items per chunk, both executors")
    args = parser.parse_args()
    result: dict = {"bench": "platform_e2e", "cpus": os.cpu_count(), "python": host.python_version(),
                    "loadavg_1m_at_start": round(os.getloadavg()[0], 2), "cases": []}
    with tempfile.TemporaryDirectory(prefix="mfpo-bench-platform-") as tmp:
        work = Path(tmp)
        result["cases"].append(bench_case(args.n, args.size, work, args.chunk_size))
        if args.small_n:
            result["cases"].append(bench_case(args.small_n, args.small_size, work, args.chunk_size))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
