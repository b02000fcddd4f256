"""The Celery application of the workers: Redis broker, late acks, one task at a time per process.

The object store is the system of record and Redis transport plus derived state: tasks carry
ids (tenant, job, chunk, stage), never payloads; results are written to the store, so there is
no result backend. ``acks_late`` + ``reject_on_worker_lost`` put a task back on the queue when its
worker dies; the periodic reconcile (beat) finds work whose worker vanished within
``overdue_after_s``, long before the Redis visibility timeout would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from celery import Celery

import worker.gpus  # noqa: F401  (connects each pool process's GPU pinning to worker_process_init)
from mfpo.jobs.dispatch import CONTROL_QUEUE, TASK_RECONCILE
from mfpo.jobs.settings import PlatformSettings, get_platform_settings


def beat_schedule_file(settings: PlatformSettings) -> Path:
    """Where celery beat keeps its schedule: the setting, else the temp folder (the working directory of a
    container with a read-only root filesystem is not writable)."""
    if settings.beat_schedule_file is not None:
        return settings.beat_schedule_file
    return Path(tempfile.gettempdir()) / f"mfpo-celerybeat-{settings.queue_prefix or 'default'}"


def create_celery(settings: PlatformSettings) -> Celery:
    app = Celery("mfpo", include=["worker.tasks"])
    app.conf.update(settings.celery_config())
    app.conf.update(
        beat_schedule_filename=str(beat_schedule_file(settings)),
        beat_schedule={
            "reconcile-active-jobs": {
                "task": TASK_RECONCILE,
                "schedule": float(settings.reconcile_interval_s),
                "options": {"queue": f"{settings.queue_prefix}{CONTROL_QUEUE}",
                            "expires": settings.reconcile_interval_s},
            }
        },
    )
    return app


def queue_name(app: Celery, kind: str) -> str:
    """The deployment's name of queue ``kind`` (``cpu`` or ``gpu``): ``queue_prefix`` + kind."""
    return f"{app.conf.get('mfpo_queue_prefix', '')}{kind}"


celery_app = create_celery(get_platform_settings())
