"""The embedded executor of the stage graph: ``mfpo generate`` on one machine, outputs in a local folder.

Rows are read in the main process and grouped into chunks of ``chunk_size`` rows in input
order. Each chunk goes to a worker process (one per core by default), which describes its items
(:func:`~mfpo.stages.chunk.describe_item`: decode, id, output keys, seed) and runs every stage of
:data:`~mfpo.stages.graph.GRAPH` on it through :func:`~mfpo.stages.runner.run_stage`, the same
function the platform's Celery workers run, with the intermediate artifacts in memory
(:class:`~mfpo.stages.io.MemoryChunkIO`). The chunk's outcomes are written to
``OUT/outcomes/{chunk key}.jsonl``; the key is a digest of the chunk's items and options, so a
re-run skips every chunk that finished (a killed run resumes where it stopped) and changed options
write new outputs. At the end the outcomes are merged, in input order and streaming, into
``dataset.jsonl``, ``dataset.parquet`` and ``failures.jsonl``.

With a grounding model and SAM configured, the models are loaded once in the main process at
start-up and chunks run there (the accelerator is the parallelism; chunks fill its batches).
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mfpo.ids import digest
from mfpo.images import ImageError, load_image_bytes
from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.dataset import DatasetWriter
from mfpo.pipeline.resources import StageResources, build_resources
from mfpo.readers import ReadItem, read_items
from mfpo.schemas import Failure, PreferenceItem, ResultRecord
from mfpo.stages.artifacts import decode_outcomes
from mfpo.stages.chunk import Chunk, ItemError, StagedItem, describe_item
from mfpo.stages.graph import GRAPH
from mfpo.stages.io import MemoryChunkIO
from mfpo.stages.negatives import batch_size as negatives_batch_size
from mfpo.stages.negatives import uses_models as negatives_use_models
from mfpo.stages.runner import run_stage
from mfpo.storage.local import LocalStore

ProgressCallback = Callable[[int], None]
RawRow = tuple[int | None, dict[str, Any], bytes | None]
"""A row as the main process hands it to a worker: (input row, item as JSON, inline image bytes or None)."""

OUTCOMES_FOLDER = "outcomes"


@dataclass
class RunSummary:
    """Counts and speed of a run; printed by the CLI and written to ``summary.json``."""

    done: int = 0
    resumed: int = 0
    failed: int = 0
    fallback: int = 0
    seconds: float = 0.0
    out_dir: str = ""
    records: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallback / self.records if self.records else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "resumed": self.resumed,
            "failed": self.failed,
            "records": self.records,
            "fallback": self.fallback,
            "fallback_rate": round(self.fallback_rate, 4),
            "seconds": round(self.seconds, 3),
            "items_per_second": round(self.items_per_second, 3),
            "failure_reasons": self.failure_reasons,
            "out_dir": self.out_dir,
        }


@dataclass
class ChunkResult:
    """What a worker reports for one chunk (small: the records stay in the outcome file)."""

    first_row: int
    outcomes_key: str | None
    resumed: bool
    items: int
    failures: list[Failure] = field(default_factory=list)  # items that could not even be described


def outcomes_key(chunk_key: str) -> str:
    return f"{OUTCOMES_FOLDER}/{chunk_key}.jsonl"


# --- worker side -----------------------------------------------------------------

_worker_state: dict[str, Any] = {}


def _init_worker(config_json: str, out_dir: str, torch_threads: int) -> None:
    """Process initializer: one torch thread per process, models loaded once."""
    import torch

    torch.set_num_threads(torch_threads)
    config = GenerateConfig.model_validate_json(config_json)
    _worker_state["config"] = config
    _worker_state["store"] = LocalStore(out_dir)
    _worker_state["resources"] = build_resources(config.regions)


def _run_chunk_in_worker(rows: list[RawRow]) -> ChunkResult:
    return run_chunk(rows, _worker_state["config"], _worker_state["resources"], _worker_state["store"])


def describe_rows(
    rows: list[RawRow], config: GenerateConfig
) -> tuple[Chunk, dict[str, bytes], dict[str, npt.NDArray[np.uint8]], list[Failure]]:
    """Load and describe each row (image bytes, id, keys, seed); rows that cannot be described are failures.

    The chunk key digests every described item's output stem (content + options) in order, so the same
    rows with the same options always make the same key.
    """
    items: list[StagedItem] = []
    images: dict[str, bytes] = {}
    decoded: dict[str, npt.NDArray[np.uint8]] = {}
    failures: list[Failure] = []
    for row, item_json, inline in rows:
        item = PreferenceItem.model_validate(item_json)
        try:
            try:
                data = inline if inline is not None else load_image_bytes(item.image, None, config.limits)
            except ImageError as exc:
                raise ItemError("image", str(exc)) from exc
            staged, image = describe_item(len(items), row, item, data, config)
        except ItemError as exc:
            failures.append(_failure(row, item.id, exc.stage, exc.reason, item_json))
            continue
        if staged.id in images:
            first = next(s.row for s in items if s.id == staged.id)
            failures.append(duplicate_id(row, staged.id, first))
            continue
        items.append(staged)
        images[staged.id] = data
        decoded[staged.id] = image
    key = digest(*(s.stem for s in items), length=24)
    return Chunk(key=key, items=items), images, decoded, failures


def run_chunk(rows: list[RawRow], config: GenerateConfig, resources: StageResources, store: LocalStore) -> ChunkResult:
    """Describe the rows, then run every stage of the graph on the chunk (skipped when its outcomes exist)."""
    chunk, images, decoded, failures = describe_rows(rows, config)
    first_row = min((r for r, _, _ in rows if r is not None), default=0)
    if not chunk.items:
        return ChunkResult(first_row, None, False, 0, failures)
    io = MemoryChunkIO(chunk, images, decoded, store, outcomes_key, config.limits)
    resumed = io.exists("outcomes")
    if not resumed:
        for stage in GRAPH:
            run_stage(stage, io, config, resources)
    return ChunkResult(first_row, outcomes_key(chunk.key), resumed, len(chunk.items), failures)


def duplicate_id(row: int | None, item_id: str, first: int | None) -> Failure:
    reason = f"duplicate id {item_id!r} (first seen at row {first})"
    return Failure(row=row, id=item_id, stage="validate", reason=reason)


def _failure(row: int | None, item_id: str | None, stage: str, reason: str, raw: dict[str, Any] | None) -> Failure:
    if raw is not None and isinstance(raw.get("image"), str) and len(raw["image"]) > 256:
        raw = {**raw, "image": raw["image"][:64] + f"...<{len(raw['image'])} chars>"}
    return Failure(row=row, id=item_id, stage=stage, reason=reason, raw=raw)


# --- main side -------------------------------------------------------------------


def _chunks(rows: Iterable[ReadItem | Failure], chunk_size: int, failures: list[Failure]) -> Iterator[list[RawRow]]:
    chunk: list[RawRow] = []
    for entry in rows:
        if isinstance(entry, Failure):
            failures.append(entry)
            continue
        chunk.append((entry.row, entry.item.model_dump(mode="json"), entry.image_bytes))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_generate(
    input_path: Path,
    out_dir: Path,
    config: GenerateConfig,
    *,
    input_format: str | None = None,
    workers: int | None = None,
    chunk_size: int = 16,
    progress: ProgressCallback | None = None,
    gallery: bool = True,
) -> RunSummary:
    """Generate the MFPO image-preference dataset for ``input_path`` into ``out_dir``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    store = LocalStore(out_dir)
    workers = max(1, workers or os.cpu_count() or 1)
    read_failures: list[Failure] = []
    rows = read_items(Path(input_path), input_format, config.limits)
    if config.regions.sam is not None:
        # Grounding + SAM: models load once in this process (below, before any item is read, so a bad
        # path fails at start-up); the accelerator is the parallelism and chunks fill its batches.
        workers, chunk_size = 1, max(chunk_size, config.regions.sam.effective_batch_size)
    if negatives_use_models(config.negatives):  # CLIP / inpainter / policy: likewise, one process
        workers, chunk_size = 1, max(chunk_size, negatives_batch_size(config.negatives))
    chunks = _chunks(rows, chunk_size, read_failures)
    results: list[ChunkResult] = []
    if workers == 1:
        resources = build_resources(config.regions)
        if negatives_use_models(config.negatives):
            from mfpo.negatives.models import load_models

            load_models(config.negatives)
        for chunk in chunks:
            result = run_chunk(chunk, config, resources, store)
            results.append(result)
            if progress:
                progress(len(chunk))
    else:
        results.extend(_run_pool(chunks, config, out_dir, workers, progress))

    summary = _finish(out_dir, store, results, read_failures, gallery)
    summary.seconds = time.perf_counter() - started
    summary.out_dir = str(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


def _run_pool(
    chunks: Iterator[list[RawRow]],
    config: GenerateConfig,
    out_dir: Path,
    workers: int,
    progress: ProgressCallback | None,
) -> list[ChunkResult]:
    """Fan chunks out to worker processes with a bounded number in flight."""
    results: list[ChunkResult] = []
    max_in_flight = workers * 2
    with ProcessPoolExecutor(
        max_workers=workers,
        initializer=_init_worker,
        initargs=(config.model_dump_json(), str(out_dir), 1),
    ) as pool:
        in_flight: dict[Future[ChunkResult], int] = {}
        try:
            for chunk in chunks:
                in_flight[pool.submit(_run_chunk_in_worker, chunk)] = len(chunk)
                if len(in_flight) >= max_in_flight:
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    results.extend(_collect(finished, in_flight, progress))
            finished, _ = wait(in_flight)
            results.extend(_collect(finished, in_flight, progress))
        except BaseException:  # SIGTERM (the CLI raises), Ctrl-C, an error: stop the workers now, not after
            terminate_workers(pool)  # their chunks (nor leave them running, orphaned); finished chunks are kept
            raise
    return results


def terminate_workers(pool: ProcessPoolExecutor, grace_s: float = 2.0) -> None:
    """Stop a pool's worker processes: SIGTERM, then SIGKILL for any still alive after ``grace_s``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)  # (this forgets the processes: taken above)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _collect(finished: Iterable[Future[ChunkResult]], in_flight: dict[Future[ChunkResult], int],
             progress: ProgressCallback | None) -> list[ChunkResult]:
    out: list[ChunkResult] = []
    for fut in finished:
        rows = in_flight.pop(fut)
        out.append(fut.result())
        if progress:
            progress(rows)
    return out


def _ordered(store: LocalStore, results: list[ChunkResult], read_failures: list[Failure]) -> Iterator[
    tuple[int | None, ResultRecord | Failure, bool]
]:
    """(row, record or failure, resumed) in input order, streamed: chunks hold consecutive rows, so their
    outcomes come out in row order; rows that failed before a chunk formed are merged in by row."""

    def chunk_entries() -> Iterator[tuple[int | None, ResultRecord | Failure, bool]]:
        for result in sorted(results, key=lambda r: r.first_row):
            entries: list[tuple[int | None, ResultRecord | Failure, bool]] = [
                (f.row, f, False) for f in result.failures
            ]
            if result.outcomes_key is not None:
                for outcome in decode_outcomes(store.get(result.outcomes_key)):
                    entry = outcome.record if outcome.status == "done" else outcome.failure
                    assert entry is not None
                    entries.append((outcome.row, entry, result.resumed))
            yield from sorted(entries, key=lambda e: e[0] if e[0] is not None else -1)

    loose = ((f.row, f, False) for f in sorted(read_failures, key=lambda f: (f.row is None, f.row or 0)))
    yield from heapq.merge(chunk_entries(), loose, key=lambda e: (e[0] is None, e[0] or 0))


def _finish(out_dir: Path, store: LocalStore, results: list[ChunkResult], read_failures: list[Failure],
            gallery: bool) -> RunSummary:
    """Merge the chunks' outcomes in input order into the dataset files (streaming); a repeated id fails."""
    summary = RunSummary()
    writer = DatasetWriter(out_dir)
    first_row: dict[str, int | None] = {}
    try:
        for row, entry, resumed in _ordered(store, results, read_failures):
            if isinstance(entry, Failure):
                writer.add_failure(entry)
                continue
            if entry.id in first_row:
                writer.add_failure(duplicate_id(row, entry.id, first_row[entry.id]))
                continue
            first_row[entry.id] = row
            writer.add_record(entry)
            if resumed:
                summary.resumed += 1
            else:
                summary.done += 1
    except BaseException:
        writer.abort()
        raise
    stats = writer.close()
    summary.failed = stats.failures
    summary.records = stats.records
    summary.fallback = stats.fallback
    summary.failure_reasons = dict(stats.failure_stages)
    if gallery:
        from mfpo.gallery import write_dataset_gallery

        write_dataset_gallery(out_dir, title=f"MFPO dataset: {out_dir.name}")  # streamed: any size
    return summary
