"""The embedded runner: ``mfpo generate`` on one machine, outputs in a local folder.

Rows are read in the main process and sent, a small batch at a time, to worker
processes (one per core by default) that load the image, run the stages and write
the outputs to the store. A row whose record already exists is skipped, so a killed
run continues where it stopped. At the end the records are gathered, in input order,
into ``dataset.jsonl`` and ``dataset.parquet``; failures go to ``failures.jsonl``.

With a grounding model and SAM configured, the models are loaded once in the main
process at start-up and items run there in batches of the SAM batch size.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfpo.pipeline.config import GenerateConfig
from mfpo.pipeline.dataset import write_dataset
from mfpo.pipeline.item import ItemError, ItemOutputs, PreparedItem, generate_batch, prepare_item, store_outputs
from mfpo.pipeline.resources import StageResources, build_resources
from mfpo.readers import ReadItem, read_items
from mfpo.schemas import Failure, PreferenceItem, ResultRecord
from mfpo.storage.base import StoreError
from mfpo.storage.local import LocalStore

ProgressCallback = Callable[[int], None]


@dataclass
class RowOutcome:
    """What happened to one input row."""

    row: int | None
    status: str  # "done" | "skipped" | "failed"
    record_key: str | None = None
    item_id: str | None = None
    fallback: bool = False
    failure: Failure | None = None


@dataclass
class RunSummary:
    """Counts and speed of a run; printed by the CLI and written to ``summary.json``."""

    done: int = 0
    skipped: int = 0
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
            "skipped": self.skipped,
            "failed": self.failed,
            "records": self.records,
            "fallback": self.fallback,
            "fallback_rate": round(self.fallback_rate, 4),
            "seconds": round(self.seconds, 3),
            "items_per_second": round(self.items_per_second, 3),
            "failure_reasons": self.failure_reasons,
            "out_dir": self.out_dir,
        }


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


def _process_rows(rows: list[tuple[int | None, dict[str, Any], bytes | None]]) -> list[RowOutcome]:
    """Worker task: a batch of rows -> outcomes (outputs already written to the store)."""
    return process_rows(
        rows, _worker_state["config"], _worker_state["resources"], _worker_state["store"]
    )


def process_rows(
    rows: list[tuple[int | None, dict[str, Any], bytes | None]],
    config: GenerateConfig,
    resources: StageResources,
    store: LocalStore,
) -> list[RowOutcome]:
    """Prepare each row, skip the complete ones, run the stages on the rest, store outputs."""
    outcomes: dict[int, RowOutcome] = {}
    todo: list[tuple[int, PreparedItem]] = []
    for idx, (row, item_dict, image_bytes) in enumerate(rows):
        item = PreferenceItem.model_validate(item_dict)
        try:
            prepared = prepare_item(row, item, image_bytes, config)
        except ItemError as exc:
            outcomes[idx] = _failed(row, item.id, exc.stage, exc.reason, item_dict)
            continue
        if store.exists(prepared.keys.record):
            outcomes[idx] = RowOutcome(
                row=row, status="skipped", record_key=prepared.keys.record, item_id=prepared.item.id
            )
            continue
        todo.append((idx, prepared))
    results = generate_batch([p for _, p in todo], config, resources)
    for (idx, prepared), result in zip(todo, results, strict=True):
        if isinstance(result, Failure):
            outcomes[idx] = RowOutcome(row=prepared.row, status="failed", item_id=result.id, failure=result)
            continue
        try:
            store_outputs(store, result)
        except (StoreError, OSError) as exc:
            outcomes[idx] = _failed(prepared.row, prepared.item.id, "store", f"cannot write outputs: {exc}")
            continue
        outcomes[idx] = _done(result)
    return [outcomes[i] for i in range(len(rows))]


def _done(result: ItemOutputs) -> RowOutcome:
    return RowOutcome(
        row=result.prepared.row,
        status="done",
        record_key=result.prepared.keys.record,
        item_id=result.record.id,
        fallback=result.record.perturbation.fallback,
    )


def _failed(
    row: int | None, item_id: str | None, stage: str, reason: str, raw: dict[str, Any] | None = None
) -> RowOutcome:
    if raw is not None and isinstance(raw.get("image"), str) and len(raw["image"]) > 256:
        raw = {**raw, "image": raw["image"][:64] + f"...<{len(raw['image'])} chars>"}
    failure = Failure(row=row, id=item_id, stage=stage, reason=reason, raw=raw)
    return RowOutcome(row=row, status="failed", item_id=item_id, failure=failure)


# --- main side -------------------------------------------------------------------


def _batches(
    rows: Iterable[ReadItem | Failure], batch_size: int, failures: list[Failure]
) -> Iterator[list[tuple[int | None, dict[str, Any], bytes | None]]]:
    batch: list[tuple[int | None, dict[str, Any], bytes | None]] = []
    for entry in rows:
        if isinstance(entry, Failure):
            failures.append(entry)
            continue
        batch.append((entry.row, entry.item.model_dump(mode="json"), entry.image_bytes))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_generate(
    input_path: Path,
    out_dir: Path,
    config: GenerateConfig,
    *,
    input_format: str | None = None,
    workers: int | None = None,
    batch_size: int = 4,
    progress: ProgressCallback | None = None,
    gallery: bool = True,
) -> RunSummary:
    """Generate the MFPO image-preference dataset for ``input_path`` into ``out_dir``."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    store = LocalStore(out_dir)
    workers = max(1, workers or os.cpu_count() or 1)
    read_failures: list[Failure] = []
    rows = read_items(Path(input_path), input_format, config.limits)
    outcomes: list[RowOutcome] = []
    if config.regions.sam is not None:
        # Grounding + SAM: models load once in this process (below, before any item is read, so a bad
        # path fails at start-up); the accelerator is the parallelism and batches fill its encoder.
        workers, batch_size = 1, max(batch_size, config.regions.sam.effective_batch_size)
    batches = _batches(rows, batch_size, read_failures)
    if workers == 1:
        resources = build_resources(config.regions)
        for batch in batches:
            done = process_rows(batch, config, resources, store)
            outcomes.extend(done)
            if progress:
                progress(len(done))
    else:
        outcomes.extend(_run_pool(batches, config, out_dir, workers, progress))

    summary = _finish(out_dir, store, outcomes, read_failures, config, gallery)
    summary.seconds = time.perf_counter() - started
    summary.out_dir = str(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


def _run_pool(
    batches: Iterator[list[tuple[int | None, dict[str, Any], bytes | None]]],
    config: GenerateConfig,
    out_dir: Path,
    workers: int,
    progress: ProgressCallback | None,
) -> list[RowOutcome]:
    """Fan batches out to worker processes with a bounded number in flight."""
    outcomes: list[RowOutcome] = []
    max_in_flight = workers * 2
    with ProcessPoolExecutor(
        max_workers=workers,
        initializer=_init_worker,
        initargs=(config.model_dump_json(), str(out_dir), 1),
    ) as pool:
        in_flight: set[Future[list[RowOutcome]]] = set()
        for batch in batches:
            in_flight.add(pool.submit(_process_rows, batch))
            if len(in_flight) >= max_in_flight:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                outcomes.extend(_collect(finished, progress))
        finished, _ = wait(in_flight)
        outcomes.extend(_collect(finished, progress))
    return outcomes


def _collect(finished: Iterable[Future[list[RowOutcome]]], progress: ProgressCallback | None) -> list[RowOutcome]:
    out: list[RowOutcome] = []
    for fut in finished:
        got = fut.result()
        out.extend(got)
        if progress:
            progress(len(got))
    return out


def _finish(
    out_dir: Path,
    store: LocalStore,
    outcomes: list[RowOutcome],
    read_failures: list[Failure],
    config: GenerateConfig,
    gallery: bool,
) -> RunSummary:
    """Order outcomes by row, reject duplicate ids, write dataset, failures, gallery."""
    summary = RunSummary()
    failures = list(read_failures)
    records: list[ResultRecord] = []
    first_row: dict[str, int | None] = {}
    for outcome in sorted(outcomes, key=lambda o: (o.row is None, o.row or 0)):
        if outcome.status == "failed":
            assert outcome.failure is not None
            failures.append(outcome.failure)
            continue
        assert outcome.item_id is not None and outcome.record_key is not None
        if outcome.item_id in first_row:
            failures.append(
                Failure(
                    row=outcome.row,
                    id=outcome.item_id,
                    stage="validate",
                    reason=f"duplicate id {outcome.item_id!r} (first seen at row {first_row[outcome.item_id]})",
                )
            )
            continue
        first_row[outcome.item_id] = outcome.row
        records.append(ResultRecord.model_validate_json(store.get(outcome.record_key)))
        if outcome.status == "done":
            summary.done += 1
        else:
            summary.skipped += 1
    failures.sort(key=lambda f: (f.row is None, f.row or 0))
    summary.failed = len(failures)
    summary.records = len(records)
    summary.fallback = sum(r.perturbation.fallback for r in records)
    for f in failures:
        summary.failure_reasons[f.stage] = summary.failure_reasons.get(f.stage, 0) + 1
    write_dataset(out_dir, records)
    with open(out_dir / "failures.jsonl", "w", encoding="utf-8") as fh:
        for f in failures:
            fh.write(f.model_dump_json() + "\n")
    if gallery:
        from mfpo.gallery import write_gallery

        write_gallery(out_dir, records, title=f"MFPO dataset: {out_dir.name}", failures_count=len(failures))
    return summary
