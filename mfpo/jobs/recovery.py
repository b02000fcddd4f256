"""Finding lost work and lost state: the periodic reconcile, and rebuilding a job's state from the store.

The store is the system of record; Redis holds derived state and the queues. Whatever Redis loses
is found again here, without any per-item or per-request LIST:

* **Overdue work.** A chunk whose stage is ``running`` with a heartbeat older than
  ``overdue_after_s`` (its worker died), ``undispatched`` (a send that failed), or ``queued`` for longer
  than ``queued_timeout_s`` (a lost queue entry) is dispatched again. Queued work is *not* re-sent
  before that: at scale long queues are normal, and a fault-free run executes each stage once.
* **Unregistered chunks.** A chunk stored while Redis was down is marked ``unregistered/`` in the
  store; reconcile registers and queues it.
* **Finalize.** A job whose last chunk finished unnoticed, or whose finalize stopped sending
  heartbeats (its worker died), gets finalize dispatched again (it is idempotent).
* **Lost state** (Redis restarted empty, FLUSHALL): :func:`rebuild_state` rebuilds the job's state
  from its stored chunks and outcomes (one LIST of each, GETs in a bounded pool) and every unfinished
  chunk is dispatched from its first stage; stages whose outputs exist skip (idempotent).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mfpo.jobs.dispatch import Dispatcher
from mfpo.jobs.intake import queue_chunk
from mfpo.jobs.records import JobRecord
from mfpo.jobs.settings import PlatformSettings
from mfpo.jobs.state import ChunkState, JobState, StateLost, StateSnapshot
from mfpo.jobs.store import CHUNK_DIGITS, JobKeys, JobStore
from mfpo.stages.artifacts import decode_outcomes
from mfpo.stages.chunk import Chunk
from mfpo.stages.graph import STAGES, Stage

log = logging.getLogger(__name__)

REBUILD_THREADS = 8


def register_stored_chunk(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord, chunk: str) -> None:
    """Register a chunk the store holds (idempotent) and queue it when Redis did not know it."""
    keys = JobKeys(job.tenant, job.id)
    record = Chunk.model_validate_json(jobs.store.get(keys.artifact(chunk, "items")))
    if state.register_chunk(chunk, [(i.id, i.stem) for i in record.items], status="undispatched"):
        queue_chunk(state, dispatcher, job, chunk)
    jobs.store.delete(keys.unregistered(chunk))


def snapshot_from_store(jobs: JobStore, job: JobRecord) -> StateSnapshot:
    """The job's state as the store records it: every stored chunk, finished ones with their counts."""
    stored = jobs.stored_chunks(job)
    finished = set(jobs.finished_chunks(job))
    keys = JobKeys(job.tenant, job.id)

    def load(chunk: str) -> tuple[Chunk, tuple[int, int] | None]:
        record = Chunk.model_validate_json(jobs.store.get(keys.artifact(chunk, "items")))
        if chunk not in finished:
            return record, None
        outcomes = list(decode_outcomes(jobs.store.get(keys.artifact(chunk, "outcomes"))))
        done = sum(o.status == "done" for o in outcomes)
        return record, (done, len(outcomes) - done)

    now = time.time()
    chunks: list[ChunkState] = []
    ids: list[tuple[str, str]] = []
    with ThreadPoolExecutor(REBUILD_THREADS) as pool:
        for chunk, (record, counts) in zip(stored, pool.map(load, stored), strict=True):
            size = len(record.items)
            if counts is None:
                chunks.append(ChunkState(chunk, STAGES["keywords"].name, "undispatched", 0.0, size))
            else:
                chunks.append(ChunkState(chunk, "perturb", "done", now, size, counts[0], counts[1]))
            ids.extend((item.id, f"c|{chunk}|{item.stem}") for item in record.items)
    numbers = [int(c[:CHUNK_DIGITS]) for c in stored]
    return StateSnapshot(chunks=chunks, ids=ids, closed=job.closed_at is not None,
                         finalized=jobs.dataset_ready(job), chunk_seq=max(numbers, default=-1) + 1,
                         cancelled=job.cancelled_at is not None)


def rebuild_state(jobs: JobStore, state: JobState, job: JobRecord, lock_s: float = 600.0) -> bool:
    """Rebuild a lost state from the store; False when it exists or another process is rebuilding it."""
    if state.exists() or not state.lock_rebuild(lock_s):
        return False
    try:
        started = time.perf_counter()
        snapshot = snapshot_from_store(jobs, job)
        installed = state.install(snapshot)
        log.warning("job %s/%s: state rebuilt from the store (%d chunks, %d items) in %.1f s", job.tenant, job.id,
                    len(snapshot.chunks), len(snapshot.ids), time.perf_counter() - started)
        return installed
    finally:
        state.unlock_rebuild()


def ensure_state(jobs: JobStore, state: JobState, job: JobRecord, wait_s: float = 60.0) -> None:
    """Make sure the job's state exists: rebuild it, or wait (up to ``wait_s``) for whoever is rebuilding it.

    Raises :class:`~mfpo.jobs.state.StateLost` when it is still missing after that (retry later)."""
    deadline = time.monotonic() + wait_s
    while not state.exists():
        if rebuild_state(jobs, state, job):
            return
        if time.monotonic() > deadline:
            raise StateLost(f"job {job.id}: state still being rebuilt after {wait_s:.0f} s")
        time.sleep(0.2)


def redispatch(state: JobState, dispatcher: Dispatcher, job: JobRecord, chunk: str, stage: Stage) -> None:
    """Send ``stage`` of ``chunk`` again (undispatched until the send succeeds, then queued)."""
    state.set_stage(chunk, stage.name, "undispatched")
    dispatcher.stage(job, chunk, stage)
    state.set_stage(chunk, stage.name, "queued", expect="undispatched")


@dataclass
class ReconcileReport:
    """What one reconcile of a job did."""

    rebuilt: bool = False
    registered: int = 0
    redispatched: int = 0
    finalize: bool = False


def reconcile_job(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord,
                  settings: PlatformSettings, now: float | None = None) -> ReconcileReport:
    """One pass over a job's derived state (rules in the module docstring)."""
    report = ReconcileReport()
    if job.cancelled_at is not None:  # nothing more to do for it: it leaves the active index
        jobs.store.delete(JobKeys(job.tenant, job.id).active)
        return report
    if not state.exists():
        report.rebuilt = rebuild_state(jobs, state, job)
        if not state.exists():
            return report  # someone else is rebuilding it
    for chunk in jobs.unregistered_chunks(job):
        register_stored_chunk(jobs, state, dispatcher, job, chunk)
        report.registered += 1
    now = time.time() if now is None else now
    for cs in state.chunk_states():
        overdue = (
            cs.status == "undispatched"
            or (cs.status == "running" and now - cs.at > settings.overdue_after_s)
            or (cs.status == "queued" and now - cs.at > settings.queued_timeout_s)
        )
        if overdue and cs.status != "done":
            log.warning("job %s chunk %s: %s %s since %.0f s; dispatching it again", job.id, cs.chunk, cs.stage,
                        cs.status, now - cs.at)
            redispatch(state, dispatcher, job, cs.chunk, STAGES[cs.stage])
            report.redispatched += 1
    if state.finalize_due(settings.overdue_after_s):
        dispatcher.finalize(job)
        report.finalize = True
    return report
