"""The distributed platform's library: jobs in the object store, their state in Redis, the stage graph's
distributed executor (no web or queue code here: the shells in ``services/`` and ``worker/`` call it).

=====================  ===================================================================
module                 what it is
=====================  ===================================================================
``settings``           :class:`PlatformSettings` (``MFPO_*``), parsed once per process
``records``, ``store`` the job record and the store layout (system of record)
``state``              a job's derived state in Redis: claims, chunk registry, counters, O(1)
``intake``             one submission path (REST batch and upload): chunks, claims, writes
``dispatch``           task names and queues; who sends them
``execute``            one stage on one chunk, then the next queued (a task body)
``finalize``           the dataset, streamed, once per job
``recovery``           reconcile (overdue work, unregistered chunks) and state rebuild
=====================  ===================================================================
"""

from mfpo.jobs.dispatch import Dispatcher
from mfpo.jobs.finalize import JobNotFinished, finalize_job, write_job_dataset
from mfpo.jobs.intake import IntakeLimits, IntakeResult, ItemRejected, Submission, SubmissionInterrupted
from mfpo.jobs.records import JobRecord
from mfpo.jobs.settings import PlatformSettings, get_platform_settings
from mfpo.jobs.state import JobClosing, JobState, StateLost
from mfpo.jobs.store import JobKeys, JobNotFound, JobStore, uploads_prefix

__all__ = [
    "Dispatcher",
    "IntakeLimits",
    "IntakeResult",
    "ItemRejected",
    "JobClosing",
    "JobKeys",
    "JobNotFinished",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobStore",
    "PlatformSettings",
    "StateLost",
    "Submission",
    "SubmissionInterrupted",
    "finalize_job",
    "get_platform_settings",
    "uploads_prefix",
    "write_job_dataset",
]
