"""Sending work to the workers by task name (no task code imported: the gateway stays light).

``enqueue_item`` must only be called once the item is in the store (the store is the
system of record). ``reconcile`` re-queues what has neither a result nor a failure.
"""

from __future__ import annotations

from celery import Celery

from mfpo.jobs.store import JobStore

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"


def queue_name(app: Celery, kind: str) -> str:
    """The deployment's name of queue ``kind`` (``cpu`` or ``gpu``): ``queue_prefix`` + kind."""
    return f"{app.conf.get('mfpo_queue_prefix', '')}{kind}"


def enqueue_item(app: Celery, tenant: str, job_id: str, item_id: str) -> None:
    """Queue an item's first stage (keywords, on the cpu queue)."""
    app.send_task("mfpo.keywords", (tenant, job_id, item_id), queue=queue_name(app, CPU_QUEUE))


def request_finalize(app: Celery, tenant: str, job_id: str) -> None:
    """Ask for the dataset of a closed job to be written once every item has an outcome."""
    app.send_task("mfpo.finalize", (tenant, job_id), queue=queue_name(app, CPU_QUEUE))


def reconcile(app: Celery, jobs: JobStore, tenant: str, job_id: str) -> int:
    """Re-queue every item of the job with neither a result nor a failure; returns how many.

    Run on close and periodically: after a Redis restart or a lost task, this is how the
    store's record of what is unfinished gets back onto the queue. Duplicates are harmless
    (every stage is idempotent).
    """
    job = jobs.get_job(tenant, job_id)
    pending = jobs.pending(job)
    for item_id in pending:
        enqueue_item(app, tenant, job_id, item_id)
    request_finalize(app, tenant, job_id)
    return len(pending)
