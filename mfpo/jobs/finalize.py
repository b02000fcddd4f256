"""The finished dataset of a job, written streaming once its last chunk is done.

The chunks' outcome files are read in submission order (a bounded read-ahead of
``finalize_prefetch`` files) and streamed through :class:`~mfpo.pipeline.dataset.DatasetWriter`
into temporary files (Parquet in row groups of ``dataset_row_group`` rows): memory stays bounded
whatever the job's size. The files then go to the store (multipart uploads, server-side copies):
``out/dataset.{jsonl,parquet}`` (so ``.../out`` is a complete dataset for the trainer) and
``dataset/{failures.jsonl, gallery-index.bin, stats.json, dataset.parquet}``, and ``dataset/dataset.jsonl`` last:
its presence means the job is finished. Finalize is idempotent: a second run rewrites the same files.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from mfpo.jobs.records import JobRecord
from mfpo.jobs.settings import PlatformSettings
from mfpo.jobs.state import JobState
from mfpo.jobs.store import JobKeys, JobStore
from mfpo.pipeline.dataset import DatasetStats, DatasetWriter
from mfpo.pipeline.dataset_index import INDEX_FILE
from mfpo.stages.artifacts import Outcome, decode_outcomes
from mfpo.storage.base import ObjectNotFound

log = logging.getLogger(__name__)

GALLERY_PAGE_SIZE = 100
"""Records per page of the dataset's page index (``stats.json``), the gallery's page size."""


class JobNotFinished(RuntimeError):
    """A chunk of the job has no outcomes yet (it was reopened and queued again)."""


def ordered_outcomes(jobs: JobStore, job: JobRecord, chunks: list[str], prefetch: int) -> Iterator[
    tuple[str, list[Outcome] | None]
]:
    """(chunk, its outcomes or None when missing), in order, reading ``prefetch`` files ahead."""
    keys = JobKeys(job.tenant, job.id)

    def load(chunk: str) -> list[Outcome] | None:
        try:
            return list(decode_outcomes(jobs.store.get(keys.artifact(chunk, "outcomes"))))
        except ObjectNotFound:
            return None

    with ThreadPoolExecutor(prefetch, thread_name_prefix="mfpo-finalize") as pool:
        window: deque[tuple[str, Future[list[Outcome] | None]]] = deque()
        todo = iter(chunks)
        for chunk in todo:
            window.append((chunk, pool.submit(load, chunk)))
            if len(window) >= prefetch:
                break
        while window:
            chunk, future = window.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                window.append((nxt, pool.submit(load, nxt)))
            yield chunk, future.result()


def write_job_dataset(jobs: JobStore, state: JobState | None, job: JobRecord,
                      settings: PlatformSettings) -> DatasetStats:
    """Write the job's dataset (streaming; see the module docstring) and return its stats.

    Raises :class:`JobNotFinished` when a chunk has no outcomes (it is reopened in ``state`` and queued by
    the next reconcile).
    """
    started = time.perf_counter()
    keys = JobKeys(job.tenant, job.id)
    chunks = jobs.stored_chunks(job)
    with tempfile.TemporaryDirectory(prefix="mfpo-finalize-") as tmp:
        writer = DatasetWriter(Path(tmp), row_group_size=settings.dataset_row_group, page_size=GALLERY_PAGE_SIZE)
        try:
            for n, (chunk, outcomes) in enumerate(ordered_outcomes(jobs, job, chunks, settings.finalize_prefetch)):
                if outcomes is None:
                    if state is not None:
                        state.reopen(chunk)
                    raise JobNotFinished(f"job {job.id}: chunk {chunk} has no outcomes")
                for outcome in outcomes:
                    if outcome.record is not None:
                        writer.add_record(outcome.record)
                    elif outcome.failure is not None:
                        writer.add_failure(outcome.failure)
                if state is not None and n % 64 == 63:
                    state.finalize_heartbeat()
        except BaseException:
            writer.abort()
            raise
        stats = writer.close()
        folder = Path(tmp)
        outputs = jobs.outputs(job)
        outputs.put_file("dataset.parquet", folder / "dataset.parquet", "application/vnd.apache.parquet")
        outputs.put_file("dataset.jsonl", folder / "dataset.jsonl", "application/x-ndjson")
        jobs.store.put_file(f"{keys.dataset}/failures.jsonl", folder / "failures.jsonl", "application/x-ndjson")
        jobs.store.put_file(f"{keys.dataset}/{INDEX_FILE}", folder / INDEX_FILE, "application/octet-stream")
        jobs.store.put_file(keys.stats, folder / "stats.json", "application/json")
        jobs.store.copy(f"{keys.out}/dataset.parquet", f"{keys.dataset}/dataset.parquet")
        jobs.store.copy(f"{keys.out}/dataset.jsonl", keys.manifest)  # last: the job is finished
    log.info("job %s/%s finalized: %d records, %d failures, %d chunks in %.1f s", job.tenant, job.id, stats.records,
             stats.failures, len(chunks), time.perf_counter() - started)
    return stats


def finalize_job(jobs: JobStore, state: JobState, job: JobRecord, settings: PlatformSettings) -> DatasetStats | None:
    """Finalize a closed job whose chunks are all done (idempotent); then mark it done and inactive."""
    if job.closed_at is None:
        return None
    stats = None
    if not jobs.dataset_ready(job):
        from mfpo.jobs.execute import heartbeat

        with heartbeat(state.finalize_heartbeat, settings.heartbeat_interval_s):
            stats = write_job_dataset(jobs, state, job, settings)
    state.finalize_done()
    jobs.mark_finished(job)
    return stats
