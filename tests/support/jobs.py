"""Driving the platform library in-process: a task sender that records, and a loop that runs what it recorded.

The Celery tasks (``worker/tasks.py``) are thin shells over ``execute_stage`` / ``finalize_job``;
:func:`drain` calls the same functions, so library tests run the real distributed executor
(store, Redis, stage graph) without worker processes. The Celery path itself is tested with real
workers in ``test_worker.py``, ``test_gateway.py`` and ``test_resilience.py``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mfpo.jobs import Dispatcher, JobState, JobStore, PlatformSettings, finalize_job
from mfpo.jobs.dispatch import TASK_DELETE, TASK_FINALIZE, TASK_REBUILD, TASK_STAGE
from mfpo.jobs.execute import execute_stage
from mfpo.jobs.recovery import reconcile_job
from mfpo.pipeline.resources import build_resources


@dataclass
class RecordingSender:
    """Celery's ``send_task`` contract: records (task name, args, queue) instead of sending."""

    sent: deque[tuple[str, tuple[Any, ...], str]] = field(default_factory=deque)
    fail: bool = False

    def send_task(self, name: str, args: Any = None, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker unavailable")
        self.sent.append((name, tuple(args or ()), options.get("queue", "")))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]


def state_of(redis_client: Any, settings: PlatformSettings, job: Any) -> JobState:
    return JobState(redis_client, settings.queue_prefix, job.tenant, job.id)


def drain(sender: RecordingSender, jobs: JobStore, redis_client: Any, settings: PlatformSettings,
          max_tasks: int | None = None, limit: int = 100_000) -> dict[str, int]:
    """Run the recorded tasks in order (and those they send) until none is left, or only the first ``max_tasks``
    (what they send stays recorded); returns counts per task name."""
    dispatcher = Dispatcher(sender, settings.queue_prefix, settings.models_configured)
    ran: dict[str, int] = {}
    for _ in range(limit):
        if not sender.sent or (max_tasks is not None and sum(ran.values()) >= max_tasks):
            return ran
        name, args, _ = sender.sent.popleft()
        ran[name] = ran.get(name, 0) + 1
        job = jobs.get_job(args[0], args[1])
        state = state_of(redis_client, settings, job)
        if name == TASK_STAGE:
            execute_stage(jobs, state, dispatcher, job, args[2], args[3],
                          lambda s, job=job: build_resources(job.options.regions), settings)
        elif name == TASK_FINALIZE:
            finalize_job(jobs, state, job, settings)
        elif name == TASK_REBUILD:
            reconcile_job(jobs, state, dispatcher, job, settings)
        elif name == TASK_DELETE:
            jobs.delete_job(job)
            state.drop()
    raise AssertionError(f"tasks still queued after {limit}")


def settings_from_env(env: dict[str, str]) -> PlatformSettings:
    """The PlatformSettings a gateway or worker started with ``env`` reads (for the test's own library calls)."""
    from mfpo.storage.settings import S3Settings

    values: dict[str, Any] = {
        name: env[f"MFPO_{name.upper()}"] for name in PlatformSettings.model_fields
        if name != "s3" and f"MFPO_{name.upper()}" in env
    }
    values["s3"] = S3Settings.from_environ(env)
    return PlatformSettings.model_validate(values)


def celery_client(settings: PlatformSettings) -> Any:
    """A Celery client (sender) for workers started with the same settings: as the gateway builds its own."""
    from celery import Celery

    app = Celery("mfpo-test-client")
    app.conf.update(settings.celery_config())
    return app


def submit_rows(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: Any, settings: PlatformSettings,
                rows: list[dict]) -> Any:
    """What POST .../items does with native rows (images as data: URIs): the IntakeResult."""
    from mfpo.jobs import IntakeLimits, ItemRejected, Submission
    from mfpo.jobs.intake import read_image_reference, validate_item

    with Submission(jobs, state, dispatcher, job, settings) as submission:
        for index, raw in enumerate(rows):
            try:
                item = validate_item(raw, IntakeLimits())
                data = read_image_reference(jobs, job, item.image)
            except ItemRejected as exc:
                submission.reject(index, str(exc))
                continue
            submission.add(index, item, data)
        return submission.finish()
