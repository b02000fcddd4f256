"""Where a chunk's artifacts live: the store (the platform), or memory plus a local folder (embedded).

A stage reads its declared inputs and writes its declared outputs through a :class:`ChunkIO`;
it never builds a key itself. Two bindings:

* :class:`StoreChunkIO` (Celery workers): every artifact is an object under the job's root::

      chunks/{key}.json          items        (written at intake, before the chunk is queued)
      chunks/{key}.zip           images       (written at intake, before the items)
      work/{key}/keywords.json   keywords
      work/{key}/regions.npz     regions
      work/{key}/negatives.json  negatives    (records of the files in rejected-{kind}/, masks-{kind}/)
      outcomes/{key}.jsonl       outcomes     (written last: the chunk is finished)

* :class:`MemoryChunkIO` (``mfpo generate``): items and images come from the reader, the
  intermediate artifacts stay in memory, and only ``outcomes`` is written, to the output folder,
  so a killed run resumes chunk by chunk.

Both give the per-item outputs (``images/``, ``rejected/``, ``masks/``, ``rejected-{kind}/``,
``masks-{kind}/``) an :class:`OutputWriter` that writes them in a small bounded thread pool, so store
round trips overlap the next item's work.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from mfpo.images import ImageLimits, decode_image
from mfpo.stages.artifacts import ArtifactName
from mfpo.stages.blob import ImageBlob
from mfpo.stages.chunk import Chunk, ItemError, StagedItem
from mfpo.storage.base import ObjectNotFound, ObjectStore

UInt8Image = npt.NDArray[np.uint8]


class MissingInput(LookupError):
    """A stage's declared input is not there (lost or never written): the stage producing it must run again."""

    def __init__(self, artifact: ArtifactName, chunk: str) -> None:
        super().__init__(f"chunk {chunk}: artifact {artifact!r} is missing")
        self.artifact = artifact
        self.chunk = chunk


class OutputWriter:
    """Writes per-item output files through a bounded pool; :meth:`flush` waits and re-raises the first error.

    At most ``max_pending`` writes are in flight (each holds its bytes), so memory stays bounded.
    """

    _pools: ClassVar[dict[tuple[int, int], ThreadPoolExecutor]] = {}
    _lock = threading.Lock()

    def __init__(self, store: ObjectStore, threads: int = 4, max_pending: int = 8) -> None:
        self.store = store
        key = (os.getpid(), threads)  # a forked child (a pool worker) must not use its parent's dead threads
        with OutputWriter._lock:
            if key not in OutputWriter._pools:
                OutputWriter._pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="mfpo-put")
            self._pool = OutputWriter._pools[key]
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pending: list[Future[None]] = []

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._slots.acquire()
        try:
            future = self._pool.submit(self.store.put, key, data, content_type)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append(future)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first


class ChunkIO(Protocol):
    """The artifacts of one chunk, and where its per-item outputs go."""

    chunk_key: str

    def chunk(self) -> Chunk:
        """The ``items`` artifact."""
        ...

    def image_bytes(self, item: StagedItem) -> bytes:
        """The item's original image bytes (from the ``images`` artifact)."""
        ...

    def image(self, item: StagedItem) -> UInt8Image:
        """The item's decoded image, uint8 (H, W, 3); raises :class:`ItemError` if it cannot be decoded."""
        ...

    def exists(self, artifact: ArtifactName) -> bool: ...

    def read(self, artifact: ArtifactName) -> bytes:
        """The artifact's bytes; :class:`MissingInput` when it is not there."""
        ...

    def write(self, artifact: ArtifactName, data: bytes) -> None: ...

    def output_writer(self) -> OutputWriter:
        """Writer of the per-item outputs (dataset layout: images/, rejected/, masks/)."""
        ...


class _DecodedCache:
    """Decoded images kept for the next stage, bounded by bytes (oldest dropped first)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, UInt8Image] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> UInt8Image | None:
        return self._items.get(key)

    def put(self, key: str, image: UInt8Image) -> None:
        if image.nbytes > self.max_bytes or key in self._items:
            return
        self._items[key] = image
        self._bytes += image.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes


def _decode(data: bytes, limits: ImageLimits) -> UInt8Image:
    from mfpo.images import ImageError

    try:
        return np.asarray(decode_image(data, limits), dtype=np.uint8)
    except ImageError as exc:
        raise ItemError("image", str(exc)) from exc


class StoreChunkIO:
    """A chunk's artifacts as objects under ``root`` of ``store`` (the platform's layout, module docstring)."""

    def __init__(self, store: ObjectStore, root: str, chunk_key: str, outputs: ObjectStore, limits: ImageLimits,
                 decoded_cache_bytes: int = 0, put_threads: int = 4) -> None:
        self.store = store
        self.root = root
        self.chunk_key = chunk_key
        self.outputs = outputs
        self.limits = limits
        self.put_threads = put_threads
        self._chunk: Chunk | None = None
        self._blob: ImageBlob | None = None
        self._cache = _DecodedCache(decoded_cache_bytes)
        self._written: dict[ArtifactName, bytes] = {}

    def key(self, artifact: ArtifactName) -> str:
        return artifact_key(self.root, self.chunk_key, artifact)

    def chunk(self) -> Chunk:
        if self._chunk is None:
            self._chunk = Chunk.model_validate_json(self.read("items"))
        return self._chunk

    def image_bytes(self, item: StagedItem) -> bytes:
        if self._blob is None:
            self._blob = ImageBlob(self.read("images"))
        return self._blob[item.id]

    def image(self, item: StagedItem) -> UInt8Image:
        cached = self._cache.get(item.id)
        if cached is not None:
            return cached
        image = _decode(self.image_bytes(item), self.limits)
        self._cache.put(item.id, image)
        return image

    def exists(self, artifact: ArtifactName) -> bool:
        return self.store.exists(self.key(artifact))

    def read(self, artifact: ArtifactName) -> bytes:
        if artifact in self._written:
            return self._written[artifact]
        try:
            return self.store.get(self.key(artifact))
        except ObjectNotFound:
            raise MissingInput(artifact, self.chunk_key) from None

    def write(self, artifact: ArtifactName, data: bytes) -> None:
        self.store.put(self.key(artifact), data, _CONTENT_TYPES[artifact])
        self._written[artifact] = data  # read back by the executor (the outcomes' counts) without a GET

    def output_writer(self) -> OutputWriter:
        return OutputWriter(self.outputs, threads=self.put_threads)


def artifact_key(root: str, chunk_key: str, artifact: ArtifactName) -> str:
    """Store key of a chunk's artifact under a job ``root`` (the layout in the module docstring)."""
    if artifact == "items":
        return f"{root}/chunks/{chunk_key}.json"
    if artifact == "images":
        return f"{root}/chunks/{chunk_key}.zip"
    if artifact == "outcomes":
        return f"{root}/outcomes/{chunk_key}.jsonl"
    return f"{root}/work/{chunk_key}/{artifact}{_SUFFIXES[artifact]}"


_SUFFIXES = {"keywords": ".json", "regions": ".npz", "negatives": ".json"}
_CONTENT_TYPES: dict[ArtifactName, str] = {
    "items": "application/json",
    "images": "application/zip",
    "keywords": "application/json",
    "regions": "application/octet-stream",
    "negatives": "application/json",
    "outcomes": "application/x-ndjson",
}


class MemoryChunkIO:
    """The embedded binding: inputs from the reader, intermediates in memory, ``outcomes`` in ``store``.

    ``outcomes_key(chunk_key)`` names the outcome file (e.g. ``outcomes/{key}.jsonl`` of the output folder).
    """

    def __init__(self, chunk: Chunk, images: dict[str, bytes], decoded: dict[str, UInt8Image], store: ObjectStore,
                 outcomes_key: Callable[[str], str], limits: ImageLimits, decoded_cache_bytes: int = 256 << 20,
                 put_threads: int = 2) -> None:
        self.chunk_key = chunk.key
        self._chunk = chunk
        self._images = images
        self._cache = _DecodedCache(decoded_cache_bytes)
        for item_id, image in decoded.items():
            self._cache.put(item_id, image)
        self._memory: dict[ArtifactName, bytes] = {}
        self.store = store
        self._outcomes_key = outcomes_key(chunk.key)
        self.limits = limits
        self.put_threads = put_threads

    def chunk(self) -> Chunk:
        return self._chunk

    def image_bytes(self, item: StagedItem) -> bytes:
        return self._images[item.id]

    def image(self, item: StagedItem) -> UInt8Image:
        cached = self._cache.get(item.id)
        if cached is not None:
            return cached
        return _decode(self._images[item.id], self.limits)

    def exists(self, artifact: ArtifactName) -> bool:
        if artifact in ("items", "images"):
            return True
        if artifact == "outcomes":
            return self.store.exists(self._outcomes_key)
        return artifact in self._memory

    def read(self, artifact: ArtifactName) -> bytes:
        if artifact == "outcomes":
            try:
                return self.store.get(self._outcomes_key)
            except ObjectNotFound:
                raise MissingInput(artifact, self.chunk_key) from None
        if artifact in ("items", "images"):
            raise ValueError(f"{artifact!r} of an embedded chunk is read through chunk()/image_bytes()")
        try:
            return self._memory[artifact]
        except KeyError:
            raise MissingInput(artifact, self.chunk_key) from None

    def write(self, artifact: ArtifactName, data: bytes) -> None:
        if artifact == "outcomes":
            self.store.put(self._outcomes_key, data, _CONTENT_TYPES[artifact])
        else:
            self._memory[artifact] = data

    def output_writer(self) -> OutputWriter:
        return OutputWriter(self.store, threads=self.put_threads)
