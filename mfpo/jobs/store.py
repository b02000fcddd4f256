"""Jobs, items and outcomes in an object store: the platform's system of record.

Layout under ``tenants/{tenant}/jobs/{job}/``:

=========================  ===============================================================
``job.json``               :class:`~mfpo.jobs.records.JobRecord`
``items/{item}.json``      :class:`~mfpo.jobs.records.StoredItem` (written before queueing)
``inputs/{item}{ext}``     the original image bytes
``outcomes/{item}.json``   :class:`~mfpo.jobs.records.ItemOutcome` (written after the outputs)
``failed/{item}``          an empty marker per failed item (counts need no GET per item)
``work/{item}/...``        intermediate stage outputs (:mod:`mfpo.jobs.stages`)
``out/...``                the outputs, in the layout of ``mfpo generate`` (images/, rejected/,
                           masks/, records/) so dataset and exporters read it unchanged
``dataset/...``            ``dataset.jsonl`` + ``dataset.parquet`` once the job is finished
=========================  ===============================================================

``index/unfinished/{tenant}/{job}`` marks a closed job whose dataset is not written yet
(the periodic reconcile lists it instead of every object).

Every key is derived from the tenant, job and item id, so a re-delivered task writes the
same keys (idempotent). Items without an outcome are the ones to (re)queue.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from mfpo.ids import check_safe_id
from mfpo.jobs.records import ItemOutcome, JobRecord, StoredItem, utc_now
from mfpo.pipeline.config import GenerateConfig
from mfpo.storage.base import ObjectNotFound, ObjectStore
from mfpo.storage.prefixed import PrefixedStore

UNFINISHED = "index/unfinished"


class JobNotFound(LookupError):
    """No such job for this tenant (also when it belongs to another tenant)."""


class JobClosed(ValueError):
    """The job was closed: it accepts no more items."""


class DuplicateItem(ValueError):
    """An item with this id is already in the job."""


@dataclass(frozen=True)
class JobKeys:
    """Keys of one job's objects."""

    tenant: str
    job_id: str

    @property
    def root(self) -> str:
        return f"tenants/{self.tenant}/jobs/{self.job_id}"

    @property
    def job(self) -> str:
        return f"{self.root}/job.json"

    def item(self, item_id: str) -> str:
        return f"{self.root}/items/{item_id}.json"

    def input(self, item_id: str, ext: str) -> str:
        return f"{self.root}/inputs/{item_id}{ext}"

    def outcome(self, item_id: str) -> str:
        return f"{self.root}/outcomes/{item_id}.json"

    @property
    def out(self) -> str:
        return f"{self.root}/out"

    @property
    def dataset(self) -> str:
        return f"{self.root}/dataset"

    @property
    def manifest(self) -> str:
        """``dataset/dataset.jsonl``: written last, so its presence means the job is finished."""
        return f"{self.dataset}/dataset.jsonl"


def _id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".json")


class JobStore:
    """Create jobs, store items before queueing, record outcomes, list what is pending."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # -- jobs ----------------------------------------------------------------------------

    def create_job(self, tenant: str, name: str, options: GenerateConfig) -> JobRecord:
        job = JobRecord(id=secrets.token_hex(8), tenant=check_safe_id(tenant), name=name, options=options)
        self._put_json(JobKeys(job.tenant, job.id).job, job.model_dump_json())
        return job

    def get_job(self, tenant: str, job_id: str) -> JobRecord:
        """The job, or :class:`JobNotFound` (also for another tenant's job or a malformed id)."""
        try:
            keys = JobKeys(check_safe_id(tenant), check_safe_id(job_id))
            return JobRecord.model_validate_json(self.store.get(keys.job))
        except (ObjectNotFound, ValueError):
            raise JobNotFound(f"job {job_id!r} not found") from None

    def close_job(self, job: JobRecord) -> JobRecord:
        if job.closed_at is None:
            job = job.model_copy(update={"closed_at": utc_now()})
            self.store.put(f"{UNFINISHED}/{job.tenant}/{job.id}", b"", "text/plain")
            self._put_json(JobKeys(job.tenant, job.id).job, job.model_dump_json())
        return job

    def unfinished_jobs(self) -> list[tuple[str, str]]:
        """(tenant, job id) of closed jobs whose dataset is not written yet."""
        out = []
        for key in self.store.list(f"{UNFINISHED}/"):
            tenant, job_id = key.split("/")[-2:]
            out.append((tenant, job_id))
        return out

    def mark_finished(self, job: JobRecord) -> None:
        self.store.delete(f"{UNFINISHED}/{job.tenant}/{job.id}")

    def list_jobs(self, tenant: str) -> Iterator[JobRecord]:
        for key in self.store.list(f"tenants/{check_safe_id(tenant)}/jobs/"):
            if key.endswith("/job.json"):
                yield JobRecord.model_validate_json(self.store.get(key))

    # -- items ---------------------------------------------------------------------------

    def add_item(self, job: JobRecord, stored: StoredItem, image_bytes: bytes, ext: str) -> None:
        """Store the image, then the item (so a stored item always has its image)."""
        if job.closed_at is not None:
            raise JobClosed(f"job {job.id} is closed")
        item_id = stored.item.id
        assert item_id is not None
        keys = JobKeys(job.tenant, job.id)
        if self.store.exists(keys.item(item_id)):
            raise DuplicateItem(f"item {item_id!r} is already in job {job.id}")
        self.store.put(keys.input(item_id, ext), image_bytes, "application/octet-stream")
        self._put_json(keys.item(item_id), stored.model_dump_json())

    def get_item(self, job: JobRecord, item_id: str) -> StoredItem:
        try:
            return StoredItem.model_validate_json(self.store.get(JobKeys(job.tenant, job.id).item(item_id)))
        except (ObjectNotFound, ValueError):
            raise LookupError(f"item {item_id!r} not found in job {job.id}") from None

    def item_ids(self, job: JobRecord) -> list[str]:
        return [_id_of(k) for k in self.store.list(f"{JobKeys(job.tenant, job.id).root}/items/")]

    def image_bytes(self, stored: StoredItem) -> bytes:
        return self.store.get(stored.image_key)

    # -- outcomes ------------------------------------------------------------------------

    def put_outcome(self, job: JobRecord, outcome: ItemOutcome) -> None:
        keys = JobKeys(job.tenant, job.id)
        if outcome.status == "failed":
            self.store.put(f"{keys.root}/failed/{outcome.item_id}", b"", "text/plain")
        self._put_json(keys.outcome(outcome.item_id), outcome.model_dump_json())

    def get_outcome(self, job: JobRecord, item_id: str) -> ItemOutcome | None:
        try:
            return ItemOutcome.model_validate_json(self.store.get(JobKeys(job.tenant, job.id).outcome(item_id)))
        except ObjectNotFound:
            return None

    def outcome_ids(self, job: JobRecord) -> set[str]:
        return {_id_of(k) for k in self.store.list(f"{JobKeys(job.tenant, job.id).root}/outcomes/")}

    def counts(self, job: JobRecord) -> dict[str, int]:
        """submitted / queued / running / done / failed, from three LISTs (no GET per item).

        running: items with a stage output under ``work/`` and no outcome yet.
        """
        root = JobKeys(job.tenant, job.id).root
        submitted = set(self.item_ids(job))
        finished = self.outcome_ids(job)
        failed = {k.rsplit("/", 1)[-1] for k in self.store.list(f"{root}/failed/")}
        started = {k[len(root) + 6 :].split("/", 1)[0] for k in self.store.list(f"{root}/work/")}
        running = (started & submitted) - finished
        return {
            "submitted": len(submitted),
            "queued": len(submitted - finished - running),
            "running": len(running),
            "done": len(finished - failed),
            "failed": len(failed & finished),
        }

    def pending(self, job: JobRecord) -> list[str]:
        """Items with neither a result nor a failure: the ones a reconcile step re-queues."""
        finished = self.outcome_ids(job)
        return [i for i in self.item_ids(job) if i not in finished]

    def dataset_ready(self, job: JobRecord) -> bool:
        """True once the job's dataset is written (every item has an outcome and the job is closed)."""
        return self.store.exists(JobKeys(job.tenant, job.id).manifest)

    def outputs(self, job: JobRecord) -> PrefixedStore:
        """The job's output store, in the layout of ``mfpo generate``."""
        return PrefixedStore(self.store, JobKeys(job.tenant, job.id).out)

    def _put_json(self, key: str, text: str) -> None:
        self.store.put(key, text.encode("utf-8"), "application/json")
