"""Exporters: a finished dataset folder -> a Parquet file a trainer loads directly.

The folder is what ``mfpo generate`` writes (``OUT/dataset.jsonl`` of
:class:`~mfpo.schemas.ResultRecord`, image paths relative to ``OUT``). Formats:

- ``trl``: TRL vision DPO (:mod:`.trl`), conversational prompt + ``images``, plus
  the image-side pair ``rejected_images``.
- ``rlaifv``: RLAIF-V's own columns (:mod:`.rlaifv`) plus ``rejected_image``.
- ``hf``: every record field with real ``datasets.Image`` features (:mod:`.hf`).
- ``llamafactory``: LLaMA-Factory's sharegpt preference folder (:mod:`.llamafactory`): JSON rows,
  image files, ``dataset_info.json``; the rejected image in the extra column ``rejected_images``.

Every other export is a Parquet file whose schema carries the Hugging Face ``Features``
(schema metadata key ``huggingface``), so ``datasets.load_dataset("parquet", ...)``
decodes the image columns to ``PIL`` images. Image bytes are copied unchanged from
the dataset folder. Records are streamed, ``rows_per_group`` at a time, so the
export never holds the whole dataset in memory; the file is written to a temporary
name and renamed into place (:func:`publish`: with the permissions a plain ``open()``
gives under the umask, not ``mkstemp``'s 0600).

A dataset without records is refused (:class:`EmptyDatasetError`): ``datasets`` cannot
load a split of zero rows from Parquet (a zero-row row group fails with "BatchSize must
be greater than 0", a file without row groups with "Instruction 'train' corresponds to
no data"), so an empty export would only fail later, in the trainer.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfpo.pipeline.dataset import read_dataset
from mfpo.schemas import ResultRecord
from mfpo.storage.base import InvalidKey, ObjectNotFound
from mfpo.storage.local import LocalStore

if TYPE_CHECKING:
    from datasets import Features

__all__ = ["EXPORT_FORMATS", "EmptyDatasetError", "export_dataset", "publish"]

EXPORT_FORMATS: tuple[str, ...] = ("trl", "rlaifv", "hf", "llamafactory")
DEFAULT_FILE_NAME = "train.parquet"

Example = dict[str, Any]
ExampleBuilder = Callable[[ResultRecord, "DatasetImages"], Example]


class EmptyDatasetError(ValueError):
    """The dataset folder has no records: nothing a trainer could load (see the module docstring)."""


def export_dataset(out_dir: Path, format: str, dest: Path, *, rows_per_group: int = 64,
                   negatives: str | None = None) -> Path:
    """Export the dataset in ``out_dir`` as ``format`` to ``dest``; return the file written.

    ``negatives``: the kind of rejected image to export (``mdpo``, ``adavip``, ...; MBPO's answers replace the
    rejected text); None: each record's ``rejected_image`` (the job's first kind). A record without it is a
    ValueError naming the record and what it holds.

    ``dest`` ending in ``.parquet`` is the file; any other ``dest`` is a folder that
    receives ``train.parquet`` (so ``datasets.load_dataset(str(dest))`` finds a train
    split). ``llamafactory``: ``dest`` is a folder; returns its ``dataset_info.json``.
    Raises :class:`EmptyDatasetError` (nothing written) when the dataset has no records.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    out_dir = Path(out_dir)
    if not (out_dir / "dataset.jsonl").is_file():
        raise FileNotFoundError(
            f"{out_dir / 'dataset.jsonl'} not found: is {out_dir} a dataset made by `mfpo generate`?"
        )
    records = read_dataset(out_dir)
    first = next(records, None)
    if first is None:
        failures = out_dir / "failures.jsonl"
        why = f"; its failures and their reasons are in {failures}" if failures.is_file() else ""
        raise EmptyDatasetError(
            f"{out_dir} has no records, nothing to export{why} (Hugging Face datasets cannot load a "
            "zero-row Parquet split)"
        )
    records = itertools.chain([first], records)
    if negatives is not None:
        records = (r.with_negative(negatives) for r in records)
        first.with_negative(negatives)  # a dataset without the kind fails before anything is written
    if format == "llamafactory":
        from mfpo.exporters.llamafactory import export_llamafactory

        return export_llamafactory(out_dir, records, Path(dest))
    if format == "trl":
        from mfpo.exporters.trl import trl_example, trl_features

        features, build = trl_features(), trl_example
    elif format == "rlaifv":
        from mfpo.exporters.rlaifv import rlaifv_example, rlaifv_features

        features, build = rlaifv_features(), rlaifv_example
    else:
        from mfpo.exporters.hf import hf_example, hf_features

        features, build = hf_features(), hf_example
    images = DatasetImages(out_dir)
    target = export_path(Path(dest))
    write_parquet(target, features, (build(r, images) for r in records), rows_per_group)
    return target


def export_path(dest: Path) -> Path:
    """The Parquet file for ``dest``: itself if it ends in ``.parquet``, else ``dest/train.parquet``."""
    return dest if dest.suffix.lower() == ".parquet" else dest / DEFAULT_FILE_NAME


class DatasetImages:
    """Reads a record's images from the dataset folder as HF image structs.

    The folder is opened as a :class:`~mfpo.storage.local.LocalStore`, so a record's
    path is validated as a relative key and can never point outside the folder.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.store = LocalStore(self.out_dir)

    def struct(self, record: ResultRecord, rel_path: str) -> dict[str, Any]:
        """``{"bytes": <file bytes>, "path": <file name>}`` of the image at ``rel_path``."""
        try:
            data = self.store.get(rel_path)
        except ObjectNotFound:
            raise FileNotFoundError(
                f"record {record.id!r}: image {rel_path!r} is missing from {self.out_dir}"
            ) from None
        except InvalidKey as exc:
            raise ValueError(
                f"record {record.id!r}: image path {rel_path!r} is not a relative path inside the "
                f"dataset folder ({exc})"
            ) from None
        return {"bytes": data, "path": rel_path.rsplit("/", 1)[-1]}


def write_parquet(target: Path, features: Features, examples: Iterable[Example], rows_per_group: int) -> int:
    """Write ``examples`` to ``target`` with the arrow schema of ``features``; return the row count.

    The schema keeps the ``huggingface`` metadata of ``Features.arrow_schema``, which
    is what lets ``datasets`` restore ``Image`` (and nested) features on load.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows_per_group < 1:
        raise ValueError(f"rows_per_group must be >= 1, got {rows_per_group}")
    schema = features.arrow_schema
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    os.close(fd)
    count = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in _chunks(examples, rows_per_group):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=rows_per_group)
                count += len(batch)
        publish(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def publish(tmp: str | Path, target: Path) -> None:
    """Rename a finished temporary file into place, readable as a plain ``open()`` would have made it.

    ``mkstemp`` creates files 0600; an export read by a training job or a web server under another uid
    must get ``0666 & ~umask`` (0644 under the usual umask 022), like every other file we write.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


def _umask() -> int:
    """The process umask: from ``/proc/self/status`` where Linux has it (reading it there changes nothing, so it
    is safe beside other threads), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chunks(items: Iterable[Example], size: int) -> Iterator[list[Example]]:
    chunk: list[Example] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
