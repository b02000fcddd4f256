"""The Celery application: Redis broker, late acks, one task at a time per GPU process.

The object store is the system of record and Redis only transport: tasks carry ids
(tenant, job, item), never payloads; results are written to the store, so there is no
result backend. ``acks_late`` + ``reject_on_worker_lost`` put a task back on the queue
when its worker dies; the Redis visibility timeout (a setting, longer than the longest
task) redelivers a task whose worker vanished without a word.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from celery import Celery

import worker.gpus  # noqa: F401  (connects each pool process's GPU pinning to worker_process_init)
from services.settings import Settings, get_settings
from worker.client import CPU_QUEUE


def beat_schedule_file(settings: Settings) -> Path:
    """Where celery beat keeps its schedule: the setting, else the temp folder (the working directory of a
    container with a read-only root filesystem is not writable)."""
    if settings.beat_schedule_file is not None:
        return settings.beat_schedule_file
    return Path(tempfile.gettempdir()) / f"mfpo-celerybeat-{settings.queue_prefix or 'default'}"


def create_celery(settings: Settings) -> Celery:
    app = Celery("mfpo", broker=settings.broker_url(), include=["worker.tasks"])
    cpu = f"{settings.queue_prefix}{CPU_QUEUE}"
    app.conf.update(
        mfpo_queue_prefix=settings.queue_prefix,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=cpu,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_track_started=False,
        beat_schedule_filename=str(beat_schedule_file(settings)),
        beat_schedule={
            "reconcile-unfinished-jobs": {
                "task": "mfpo.reconcile_unfinished",
                "schedule": float(settings.reconcile_interval_s),
                "options": {"queue": cpu},
            }
        },
    )
    return app


celery_app = create_celery(get_settings())
