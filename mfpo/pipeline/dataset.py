"""The dataset manifest: ``dataset.jsonl`` and ``dataset.parquet``, one record per item, written streaming."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from mfpo.negatives.config import NEGATIVE_KINDS
from mfpo.pipeline.dataset_index import INDEX_FILE, ViewIndex, ViewIndexWriter, record_views
from mfpo.schemas import Failure, ResultRecord

BOX = pa.list_(pa.float64(), 4)

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("image", pa.string()),
        ("rejected_image", pa.string()),
        ("mask", pa.string()),
        ("keywords", pa.list_(pa.struct([("text", pa.string()), ("score", pa.float64())]))),
        (
            "regions",
            pa.list_(
                pa.struct(
                    [
                        ("keyword", pa.string()),
                        ("box", BOX),
                        ("source", pa.string()),
                        ("area", pa.float64()),
                    ]
                )
            ),
        ),
        ("keywords_not_found", pa.list_(pa.string())),
        (
            "perturbation",
            pa.struct(
                [
                    ("mode", pa.string()),
                    ("noise_step", pa.int64()),
                    ("schedule", pa.string()),
                    ("seed", pa.int64()),
                    ("fallback", pa.bool_()),
                ]
            ),
        ),
        ("source_size", pa.list_(pa.int64(), 2)),
        ("system", pa.string()),
        ("source", pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))),
        *[(f"rejected_image_{kind}", pa.string()) for kind in NEGATIVE_KINDS],
        ("rejected_mbpo", pa.string()),
        (
            "negatives",
            pa.list_(
                pa.struct(
                    [
                        ("kind", pa.string()),
                        ("image", pa.string()),
                        ("mask", pa.string()),
                        ("response", pa.string()),
                        ("fallback", pa.string()),
                        ("details", pa.string()),
                    ]
                )
            ),
        ),
    ]
)
"""Arrow schema of ``dataset.parquet``; image columns are paths relative to the dataset folder. ``source`` (a
dict in the record) is a list of ``{key, value}`` pairs: Arrow's map type has no ``datasets`` equivalent.
One column per rejected-image kind, ``rejected_image_{kind}`` (null where the job did not make it), and
``rejected_mbpo``, MBPO's rejected answer; ``negatives`` lists every kind's record (``details`` as JSON)."""


def parquet_row(row: dict) -> dict:
    """A record's JSON dump shaped for :data:`RECORD_SCHEMA` (``source`` as key/value pairs, one column per kind)."""
    out = dict(row)
    source = row.get("source")
    if source is not None:
        out["source"] = [{"key": k, "value": v} for k, v in source.items()]
    negatives = row.get("negatives") or {}
    for kind, negative in negatives.items():
        out[f"rejected_image_{kind}"] = negative["image"]
    out["rejected_mbpo"] = (negatives.get("mbpo") or {}).get("response")
    out["negatives"] = [{"kind": kind, **n, "details": json.dumps(n.get("details") or {}, ensure_ascii=False)}
                        for kind, n in negatives.items()]
    return out


class DatasetStats(BaseModel):
    """Counts over a whole dataset, gathered while it is written (``stats.json`` beside it).

    A paged view (the gallery) reads one page of ``dataset.jsonl`` with a range request at
    ``page_offsets[k]`` instead of the whole file, and shows these totals; a filtered one reads one page
    of its view in ``gallery-index.bin`` (``views``; :mod:`mfpo.pipeline.dataset_index`).
    """

    records: int = 0
    failures: int = 0
    fallback: int = Field(default=0, description="Records whose whole image was noised (no region found).")
    sources: dict[str, int] = Field(default_factory=dict, description="Regions per provider.")
    modes: dict[str, int] = Field(default_factory=dict, description="Records per region mode.")
    noise_steps: list[int] = Field(default_factory=list, description="Distinct noise steps t.")
    failure_stages: dict[str, int] = Field(default_factory=dict, description="Failures per stage.")
    negatives: dict[str, int] = Field(default_factory=dict, description="Records holding each rejected-image kind.")
    negative_fallbacks: dict[str, int] = Field(
        default_factory=dict, description="Records per kind whose constructor fell back (e.g. AdaViP to global noise)."
    )
    page_size: int = Field(default=100, description="Records per page of ``page_offsets``.")
    page_offsets: list[int] = Field(
        default_factory=list, description="Byte offset in dataset.jsonl of record k * page_size, for each page k."
    )
    jsonl_bytes: int = Field(default=0, description="Size of dataset.jsonl.")
    failures_bytes: int = Field(default=0, description="Size of failures.jsonl.")
    views: dict[str, ViewIndex] = Field(
        default_factory=dict,
        description="The gallery's filters (all, failed, fallback, keywords-not-found, source-*, area-*) and where "
        "each one's entries are in gallery-index.bin; empty for a dataset written before the index existed.",
    )

    def page_range(self, page: int) -> tuple[int, int]:
        """(offset, length) of 0-based ``page`` in dataset.jsonl; ValueError for a page that does not exist."""
        pages = max(1, len(self.page_offsets))
        if not 0 <= page < pages:
            raise ValueError(f"page {page + 1} does not exist (1-{pages})")
        if not self.page_offsets:
            return 0, 0
        end = self.page_offsets[page + 1] if page + 1 < len(self.page_offsets) else self.jsonl_bytes
        return self.page_offsets[page], end - self.page_offsets[page]


class DatasetWriter:
    """Writes ``dataset.jsonl``, ``dataset.parquet`` (row groups of ``row_group_size``), ``failures.jsonl``,
    ``gallery-index.bin`` (the gallery filters' entries, :mod:`~mfpo.pipeline.dataset_index`) and
    ``stats.json`` into ``folder`` one record at a time: memory stays bounded by a row group,
    whatever the dataset's size. Files appear (renamed into place) on :meth:`close`; until then they are
    hidden temporaries, so a dataset folder never holds a half-written manifest.
    """

    def __init__(self, folder: Path, row_group_size: int = 10_000, page_size: int = 100) -> None:
        if row_group_size < 1 or page_size < 1:
            raise ValueError("row_group_size and page_size must be at least 1")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.row_group_size = row_group_size
        self.stats = DatasetStats(page_size=page_size)
        self._tmp = {name: self.folder / f".tmp-{name}" for name in self.FILES}
        self._jsonl = open(self._tmp["dataset.jsonl"], "wb")  # noqa: SIM115 (closed in close())
        self._failures = open(self._tmp["failures.jsonl"], "wb")  # noqa: SIM115
        self._parquet = pq.ParquetWriter(self._tmp["dataset.parquet"], RECORD_SCHEMA)
        self._rows: list[dict] = []
        self._steps: set[int] = set()
        self._views = ViewIndexWriter(self.folder)

    FILES = ("dataset.jsonl", "dataset.parquet", "failures.jsonl", INDEX_FILE, "stats.json")

    def add_record(self, record: ResultRecord) -> None:
        stats = self.stats
        if stats.records % stats.page_size == 0:
            stats.page_offsets.append(stats.jsonl_bytes)
        row = record.model_dump(mode="json")
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        self._jsonl.write(line)
        self._views.add(record_views(record), stats.jsonl_bytes, len(line))
        stats.jsonl_bytes += len(line)
        stats.records += 1
        stats.fallback += int(record.perturbation.fallback)
        for region in record.regions:
            stats.sources[region.source] = stats.sources.get(region.source, 0) + 1
        stats.modes[record.perturbation.mode] = stats.modes.get(record.perturbation.mode, 0) + 1
        self._steps.add(record.perturbation.noise_step)
        for kind, negative in record.negatives.items():
            stats.negatives[kind] = stats.negatives.get(kind, 0) + 1
            if negative.fallback:
                stats.negative_fallbacks[kind] = stats.negative_fallbacks.get(kind, 0) + 1
        self._rows.append(parquet_row(row))
        if len(self._rows) >= self.row_group_size:
            self._flush_rows()

    def add_failure(self, failure: Failure) -> None:
        line = (failure.model_dump_json() + "\n").encode("utf-8")
        self._failures.write(line)
        self._views.add(["failed"], self.stats.failures_bytes, len(line))
        self.stats.failures_bytes += len(line)
        self.stats.failures += 1
        self.stats.failure_stages[failure.stage] = self.stats.failure_stages.get(failure.stage, 0) + 1

    def _flush_rows(self) -> None:
        if self._rows:
            self._parquet.write_table(pa.Table.from_pylist(self._rows, schema=RECORD_SCHEMA))
            self._rows = []

    def close(self) -> DatasetStats:
        """Finish the files and rename them into place (``dataset.jsonl`` last); returns the stats."""
        self._flush_rows()
        self._parquet.close()
        self._jsonl.close()
        self._failures.close()
        self.stats.noise_steps = sorted(self._steps)
        self.stats.views = self._views.close(self._tmp[INDEX_FILE])
        self._tmp["stats.json"].write_text(self.stats.model_dump_json(indent=1), encoding="utf-8")
        for name in ("failures.jsonl", INDEX_FILE, "stats.json", "dataset.parquet", "dataset.jsonl"):
            _publish(self._tmp[name], self.folder / name)
        return self.stats

    def abort(self) -> None:
        """Drop the temporaries (after an error)."""
        for fh in (self._jsonl, self._failures):
            fh.close()
        with contextlib.suppress(Exception):
            self._parquet.close()
        self._views.abort()
        for path in self._tmp.values():
            path.unlink(missing_ok=True)


def _publish(tmp: Path, target: Path) -> None:
    """Rename into place with the permissions a plain ``open()`` gives under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, target)


def write_dataset(out_dir: Path, records: Iterable[ResultRecord], failures: Iterable[Failure] = ()) -> DatasetStats:
    """Write a whole dataset folder's manifest files from ``records`` and ``failures`` (streamed)."""
    writer = DatasetWriter(Path(out_dir))
    try:
        for record in records:
            writer.add_record(record)
        for failure in failures:
            writer.add_failure(failure)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def read_dataset(out_dir: Path) -> Iterator[ResultRecord]:
    """Records of a finished dataset folder, from ``dataset.jsonl``, in order."""
    path = Path(out_dir) / "dataset.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out_dir} a dataset made by `mfpo generate`?")
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield ResultRecord.model_validate_json(line)
