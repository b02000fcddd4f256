"""Jobs of the distributed platform over the object store (no web or queue code here).

The gateway stores items (:class:`JobStore`), workers run :func:`run_item`, and the
finished job's dataset is written by :func:`write_job_dataset`.
"""

from mfpo.jobs.dataset import JobNotFinished, collect_dataset, write_job_dataset
from mfpo.jobs.intake import ItemRejected, accept_item, uploads_prefix
from mfpo.jobs.process import run_item
from mfpo.jobs.records import ItemOutcome, JobRecord, StoredItem
from mfpo.jobs.store import DuplicateItem, JobClosed, JobKeys, JobNotFound, JobStore

__all__ = [
    "DuplicateItem",
    "ItemOutcome",
    "ItemRejected",
    "JobClosed",
    "JobKeys",
    "JobNotFinished",
    "JobNotFound",
    "JobRecord",
    "JobStore",
    "StoredItem",
    "accept_item",
    "collect_dataset",
    "run_item",
    "uploads_prefix",
    "write_job_dataset",
]
