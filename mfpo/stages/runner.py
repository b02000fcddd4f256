"""Running one stage on one chunk: the single place for idempotency and failure rules.

* **Idempotent.** A stage whose commit output (``stage.outputs[-1]``) exists is skipped: a
  redelivered or duplicated task, or a resumed run, does no work twice. Every key is derived
  from the chunk, so re-running writes the same objects.
* **Inputs.** A stage reads only the artifacts it declares; one that is missing raises
  :class:`~mfpo.stages.io.MissingInput`, and the executor runs the stage that produces it.
* **Failures.** A problem with one item (:class:`~mfpo.stages.chunk.ItemError`, or any unforeseen
  exception, recorded as ``internal error in <stage>``) fails that item with a readable reason
  and the chunk goes on. Transient infrastructure errors (:data:`TRANSIENT`) propagate, so the
  executor retries the whole stage later; nothing is written for a stage that did not finish.
* **Order.** Outputs are written in declared order after the per-item files are flushed, so the
  commit output (the chunk's outcomes, at the end) implies everything before it exists.
* **Time.** With ``item_time_limit_s``, one item's work that takes longer fails that item
  ("took longer than ...") and the chunk goes on (a SIGALRM timer; in a process's main thread, as
  Celery's prefork workers and the embedded pool run stages).
* **Giving up.** :func:`give_up` ends a chunk whose stage keeps dying (its process killed by a hard
  time limit or the kernel): every item not failed yet fails with the reason, and the chunk is done.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.resources import StageResources
from mfpo.schemas import Failure
from mfpo.stages.artifacts import ArtifactName, Outcome
from mfpo.stages.chunk import Chunk, ItemError, StagedItem, item_failure
from mfpo.stages.graph import Stage
from mfpo.stages.io import ChunkIO
from mfpo.storage.base import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailable, ConnectionError, TimeoutError)
"""Errors that say "try the whole stage again later", never "this item is bad"."""


class ItemTimeout(Exception):
    """One item's work ran past ``item_time_limit_s``."""


@contextlib.contextmanager
def item_deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`ItemTimeout` in the block when it runs longer than ``seconds`` (None, or not the main
    thread: no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ItemTimeout(f"took longer than {seconds:g} s (item_time_limit_s)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class StageContext:
    """What a stage function gets: its chunk's IO (declared inputs only), the job's options, the resources."""

    stage: Stage
    io: ChunkIO
    config: GenerateConfig
    resources: StageResources
    item_time_limit_s: float | None = None

    @property
    def chunk(self) -> Chunk:
        return self.io.chunk()

    def read(self, artifact: ArtifactName) -> bytes:
        """A declared input's bytes (reading an undeclared artifact is a bug in the stage)."""
        if artifact not in self.stage.inputs:
            raise ValueError(f"stage {self.stage.name!r} does not declare input {artifact!r}")
        return self.io.read(artifact)


@dataclass
class StageRun:
    """What one run of a stage on a chunk did."""

    stage: str
    chunk: str
    items: int
    executed: bool
    failed: int = 0
    seconds: float = 0.0


def run_stage(stage: Stage, io: ChunkIO, config: GenerateConfig, resources: StageResources,
              item_time_limit_s: float | None = None) -> StageRun:
    """Run ``stage`` on the chunk behind ``io`` unless its commit output exists (then a no-op)."""
    started = time.perf_counter()
    if io.exists(stage.commit):
        return StageRun(stage.name, io.chunk_key, len(io.chunk().items), executed=False)
    ctx = StageContext(stage=stage, io=io, config=config, resources=resources, item_time_limit_s=item_time_limit_s)
    outputs = stage.run(ctx)
    missing = [name for name in stage.outputs if name not in outputs]
    if missing:
        raise RuntimeError(f"stage {stage.name!r} did not produce its declared outputs {missing}")
    for name in stage.outputs:  # declared order: the commit output last
        io.write(name, outputs[name])
    return StageRun(stage.name, io.chunk_key, len(ctx.chunk.items), executed=True,
                    seconds=time.perf_counter() - started)


def guarded(stage: str, item: StagedItem, failures: dict[str, Failure], work: Callable[..., T], *args: Any,
            limit_s: float | None = None) -> T | None:
    """``work(*args)``, or None with the item's failure recorded in ``failures`` (transient errors propagate);
    with ``limit_s``, work running longer fails the item."""
    try:
        with item_deadline(limit_s):
            return work(*args)
    except ItemTimeout as exc:
        failures[item.id] = item_failure(item, stage, f"{stage} {exc}")
    except ItemError as exc:
        failures[item.id] = item_failure(item, exc.stage, exc.reason)
    except TRANSIENT:
        raise
    except Exception as exc:  # a bug or an unforeseen input: this item fails, the chunk goes on
        log.exception("item %s failed in %s", item.id, stage)
        failures[item.id] = item_failure(item, stage, f"internal error in {stage}: {type(exc).__name__}: {exc}")
    return None


def give_up(io: ChunkIO, stage: Stage, reason: str) -> list[Outcome]:
    """End a chunk whose ``stage`` keeps failing as a whole: every item without a failure yet fails with
    ``reason``, those with one keep theirs, and the chunk's outcomes are written (its commit)."""
    from mfpo.stages.artifacts import decode_keywords, decode_regions, encode_outcomes
    from mfpo.stages.io import MissingInput

    failures: dict[str, Failure] = {}
    for name, decode in (("regions", decode_regions), ("keywords", decode_keywords)):
        try:
            failures = dict(decode(io.read(name)).failures)  # type: ignore[arg-type]
            break
        except MissingInput:
            continue
    outcomes = []
    for item in io.chunk().items:
        failure = failures.get(item.id) or item_failure(item, stage.name, reason)
        outcomes.append(Outcome(id=item.id, index=item.index, row=item.row, status="failed", failure=failure))
    io.write("outcomes", encode_outcomes(outcomes))
    return outcomes
