"""The platform at 1k / 10k / 100k items: submission rate, status latency, S3 traffic, finalize. ONE JSON line.

    .venv/bin/python bench/platform_scale.py [--sizes 1000,10000,100000] [--process 10000] [--finalize 100000]

Everything runs on this machine: a gateway (uvicorn), moto S3 over HTTP, the local Redis (database 14), and
for the processing run one ``celery worker`` with 2 pool processes.

1. **Submission**: for each size, a job gets its items as one upload (JSONL, 64x64 PNGs inline, 256 distinct
   images, every item its own id); ``items_per_s`` = items / upload seconds (the answer lists every item).
2. **Status**: then 200 sequential ``GET /v1/jobs/{id}`` (no worker running): p50 / p99 ms, per job size.
3. **Processing** (the ``--process`` job; the other jobs are cancelled first, so their queued stages do
   nothing): a worker starts, the job is closed and polled until finished:
   items/s, S3 requests per item over submission + processing + finalize (moto's request log), stage runs
   per item (the job's own counters; 1.00 = each stage ran once per item), status p50 while it ran, and
   finalize's own time (from the worker's log).
4. **Finalize at scale** (the ``--finalize`` job, submitted in step 1): each of its chunks gets an outcomes
   file as a worker would write it (records of the real items), then ``write_job_dataset`` runs in a fresh
   process: seconds and that process's peak RSS.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

REDIS_DB = 14
REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) ')
FINALIZE_LINE = re.compile(r"finalized: (\d+) records, (\d+) failures, (\d+) chunks in ([0-9.]+) s")


def jsonl_rows(n: int, prefix: str, distinct: int = 256) -> bytes:
    """``n`` native items, 64x64 PNGs inline (``distinct`` different images), ids ``{prefix}-{i}``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    uris, boxes = [], []
    for k in range(distinct):
        img = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
        box = (8 + k % 16, 8, 40 + k % 16, 48)
        img.paste((200, 40, 40), box)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        uris.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
        boxes.append(list(box))
    out = io.StringIO()
    for i in range(n):
        k = i % distinct
        out.write(json.dumps({"id": f"{prefix}-{i:06d}", "image": uris[k], "question": "What is in the picture?",
                              "chosen": f"A red box number {i} on a plain background.",
                              "rejected": "A blue ball on the grass.",
                              "annotations": [{"label": "red box", "box": boxes[k]}]}) + "\n")
    return out.getvalue().encode()


def latency_ms(c: httpx.Client, path: str, calls: int) -> dict:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        c.get(path).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return {"calls": calls, "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(float(np.percentile(times, 99)), 2)}


def requests_since(s3, mark: int) -> Counter:  # type: ignore[no-untyped-def]
    return Counter(m.group(1) for line in s3.log().splitlines()[mark:] if (m := REQUEST.search(line)))


def write_outcomes(store, tenant: str, job_id: str) -> int:  # type: ignore[no-untyped-def]
    """Outcomes of every chunk of a submitted job, as the perturb stage writes them (records of its items)."""
    from mfpo.jobs import JobKeys, JobStore
    from mfpo.schemas import KeywordScore, PerturbationRecord, RegionRecord, ResultRecord
    from mfpo.stages.artifacts import Outcome, encode_outcomes
    from mfpo.stages.chunk import Chunk

    jobs = JobStore(store)
    job = jobs.get_job(tenant, job_id)
    keys = JobKeys(tenant, job_id)

    def one(chunk: str) -> int:
        record = Chunk.model_validate_json(store.get(keys.artifact(chunk, "items")))
        outcomes = []
        for it in record.items:
            k = it.keys
            rec = ResultRecord(
                id=it.id, question=it.item.question, chosen=it.item.chosen, rejected=it.item.rejected,
                image=k.image, rejected_image=k.rejected_image, mask=k.mask,
                keywords=[KeywordScore(text="red box", score=0.42), KeywordScore(text="background", score=0.2)],
                regions=[RegionRecord(keyword="red box", box=(8.0, 8.0, 40.0, 48.0), source="annotations",
                                      area=0.31)],
                perturbation=PerturbationRecord(mode="annotations", noise_step=500, schedule="linear", seed=it.seed,
                                                fallback=False))
            outcomes.append(Outcome(id=it.id, index=it.index, row=it.row, status="done", record=rec))
        store.put(keys.artifact(chunk, "outcomes"), encode_outcomes(outcomes))
        return len(outcomes)

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, jobs.stored_chunks(job)))


FINALIZE_SCRIPT = """
import json, resource, sys, time
from mfpo.jobs import JobStore, PlatformSettings, write_job_dataset
from mfpo.storage.s3 import S3Store
from mfpo.storage.settings import S3Settings
jobs = JobStore(S3Store(S3Settings().store_config(bucket=sys.argv[1])))
job = jobs.get_job(sys.argv[2], sys.argv[3])
job = jobs.close_job(job)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
stats = write_job_dataset(jobs, None, job, PlatformSettings())
print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "records": stats.records,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_before_mb": round(base, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="job sizes for submission and status")
    parser.add_argument("--process", type=int, default=10_000, help="the job size processed by a worker (0: none)")
    parser.add_argument("--finalize", type=int, default=100_000, help="the job size finalized (0: none)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from support.platform import API_KEYS, CeleryWorker, Gateway, platform_env, redis_url_for_tests
    from support.s3_server import running_s3_server

    result: dict = {"bench": "platform_scale", "cpus": os.cpu_count(), "submission": {}, "status": {}}
    redis_url = redis_url_for_tests(REDIS_DB)
    with running_s3_server() as s3:
        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        keys = ",".join(f"{t}:{k}" for t, k in API_KEYS.items())
        env = platform_env(redis_url, s3.env(), bucket, MFPO_API_KEYS=keys, MFPO_S3_CREATE_BUCKET="true",
                           MFPO_RATE_LIMIT_PER_MINUTE="100000000")
        gateway = Gateway(env).start()
        jobs: dict[int, str] = {}
        marks: dict[int, int] = {}
        try:
            with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {API_KEYS['acme']}"},
                              timeout=3600) as c:
                for n in sizes:
                    body = jsonl_rows(n, f"s{n}")
                    job_id = c.post("/v1/jobs", json={"name": f"scale-{n}", "options": {
                        "regions": {"mode": "annotations"}}}).raise_for_status().json()["id"]
                    marks[n] = len(s3.log().splitlines())
                    t0 = time.perf_counter()
                    r = c.post(f"/v1/jobs/{job_id}/uploads", files={"file": ("items.jsonl", body)})
                    seconds = time.perf_counter() - t0
                    r.raise_for_status()
                    accepted = len(r.json()["accepted"])
                    assert accepted == n, r.text[:300]
                    sub_requests = requests_since(s3, marks[n])
                    result["submission"][str(n)] = {
                        "seconds": round(seconds, 2), "items_per_s": round(n / seconds, 1),
                        "upload_mb": round(len(body) / 1e6, 1),
                        "s3_requests_per_item": round(sum(sub_requests.values()) / n, 4)}
                    result["status"][str(n)] = latency_ms(c, f"/v1/jobs/{job_id}", 200)
                    jobs[n] = job_id
                for other, other_id in jobs.items():  # only the --process job runs: the others are cancelled (their
                    if other != args.process:  # queued stages then do nothing; their chunks stay for finalize)
                        c.post(f"/v1/jobs/{other_id}/cancel").raise_for_status()
                if args.process:
                    n = args.process
                    job_id = jobs[n]
                    worker = CeleryWorker(env, concurrency=2).start()
                    polled = []
                    try:
                        t0 = time.perf_counter()
                        c.post(f"/v1/jobs/{job_id}/close").raise_for_status()
                        while True:
                            t1 = time.perf_counter()
                            status = c.get(f"/v1/jobs/{job_id}").json()
                            polled.append((time.perf_counter() - t1) * 1000)
                            if status["status"] == "finished":
                                break
                            time.sleep(0.5)
                        seconds = time.perf_counter() - t0
                        time.sleep(1.0)
                        finalize = FINALIZE_LINE.search(worker.log())
                    finally:
                        worker.stop()
                    requests = requests_since(s3, marks[n])
                    result["processing"] = {
                        "items": n, "worker_processes": 2, "close_to_finished_seconds": round(seconds, 1),
                        "items_per_s": round(n / seconds, 1),
                        "s3_requests_per_item": round(sum(requests.values()) / n, 3),
                        "s3_requests_by_method_per_item": {k: round(v / n, 3) for k, v in sorted(requests.items())},
                        "stage_runs_per_item": {k: round(v / n, 3) for k, v in sorted(status["stages"].items())},
                        "status_while_processing_p50_ms": round(statistics.median(polled), 2),
                        "finalize_seconds_in_worker": float(finalize.group(4)) if finalize else None,
                    }
                if args.finalize:
                    n = args.finalize
                    from mfpo.storage.s3 import S3Store

                    store = S3Store(s3.config(bucket))
                    t0 = time.perf_counter()
                    written = write_outcomes(store, "acme", jobs[n])
                    prepared = time.perf_counter() - t0
                    proc = subprocess.run([sys.executable, "-c", FINALIZE_SCRIPT, bucket, "acme", jobs[n]],
                                          capture_output=True, text=True, timeout=3600, env={**os.environ, **s3.env()})
                    if proc.returncode != 0:
                        raise RuntimeError(proc.stderr[-3000:])
                    result["finalize"] = {"items": n, "outcomes_written": written,
                                          "outcomes_prepare_seconds": round(prepared, 1),
                                          **json.loads(proc.stdout.strip().splitlines()[-1])}
        finally:
            gateway.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
