"""``mfpo worker``: a Celery worker on the cpu and/or gpu queues."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues: cpu, gpu or cpu,gpu.")] = "cpu",
    concurrency: Annotated[int, typer.Option(help="Worker processes (0: one per core; gpu: one per GPU).")] = 0,
    gpus: Annotated[int, typer.Option(help="GPUs of this worker: one pool process per GPU, each on its own.")] = 0,
    beat: Annotated[bool, typer.Option(help="Also run the periodic reconcile (exactly one worker should).")] = False,
) -> None:
    """Run a worker (settings from MFPO_* environment variables). GPU queues run one task at a time per GPU."""
    import os

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - {"cpu", "gpu"})
    if not names or unknown:
        raise typer.BadParameter(f"unknown queue(s) {unknown or names}; use cpu, gpu or cpu,gpu", param_hint="--queues")
    if gpus < 0:
        raise typer.BadParameter("give 0 (no pinning) or the number of GPUs", param_hint="--gpus")
    if gpus and concurrency not in (0, gpus):
        raise typer.BadParameter(f"--gpus {gpus} runs {gpus} processes, one per GPU", param_hint="--concurrency")
    if concurrency <= 0:
        concurrency = gpus or (1 if "gpu" in names else (os.cpu_count() or 1))
    from worker.gpus import GPUS_ENV

    os.environ[GPUS_ENV] = str(gpus)  # read by each pool process (worker/gpus.py) to take its own GPU
    from worker.app import celery_app, queue_name

    if "cpu" in names:  # cpu workers also take the control tasks (finalize, reconcile...), polled in turn
        names = ["control", *names]
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
