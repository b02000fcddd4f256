"""Jobs in the object store: the platform's system of record.

Layout under ``tenants/{tenant}/jobs/{job}/``:

===========================  ============================================================
``job.json``                 :class:`~mfpo.jobs.records.JobRecord`
``chunks/{chunk}.json``      the chunk's items (:class:`~mfpo.stages.chunk.Chunk`), written at
                             intake after its images and before its first task is queued
``chunks/{chunk}.zip``       the chunk's original image bytes (:mod:`mfpo.stages.blob`)
``work/{chunk}/...``         stage outputs (``keywords.json``, ``regions.npz``)
``outcomes/{chunk}.jsonl``   one outcome per item (written last by the perturb stage)
``out/...``                  per-item files in the layout of ``mfpo generate`` (images/, rejected/,
                             masks/), and after finalize ``dataset.jsonl`` + ``dataset.parquet``:
                             ``s3://bucket/.../out`` is a complete dataset for the trainer
``dataset/...``              ``dataset.parquet``, ``failures.jsonl``, ``stats.json`` and, last,
                             ``dataset.jsonl`` (the manifest: its presence means finished)
``unregistered/{chunk}``     a chunk stored while Redis could not record it (reconcile takes it)
===========================  ============================================================

Indexes (a few keys per job, never per item): ``index/active/{tenant}/{job}`` for every job not
finalized yet (the periodic reconcile walks these) and ``index/jobs/{tenant}/{created}-{job}``
(listing a tenant's jobs, newest last, paginated).

``{chunk}`` starts with the zero-padded chunk number (:func:`chunk_key`), so a LIST of ``chunks/`` or
``outcomes/`` (done only by recovery and finalize, never per item or per request) comes back in
submission order.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from mfpo.ids import check_safe_id
from mfpo.images import ImageLimits
from mfpo.jobs.records import JobRecord, utc_now
from mfpo.pipeline.config import GenerateConfig
from mfpo.stages.artifacts import Outcome, decode_outcomes
from mfpo.stages.io import StoreChunkIO, artifact_key
from mfpo.storage.base import ObjectNotFound, ObjectStore
from mfpo.storage.prefixed import PrefixedStore

ACTIVE = "index/active"
JOBS_INDEX = "index/jobs"
CHUNK_DIGITS = 8


class JobNotFound(LookupError):
    """No such job for this tenant (also when it belongs to another tenant)."""


def chunk_key(number: int, writer: str) -> str:
    """The key of chunk ``number`` written by ``writer`` (a submission lease): the zero-padded number first,
    so keys sort in submission order; the writer's tag keeps two chunks that got the same number (a Redis
    that lost its counter mid-submission) from overwriting each other."""
    return f"{number:0{CHUNK_DIGITS}d}-{writer[:8]}"


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

    def artifact(self, chunk: str, name: str) -> str:
        return artifact_key(self.root, chunk, name)  # type: ignore[arg-type]

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

    @property
    def stats(self) -> str:
        return f"{self.dataset}/stats.json"

    @property
    def active(self) -> str:
        return f"{ACTIVE}/{self.tenant}/{self.job_id}"

    def unregistered(self, chunk: str) -> str:
        return f"{self.root}/unregistered/{chunk}"


def uploads_prefix(tenant: str) -> str:
    """Store prefix of a tenant's uploaded objects (``store://uploads/NAME`` resolves under it)."""
    return f"tenants/{check_safe_id(tenant)}/uploads/"


class JobStore:
    """Jobs and their chunks in an object store (layout in the module docstring)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(self, tenant: str, name: str, options: GenerateConfig) -> JobRecord:
        job = JobRecord(id=secrets.token_hex(8), tenant=check_safe_id(tenant), name=name, options=options)
        keys = JobKeys(job.tenant, job.id)
        self.store.put(keys.active, b"", "text/plain")
        created = job.created_at.strftime("%Y%m%dT%H%M%S%f")
        self.store.put(f"{JOBS_INDEX}/{job.tenant}/{created}-{job.id}", b"", "text/plain")
        self._put_job(job)
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
            self._put_job(job)
        return job

    def cancel_job(self, job: JobRecord) -> JobRecord:
        """Mark the job cancelled (and closed) in its record, and drop it from the active index."""
        if job.cancelled_at is None:
            now = utc_now()
            job = job.model_copy(update={"cancelled_at": now, "closed_at": job.closed_at or now})
            self._put_job(job)
        self.store.delete(JobKeys(job.tenant, job.id).active)
        return job

    def list_jobs(self, tenant: str, limit: int, after: str | None = None) -> tuple[list[JobRecord], str | None]:
        """Up to ``limit`` of the tenant's jobs, oldest first, after the cursor ``after``; and the next cursor."""
        prefix = f"{JOBS_INDEX}/{check_safe_id(tenant)}/"
        start = None if after is None else prefix + after
        jobs: list[JobRecord] = []
        cursor: str | None = None
        for key in self.store.list(prefix, start_after=start):
            if len(jobs) == limit:
                return jobs, cursor
            entry = key.removeprefix(prefix)
            with contextlib.suppress(JobNotFound):  # deleted between the index and its record
                jobs.append(self.get_job(tenant, entry.rsplit("-", 1)[-1]))
            cursor = entry
        return jobs, None

    def active_jobs(self) -> Iterator[tuple[str, str]]:
        """(tenant, job id) of every job not finalized yet."""
        for key in self.store.list(f"{ACTIVE}/"):
            tenant, job_id = key.split("/")[-2:]
            yield tenant, job_id

    def mark_finished(self, job: JobRecord) -> None:
        self.store.delete(JobKeys(job.tenant, job.id).active)

    def delete_job(self, job: JobRecord) -> int:
        """Delete every object of the job (and its index entries); returns how many were deleted."""
        keys = JobKeys(job.tenant, job.id)
        count = 0
        for key in self.store.list(f"{keys.root}/"):
            if key != keys.job:
                self.store.delete(key)
                count += 1
        created = job.created_at.strftime("%Y%m%dT%H%M%S%f")
        self.store.delete(f"{JOBS_INDEX}/{job.tenant}/{created}-{job.id}")
        self.store.delete(keys.active)
        self.store.delete(keys.job)  # last: until then the job can be found and deleted again
        return count + 1

    # -- chunks ----------------------------------------------------------------------------------

    def chunk_io(self, job: JobRecord, chunk: str, limits: ImageLimits | None = None,
                 put_threads: int = 4) -> StoreChunkIO:
        """The chunk's artifacts for a stage (see :mod:`mfpo.stages.io`)."""
        keys = JobKeys(job.tenant, job.id)
        return StoreChunkIO(self.store, keys.root, chunk, self.outputs(job), limits or job.options.limits,
                            put_threads=put_threads)

    def stored_chunks(self, job: JobRecord) -> list[str]:
        """Keys of every stored chunk, in submission order (recovery and finalize only: one LIST of the job)."""
        prefix = f"{JobKeys(job.tenant, job.id).root}/chunks/"
        return [k.removeprefix(prefix).removesuffix(".json") for k in self.store.list(prefix) if k.endswith(".json")]

    def finished_chunks(self, job: JobRecord) -> list[str]:
        """Keys of every chunk with outcomes (recovery only)."""
        prefix = f"{JobKeys(job.tenant, job.id).root}/outcomes/"
        return [k.removeprefix(prefix).removesuffix(".jsonl") for k in self.store.list(prefix)]

    def outcomes(self, job: JobRecord, chunk: str) -> list[Outcome]:
        """The chunk's outcomes; :class:`~mfpo.storage.base.ObjectNotFound` while it is not finished."""
        return list(decode_outcomes(self.store.get(JobKeys(job.tenant, job.id).artifact(chunk, "outcomes"))))

    def outcome(self, job: JobRecord, chunk: str, item_id: str) -> Outcome | None:
        """One item's outcome (None while its chunk is not finished)."""
        try:
            return next((o for o in self.outcomes(job, chunk) if o.id == item_id), None)
        except ObjectNotFound:
            return None

    def unregistered_chunks(self, job: JobRecord) -> list[str]:
        prefix = f"{JobKeys(job.tenant, job.id).root}/unregistered/"
        return [k.removeprefix(prefix) for k in self.store.list(prefix)]

    # -- outputs ---------------------------------------------------------------------------------

    def dataset_ready(self, job: JobRecord) -> bool:
        """True once the job's dataset is written (every item has an outcome and the job is closed)."""
        return self.store.exists(JobKeys(job.tenant, job.id).manifest)

    def outputs(self, job: JobRecord) -> PrefixedStore:
        """The job's output store, in the layout of ``mfpo generate``."""
        return PrefixedStore(self.store, JobKeys(job.tenant, job.id).out)

    def _put_job(self, job: JobRecord) -> None:
        self.store.put(JobKeys(job.tenant, job.id).job, job.model_dump_json().encode("utf-8"), "application/json")
