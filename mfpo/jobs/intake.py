"""Accepting items into a job: one path for the REST batch and the file upload alike.

A :class:`Submission` takes validated items one at a time and groups them into chunks
(``chunk_size`` items or ``chunk_max_bytes`` of images, settings). For each chunk, in order:

1. a chunk number is reserved (submission order, atomic across gateways) and the items' ids
   are **claimed** atomically in Redis (:meth:`~mfpo.jobs.state.JobState.claim`): an id already
   stored with the same content is accepted again (a retried batch is idempotent), with other
   content it is a duplicate, and an id another request is writing right now is refused;
2. in a bounded thread pool, each claimed item's image is checked under the job's limits (header,
   pixel count, integrity: :func:`~mfpo.images.verify_image`; a corrupt image is refused here, with
   its reason), then the images
   and the chunk's items are **written to the store** (the system of record) - images first,
   the item list last;
3. the chunk is **registered** in Redis and its first stage **queued**. A chunk the store holds
   but Redis could not record (Redis down at that moment) is marked ``unregistered/`` in the store,
   and the periodic reconcile registers and queues it: it is accepted either way.

A submission holds a lease in Redis while it runs (renewed in the background), so ``close`` can
wait for submissions in flight, and the claims of a submission that died are taken over by a
retry once its lease expires. An infrastructure failure (store or Redis unavailable) stops the
submission: :class:`SubmissionInterrupted` carries the per-item results so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from mfpo.config import ComponentConfig
from mfpo.images import ImageError, load_image_bytes
from mfpo.jobs.dispatch import Dispatcher
from mfpo.jobs.records import JobRecord
from mfpo.jobs.settings import PlatformSettings
from mfpo.jobs.state import Claim, JobClosing, JobState, StateLost
from mfpo.jobs.store import JobKeys, JobStore, chunk_key, uploads_prefix
from mfpo.schemas import PreferenceItem
from mfpo.stages.blob import pack_images
from mfpo.stages.chunk import Chunk, ItemError, StagedItem, identify_item, verify_checked
from mfpo.stages.graph import first_stage
from mfpo.storage.base import InvalidKey, ObjectNotFound, StoreError, check_key

log = logging.getLogger(__name__)

TEXT_FIELDS = ("question", "chosen", "rejected", "system")


class ItemRejected(ValueError):
    """The item was not accepted; the message says why, for the client."""


class SubmissionInterrupted(RuntimeError):
    """The store or Redis failed mid-submission; ``result`` holds what was decided before."""

    def __init__(self, reason: str, result: IntakeResult) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


class IntakeLimits(ComponentConfig):
    """Limits on submitted items besides the image limits of the job's options."""

    max_text_chars: int = Field(default=20_000, ge=1, description="Longest question/chosen/rejected text.")


@dataclass
class IntakeResult:
    """Per-item answers of a submission: accepted ids, refusals with reasons, and items not handled."""

    accepted: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    unprocessed: list[int] = field(default_factory=list)

    def sort(self) -> IntakeResult:
        self.accepted.sort()
        self.rejected.sort()
        self.unprocessed.sort()
        return self


def validation_message(exc: ValidationError) -> str:
    """Pydantic errors as one readable line: ``field: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "item"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def validate_item(raw: Mapping[str, Any] | Any, limits: IntakeLimits) -> PreferenceItem:
    """A native-format item from a client, or :class:`ItemRejected` with the reason."""
    if not isinstance(raw, Mapping):
        raise ItemRejected(f"an item must be a JSON object, got {type(raw).__name__}")
    try:
        item = PreferenceItem.model_validate(raw)
    except ValidationError as exc:
        raise ItemRejected(validation_message(exc)) from None
    check_text_limits(item, limits)
    return item


def check_text_limits(item: PreferenceItem, limits: IntakeLimits) -> None:
    too_long = [f for f in TEXT_FIELDS if len(getattr(item, f) or "") > limits.max_text_chars]
    if too_long:
        raise ItemRejected(f"{', '.join(too_long)} longer than {limits.max_text_chars} characters (max_text_chars)")


def read_image_reference(jobs: JobStore, job: JobRecord, ref: str) -> bytes:
    """Bytes of a ``data:`` URI or of ``store://uploads/NAME`` of this tenant; anything else is refused.

    Clients are untrusted: no filesystem paths (the server's files), no URLs (requests to arbitrary hosts).
    """
    limits = job.options.limits
    if ref.startswith("data:"):
        try:
            return load_image_bytes(ref, None, limits)
        except ImageError as exc:
            raise ItemRejected(str(exc)) from None
    if ref.startswith("store://"):
        key = ref.removeprefix("store://")
        try:
            check_key(key)
        except InvalidKey as exc:
            raise ItemRejected(str(exc)) from None
        if not key.startswith("uploads/"):
            raise ItemRejected(f"image key {key!r} must name an uploaded object: store://uploads/NAME")
        try:
            data = jobs.store.get(uploads_prefix(job.tenant) + key.removeprefix("uploads/"))
        except ObjectNotFound:
            raise ItemRejected(f"no uploaded object {key!r}") from None
        if len(data) > limits.max_bytes:
            raise ItemRejected(f"uploaded object {key!r} is {len(data)} bytes, over max_bytes={limits.max_bytes}")
        return data
    raise ItemRejected("image must be a data: URI (base64) or store://uploads/NAME of an uploaded object")


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's chunk-writing pool (one per process: a forked child builds its own)."""
    with _POOLS_LOCK:
        pid = os.getpid()
        if pid not in _POOLS:
            _POOLS[pid] = ThreadPoolExecutor(threads, thread_name_prefix="mfpo-intake")
        return _POOLS[pid]


def _is_infrastructure(exc: BaseException) -> bool:
    if isinstance(exc, (StoreError, StateLost, ConnectionError, TimeoutError)):
        return True
    try:
        import redis

        return isinstance(exc, redis.RedisError)
    except ImportError:  # pragma: no cover
        return False


@dataclass
class _Pending:
    index: int
    staged: StagedItem
    data: bytes


class Submission:
    """Items into a job, chunk by chunk (the protocol is in the module docstring). Use as a context manager."""

    def __init__(self, jobs: JobStore, state: JobState, dispatcher: Dispatcher, job: JobRecord,
                 settings: PlatformSettings) -> None:
        self.jobs, self.state, self.dispatcher, self.job, self.settings = jobs, state, dispatcher, job, settings
        self.result = IntakeResult()
        self._buffer: list[_Pending] = []
        self._buffer_bytes = 0
        self._futures: list[tuple[Future[None], list[int]]] = []
        self._slots = threading.BoundedSemaphore(settings.submit_threads)
        self._lock = threading.Lock()
        self._failure: str | None = None
        self.lease = ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Submission:
        """Open the lease (raises :class:`~mfpo.jobs.state.JobClosing` / :class:`~mfpo.jobs.state.StateLost`)."""
        ttl = self.settings.submission_lease_s
        self.lease = self.state.open_lease(ttl)
        self._renewer = threading.Thread(target=self._renew, args=(ttl,), daemon=True, name="mfpo-lease")
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self.state.close_lease(self.lease)
        except Exception:  # Redis down: the lease expires by itself
            log.warning("could not release submission lease %s of job %s", self.lease, self.job.id)

    def _renew(self, ttl: float) -> None:
        while not self._stop.wait(ttl / 3):
            try:
                self.state.renew_lease(self.lease, ttl)
            except Exception:
                log.warning("could not renew submission lease %s of job %s", self.lease, self.job.id)

    @property
    def interrupted(self) -> bool:
        return self._failure is not None

    # -- items -----------------------------------------------------------------------------------

    def reject(self, index: int, reason: str) -> None:
        with self._lock:
            self.result.rejected.append((index, reason))

    def add(self, index: int, item: PreferenceItem, image_bytes: bytes) -> None:
        """A validated item and its image bytes; refused items are recorded with their reason."""
        if self._failure is not None:
            with self._lock:
                self.result.unprocessed.append(index)
            return
        try:
            staged = identify_item(0, index, item, image_bytes, self.job.options)
        except ItemError as exc:
            self.reject(index, exc.reason)
            return
        settings = self.settings
        if self._buffer and self._buffer_bytes + len(image_bytes) > settings.chunk_max_bytes:
            self._flush()
        self._buffer.append(_Pending(index, staged, image_bytes))
        self._buffer_bytes += len(image_bytes)
        if len(self._buffer) >= settings.chunk_size:
            self._flush()

    def finish(self) -> IntakeResult:
        """Write what is buffered and wait for every chunk; raises :class:`SubmissionInterrupted` after a failure."""
        if self._buffer and self._failure is None:
            self._flush()
        for future, _ in self._futures:
            future.exception()  # wait; errors were recorded by the chunk writer
        if self._failure is not None:
            raise SubmissionInterrupted(self._failure, self.result.sort())
        return self.result.sort()

    # -- chunks ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        pending, self._buffer, self._buffer_bytes = self._buffer, [], 0
        try:
            key = chunk_key(self.state.next_chunk(), self.lease)
            claims = self.state.claim(self.lease, key, [(p.staged.id, p.staged.stem) for p in pending])
            fresh = [p for p, c in zip(pending, claims, strict=True) if self._settle(p, c, key)]
        except JobClosing:
            for p in pending:
                self.reject(p.index, f"job {self.job.id} was closed before this item was stored")
            return
        except Exception as exc:
            if not _is_infrastructure(exc):
                raise
            self._fail(exc, [p.index for p in pending])
            return
        if not fresh:
            return
        self._slots.acquire()
        try:
            future = _pool(self.settings.submit_threads * 4).submit(self._write_chunk, key, fresh)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append((future, [p.index for p in fresh]))

    def _settle(self, pending: _Pending, claim: Claim, key: str) -> bool:
        """Record the answer for an item whose claim is decided; True when it is this chunk's to write."""
        item_id = pending.staged.id
        if claim.status == "check":  # claimed by a submission whose lease expired: did it store the item?
            if self.jobs.store.exists(JobKeys(self.job.tenant, self.job.id).artifact(claim.chunk, "items")):
                from mfpo.jobs.recovery import register_stored_chunk

                register_stored_chunk(self.jobs, self.state, self.dispatcher, self.job, claim.chunk)
                claim = Claim("same" if claim.stem == pending.staged.stem else "dup", claim.chunk)
            elif self.state.take_over(item_id, claim.current, self.lease, key, pending.staged.stem):
                return True
            else:
                claim = Claim("busy", claim.chunk)
        if claim.status == "new":
            return True
        if claim.status == "same":
            with self._lock:
                self.result.accepted.append((pending.index, item_id))
        elif claim.status == "dup":
            self.reject(pending.index, f"duplicate id {item_id!r}: the job already has an item with this id "
                                       "and other content (or the request repeats it)")
        else:
            self.reject(pending.index, f"duplicate id {item_id!r}: another request is submitting an item with "
                                       "this id right now")
        return False

    def _write_chunk(self, key: str, pending: list[_Pending]) -> None:
        """Decode-check, store images then items, register and queue (runs in the pool)."""
        good: list[_Pending] = []
        refused: list[str] = []
        for p in pending:
            try:
                verify_checked(p.data, self.job.options)
                good.append(p)
            except ItemError as exc:
                self.reject(p.index, exc.reason)
                refused.append(p.staged.id)
            except MemoryError:
                self.reject(p.index, "image too large to decode on this server")
                refused.append(p.staged.id)
        try:
            if refused:
                self.state.release(self.lease, key, refused)
            if not good:
                return
            items = [p.staged.model_copy(update={"index": n}) for n, p in enumerate(good)]
            keys = JobKeys(self.job.tenant, self.job.id)
            store = self.jobs.store
            store.put(keys.artifact(key, "images"), pack_images((p.staged.id, p.data) for p in good),
                      "application/zip")
            store.put(keys.artifact(key, "items"), Chunk(key=key, items=items).model_dump_json().encode("utf-8"),
                      "application/json")
        except Exception as exc:
            if not _is_infrastructure(exc):
                raise
            self._fail(exc, [p.index for p in good])
            with contextlib.suppress(Exception):  # Redis down too: the claims are taken over once the lease expires
                self.state.release(self.lease, key, [p.staged.id for p in good])
            return
        with self._lock:  # stored: accepted, whatever happens to the bookkeeping below
            self.result.accepted.extend((p.index, p.staged.id) for p in good)
        try:
            self.state.register_chunk(key, [(s.id, s.stem) for s in items], status="undispatched")
        except Exception as exc:
            if not _is_infrastructure(exc):
                raise
            log.warning("chunk %s of job %s stored but not registered (%s); reconcile will", key, self.job.id, exc)
            try:
                store.put(keys.unregistered(key), b"", "text/plain")
            except Exception:
                log.exception("chunk %s of job %s: cannot mark it unregistered either", key, self.job.id)
            self._fail(exc, [])
            return
        queue_chunk(self.state, self.dispatcher, self.job, key)

    def interrupt(self, exc: BaseException, index: int) -> None:
        """An infrastructure failure outside the chunk writer (e.g. reading an uploaded image): stop here."""
        self._fail(exc, [index])

    def _fail(self, exc: BaseException, indices: list[int]) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = f"{type(exc).__name__}: {exc}"
            self.result.unprocessed.extend(indices)


def queue_chunk(state: JobState, dispatcher: Dispatcher, job: JobRecord, chunk: str) -> None:
    """Send a registered chunk's first stage (status undispatched -> queued; a failed send stays
    undispatched and the reconcile sends it)."""
    stage = first_stage()
    try:
        dispatcher.stage(job, chunk, stage)
        state.set_stage(chunk, stage.name, "queued", expect="undispatched")
    except Exception:
        log.warning("chunk %s of job %s: could not queue %s; reconcile will", chunk, job.id, stage.name,
                    exc_info=True)
