"""Soak: one job through gateway + 2 workers + beat while workers, Redis and the store are broken. ONE JSON line.

    .venv/bin/python bench/soak.py [--n 10000] [--kills 10] [--store-off-s 30] [--size 64]

The scenario (``tests/support/soak.py``): a private redis-server with AOF, moto S3 behind a TCP proxy, the
gateway under uvicorn, two ``celery worker`` processes (one pool process each) and ``mfpo beat``. The client
submits in batches of 250 (retrying 503s), closes once and polls until finished. Meanwhile: ``--kills``
SIGKILLs of a worker (restarted 0.5 s later) spread over the run, one SIGKILL + restart of Redis, one
FLUSHALL (queues and every job's state), and the store cut off for ``--store-off-s``. Prints records,
unique ids, expected, lost, duplicated, failed with reasons, the events and when they were applied, and
the time; success is 0 lost, 0 duplicated and a finished job without any manual call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.soak import SoakConfig, run_soak  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="items in the job")
    parser.add_argument("--kills", type=int, default=10, help="worker SIGKILLs spread over the run")
    parser.add_argument("--store-off-s", type=float, default=30.0, help="seconds the store is cut off")
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--chunk-size", type=int, default=32, help="MFPO_CHUNK_SIZE")
    parser.add_argument("--time-limit-s", type=float, default=3600.0, help="give up after this long")
    args = parser.parse_args()
    config = SoakConfig(n=args.n, size=args.size, kills=args.kills, store_off_s=args.store_off_s,
                        chunk_size=args.chunk_size, time_limit_s=args.time_limit_s, distinct_images=256)
    result = run_soak(config)
    ok = result["finished"] and result["lost"] == 0 and result["duplicated"] == 0
    print(json.dumps({"bench": "soak", "cpus": os.cpu_count(), "ok": ok, **result}))


if __name__ == "__main__":
    main()
