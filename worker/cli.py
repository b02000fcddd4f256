"""``mfpo worker``: a Celery worker on the cpu and/or gpu queues."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues: cpu, gpu or cpu,gpu.")] = "cpu",
    concurrency: Annotated[int, typer.Option(help="Worker processes (0: one per core; gpu: 1).")] = 0,
    beat: Annotated[bool, typer.Option(help="Also run the periodic reconcile (exactly one worker should).")] = False,
) -> None:
    """Run a worker (settings from MFPO_* environment variables). GPU queues run one task at a time."""
    import os

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - {"cpu", "gpu"})
    if not names or unknown:
        raise typer.BadParameter(f"unknown queue(s) {unknown or names}; use cpu, gpu or cpu,gpu", param_hint="--queues")
    if concurrency <= 0:
        concurrency = 1 if "gpu" in names else (os.cpu_count() or 1)
    from worker.app import celery_app
    from worker.client import queue_name

    queue_names = ",".join(queue_name(celery_app, n) for n in names)
    argv = ["worker", "-Q", queue_names, "-c", str(concurrency), "--pool", "prefork", "-l", "INFO",
            "--without-gossip", "--without-mingle"]
    celery_app.worker_main([*argv, "-B"] if beat else argv)


def beat() -> None:
    """Run the scheduler of the periodic reconcile alone (Celery beat): exactly one per deployment.

    The alternative to ``mfpo worker --beat`` where workers scale (to zero, too) and the schedule must not.
    """
    from worker.app import celery_app

    celery_app.start(["beat", "-l", "INFO"])
