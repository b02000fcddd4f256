"""The dataset manifest: ``dataset.jsonl`` and ``dataset.parquet``, one record per item."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mfpo.schemas import ResultRecord

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
    ]
)
"""Arrow schema of ``dataset.parquet``; image columns are paths relative to the dataset folder."""


def dataset_jsonl(records: Sequence[ResultRecord]) -> bytes:
    """``dataset.jsonl`` bytes: one JSON record per line, in order."""
    rows = (json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in records)
    return "".join(rows).encode("utf-8")


def dataset_parquet(records: Sequence[ResultRecord]) -> bytes:
    """``dataset.parquet`` bytes with :data:`RECORD_SCHEMA`."""
    table = pa.Table.from_pylist([r.model_dump(mode="json") for r in records], schema=RECORD_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def write_dataset(out_dir: Path, records: Sequence[ResultRecord]) -> None:
    """Write ``dataset.jsonl`` and ``dataset.parquet`` atomically (temp file + rename)."""
    out_dir = Path(out_dir)
    jsonl, parquet = dataset_jsonl(records), dataset_parquet(records)
    _atomic_write(out_dir / "dataset.jsonl", lambda path: Path(path).write_bytes(jsonl))
    _atomic_write(out_dir / "dataset.parquet", lambda path: Path(path).write_bytes(parquet))


def read_dataset(out_dir: Path) -> Iterator[ResultRecord]:
    """Records of a finished dataset folder, from ``dataset.jsonl``, in order."""
    path = Path(out_dir) / "dataset.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {out_dir} a dataset made by `mfpo generate`?")
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield ResultRecord.model_validate_json(line)


def _atomic_write(target: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
