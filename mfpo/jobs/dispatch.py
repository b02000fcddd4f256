"""Sending work to the workers: task names, queues, and who sends them.

Tasks carry ids (tenant, job, chunk, stage), never payloads. The shells (gateway, workers, beat)
each build their own Celery app from :meth:`~mfpo.jobs.settings.PlatformSettings.celery_config`
and hand it here as the ``sender`` (anything with Celery's ``send_task``): neither shell imports
the other, and this library imports no queue code.

Queues: ``{prefix}cpu`` for every stage but the models' (``{prefix}gpu``: regions when the deployment
has grounding + SAM and the job's region mode uses them, negatives when the job asks for adavip or
mbpo); ``{prefix}control`` for finalize, reconcile, rebuild and delete.
"""

from __future__ import annotations

from typing import Any, Protocol

from mfpo.jobs.records import JobRecord
from mfpo.stages.graph import Stage

TASK_STAGE = "mfpo.stage"
TASK_FINALIZE = "mfpo.finalize"
TASK_RECONCILE = "mfpo.reconcile"
TASK_REBUILD = "mfpo.rebuild"
TASK_DELETE = "mfpo.delete"
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
CONTROL_QUEUE = "control"
"""Finalize, reconcile, rebuild and delete: every cpu worker also consumes it, and Celery's Redis transport
polls a worker's queues in turn, so a job's finalize never waits behind another job's backlog of stages."""


class TaskSender(Protocol):
    def send_task(self, name: str, args: Any = None, **options: Any) -> Any: ...


def uses_models(job: JobRecord, models_configured: bool, stage: str = "regions") -> bool:
    """Whether the job's ``stage`` needs the deployment's models: regions the grounding + SAM models (when the
    deployment has them), negatives the constructors' (adavip, mbpo; a job asks for them only where the
    deployment has them, the gateway checks)."""
    if stage == "negatives":
        from mfpo.stages.negatives import uses_models as negatives_use_models

        return negatives_use_models(job.options.negatives)
    return models_configured and job.options.regions.mode in ("grounded", "auto")


class Dispatcher:
    """Queues stage, finalize and rebuild tasks for the workers."""

    def __init__(self, sender: TaskSender, queue_prefix: str, models_configured: bool) -> None:
        self.sender = sender
        self.queue_prefix = queue_prefix
        self.models_configured = models_configured

    def queue(self, kind: str) -> str:
        return f"{self.queue_prefix}{kind}"

    def queue_for(self, stage: Stage, job: JobRecord) -> str:
        gpu = stage.device == "gpu" and uses_models(job, self.models_configured, stage.name)
        return self.queue(GPU_QUEUE if gpu else CPU_QUEUE)

    def stage(self, job: JobRecord, chunk: str, stage: Stage) -> None:
        self.sender.send_task(TASK_STAGE, (job.tenant, job.id, chunk, stage.name), queue=self.queue_for(stage, job))

    def finalize(self, job: JobRecord) -> None:
        self.sender.send_task(TASK_FINALIZE, (job.tenant, job.id), queue=self.queue(CONTROL_QUEUE))

    def rebuild(self, tenant: str, job_id: str) -> None:
        self.sender.send_task(TASK_REBUILD, (tenant, job_id), queue=self.queue(CONTROL_QUEUE))

    def delete(self, tenant: str, job_id: str) -> None:
        self.sender.send_task(TASK_DELETE, (tenant, job_id), queue=self.queue(CONTROL_QUEUE))
