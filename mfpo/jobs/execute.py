"""The distributed executor's step: one stage on one chunk, then the next stage queued (a task body).

:func:`execute_stage` is all a Celery task does (``worker/tasks.py`` is a shell around it):

1. mark the chunk ``running`` at the stage (heartbeat refreshed in the background while it runs);
2. :func:`~mfpo.stages.runner.run_stage` - the same function the embedded runner calls - on the
   chunk's artifacts in the store; a stage already done is skipped (redelivered task);
3. queue the next stage, or, after the last, count the chunk's outcomes in the job state; the
   completion that finishes a closed job claims finalize (exactly once) and queues it.

A missing input (an intermediate output the store lost) queues the stage that produces it; lost
Redis state is rebuilt from the store first (:func:`~mfpo.jobs.recovery.ensure_state`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mfpo.jobs.dispatch import Dispatcher
from mfpo.jobs.records import JobRecord
from mfpo.jobs.recovery import ensure_state, redispatch, register_stored_chunk
from mfpo.jobs.settings import PlatformSettings
from mfpo.jobs.state import JobState, StateLost
from mfpo.jobs.store import JobKeys, JobStore
from mfpo.pipeline.resources import StageResources
from mfpo.stages.artifacts import decode_outcomes
from mfpo.stages.graph import STAGES, Stage, first_stage, next_stage, producer
from mfpo.stages.io import MissingInput, StoreChunkIO
from mfpo.stages.runner import StageRun, give_up, run_stage

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(beat: Callable[[], None], interval_s: float) -> Iterator[None]:
    """Call ``beat()`` every ``interval_s`` in a background thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                beat()
            except Exception:  # Redis away for a moment: the next beat tries again
                log.warning("heartbeat failed", exc_info=True)

    thread = threading.Thread(target=loop, daemon=True, name="mfpo-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _start(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord, chunk: str, stage: Stage) -> int:
    try:
        size = state.start(chunk, stage.name, first_stage().name)
    except StateLost:
        ensure_state(jobs, state, job)
        size = state.start(chunk, stage.name, first_stage().name)
    if size == -2:  # Redis does not know the chunk: stored while Redis was down, or from before a rebuild
        if not jobs.store.exists(JobKeys(job.tenant, job.id).artifact(chunk, "items")):
            log.warning("job %s: chunk %s is not in the store; dropping the task", job.id, chunk)
            return 0
        register_stored_chunk(jobs, state, dispatcher, job, chunk)
        size = state.start(chunk, stage.name, first_stage().name)
    return max(size, 0)


def execute_stage(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord, chunk: str,
                  stage_name: str, resources: Callable[[Stage], StageResources],
                  settings: PlatformSettings) -> StageRun | None:
    """Run ``stage_name`` on ``chunk`` of ``job`` and move the chunk on (steps in the module docstring).

    Returns what the stage did (None when there was nothing to do). Transient store/Redis errors
    propagate: the task is retried and, the stage being idempotent, redoes at most this stage.
    """
    stage = STAGES[stage_name]
    size = _start(jobs, state, dispatcher, job, chunk, stage)
    if size == 0:
        return None  # finished already (a duplicate task) or gone
    io = jobs.chunk_io(job, chunk, put_threads=settings.put_threads)
    attempt = state.attempt(chunk, stage.name)
    try:
        run = _run_counted(jobs, state, dispatcher, job, chunk, stage, io, attempt, resources, settings)
    except Exception:
        state.uncount_attempt(chunk, stage.name)  # not a death: a transient error, retried
        raise
    if run is None:
        return None
    state.count_execution(stage.name, size, run.executed)
    following = next_stage(stage)
    if following is not None:
        redispatch(state, dispatcher, job, chunk, following)
        return run
    outcomes = list(decode_outcomes(io.read("outcomes")))
    done = sum(o.status == "done" for o in outcomes)
    if state.complete(chunk, done, len(outcomes) - done):
        dispatcher.finalize(job)
    return run


def _run_counted(jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord, chunk: str, stage: Stage,
                 io: StoreChunkIO, attempt: int, resources: Callable[[Stage], StageResources],
                 settings: PlatformSettings) -> StageRun | None:
    """Steps 1-2 of a start counted as ``attempt``: give up past ``stage_max_attempts`` starts (the earlier ones'
    processes died), else run the stage; None when there is nothing more to do for this task."""
    if attempt > settings.stage_max_attempts and not io.exists(stage.commit):
        reason = (f"{stage.name} stopped {attempt - 1} times on this chunk (its process was killed: time limit or "
                  "memory); given up")
        log.error("job %s chunk %s: %s", job.id, chunk, reason)
        outcomes = give_up(io, stage, reason)
        done = sum(o.status == "done" for o in outcomes)
        if state.complete(chunk, done, len(outcomes) - done):
            dispatcher.finalize(job)
        return None
    try:
        with heartbeat(lambda: state.heartbeat(chunk, stage.name), settings.heartbeat_interval_s):
            config = settings.stage_config(job.options, gpu=stage.device == "gpu")  # with the deployment's models
            run = run_stage(stage, io, config, resources(stage), item_time_limit_s=settings.item_time_limit_s)
    except MissingInput as exc:
        source = producer(exc.artifact)
        if source is None:
            log.error("job %s chunk %s: its %s are gone from the store; dropping the task", job.id, chunk,
                      exc.artifact)
            return None
        log.warning("job %s chunk %s: %s missing; running %s again", job.id, chunk, exc.artifact, source.name)
        redispatch(state, dispatcher, job, chunk, source)
        return None
    return run
