"""CPU per S3 request, client and server, on this machine: what each store round trip costs the cores. ONE JSON line.

    .venv/bin/python bench/s3_request_cost.py [--n 200] [--sizes 1000,100000,500000]

A moto S3 server (``python -m moto.server``, the test suite's and the benches' S3 endpoint) on loopback and the
platform's own client (:class:`mfpo.storage.s3.S3Store`, the ``minio`` client) in this process. For each object
size, ``--n`` PUTs then ``--n`` GETs of distinct keys (after 5 warm-up PUTs); per request: this process's CPU
(``client_cpu_ms``; the server is a child of it and not counted there), the server's process tree's CPU
(``server_cpu_ms``, psutil) and the wall time.

Why it matters: on a 2-core machine the S3 server shares the cores with the workers, so every request a stage
makes is CPU the stages lose (``bench/platform_e2e.py``'s ``cpu_ms_per_item.s3_server``). A MinIO on other
machines takes the server's share off the workers' cores; the client's share stays.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def _cpu(pids: list[int], children: bool = True) -> float:
    """User + system CPU seconds of ``pids`` (with their process trees when ``children``)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *(proc.children(recursive=True) if children else [])]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(n: int, sizes: list[int]) -> list[dict[str, float | int]]:
    from support.s3_server import running_s3_server

    from mfpo.storage.s3 import S3Store

    rows: list[dict[str, float | int]] = []
    with running_s3_server() as server:
        store = S3Store(server.config("cost", create_bucket=True))
        me, srv = [os.getpid()], [server.process.pid]
        for size in sizes:
            data = os.urandom(size)
            for k in range(5):
                store.put(f"warm/{size}/{k}", data, "application/octet-stream")
            marks = [(_cpu(me, children=False), _cpu(srv), time.perf_counter())]
            for k in range(n):
                store.put(f"cost/{size}/{k}", data, "application/octet-stream")
            marks.append((_cpu(me, children=False), _cpu(srv), time.perf_counter()))
            for k in range(n):
                store.get(f"cost/{size}/{k}")
            marks.append((_cpu(me, children=False), _cpu(srv), time.perf_counter()))
            for method, (a, b) in zip(("PUT", "GET"), itertools.pairwise(marks), strict=True):
                rows.append({"method": method, "bytes": size,
                             "client_cpu_ms": round((b[0] - a[0]) / n * 1e3, 2),
                             "server_cpu_ms": round((b[1] - a[1]) / n * 1e3, 2),
                             "wall_ms": round((b[2] - a[2]) / n * 1e3, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="Requests per method and size.")
    parser.add_argument("--sizes", default="1000,100000,500000", help="Object sizes in bytes, comma-separated.")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = measure(args.n, sizes)
    print(json.dumps({"bench": "s3_request_cost", "server": "moto", "client": "minio (mfpo.storage.s3.S3Store)",
                      "cpus": os.cpu_count(), "python": platform.python_version(), "requests_per_case": args.n,
                      "cases": rows}))


if __name__ == "__main__":
    main()
