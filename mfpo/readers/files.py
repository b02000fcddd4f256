"""Raw rows from input files: JSON lines, JSON arrays and Parquet, streamed.

Row numbers are 0-based. In a JSON-lines file row ``i`` is line ``i + 1`` (blank
lines are skipped but keep their number, so a reason can point at the line). A
line of broken JSON becomes a ``Failure(stage="read")`` and reading goes on.
Parquet files are read a batch of rows at a time, never whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mfpo.readers.base import Row, elide
from mfpo.schemas import Failure

JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSON_SUFFIXES + PARQUET_SUFFIXES

RowOrFailure = tuple[int, Row] | Failure


def iter_rows(path: Path, batch_size: int = 64) -> Iterator[RowOrFailure]:
    """``(row number, row dict)`` for each row of ``path``, or a Failure for an unreadable row."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return iter_parquet_rows(path, batch_size)
    if suffix in JSON_SUFFIXES:
        return iter_json_rows(path)
    raise ValueError(
        f"unsupported input file type {path.suffix!r} for {path}: use {', '.join(SUPPORTED_SUFFIXES)}"
    )


def iter_json_rows(path: Path) -> Iterator[RowOrFailure]:
    """Rows of a JSON-lines file; a ``.json`` file holding one JSON array is also accepted.

    A JSON array is parsed whole (it cannot be streamed); JSON lines are streamed.
    """
    if path.suffix.lower() == ".json":
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            yield from _iter_json_array(path)
            return
    with open(path, "rb") as fh:
        for index, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Failure(
                    row=index,
                    stage="read",
                    reason=f"invalid JSON on line {index + 1}: {exc}",
                    raw=elide(line.decode("utf-8", errors="replace").rstrip("\r\n")),
                )
                continue
            yield _as_row(value, index)


def _iter_json_array(path: Path) -> Iterator[RowOrFailure]:
    try:
        values = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} starts with '[' but is not a valid JSON array: {exc}") from exc
    for index, value in enumerate(values):
        yield _as_row(value, index)


def _as_row(value: Any, index: int) -> RowOrFailure:
    if isinstance(value, dict):
        return index, value
    return Failure(
        row=index,
        stage="read",
        reason=f"expected a JSON object on row {index}, got {type(value).__name__}",
        raw=elide(json.dumps(elide(value))),
    )


def iter_parquet_rows(path: Path, batch_size: int = 64) -> Iterator[RowOrFailure]:
    """Rows of a Parquet file, ``batch_size`` rows in memory at a time."""
    import pyarrow.parquet as pq

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parquet = pq.ParquetFile(path)
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield index, row
                index += 1
    finally:
        parquet.close()
