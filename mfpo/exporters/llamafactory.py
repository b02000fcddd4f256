"""LLaMA-Factory export: a sharegpt-format multimodal preference dataset folder with its ``dataset_info.json``.

The layout follows LLaMA-Factory's ``data/README.md`` (sharegpt format: "Preference Dataset" and
"Multimodal Image Dataset")::

    DEST/dataset_info.json   {"mfpo": {"file_name": "mfpo.json", "formatting": "sharegpt", "ranking": true,
                                       "columns": {"messages": "conversations", "system": "system",
                                                   "chosen": "chosen", "rejected": "rejected", "images": "images"}}}
    DEST/mfpo.json           [{"conversations": [{"from": "human", "value": "<image>question"}], "system": "...",
                               "chosen": {"from": "gpt", "value": y_w}, "rejected": {"from": "gpt", "value": y_l},
                               "images": ["images/<id>.png"], "rejected_images": ["rejected/<id>.png"],
                               "id": "<record id>"}, ...]
    DEST/images/, DEST/rejected/   the image files, bytes unchanged

Train with ``dataset_dir: DEST`` and ``dataset: mfpo`` (or merge the entry into your own
``data/dataset_info.json`` and copy the files next to it): LLaMA-Factory joins each image path
to ``media_dir``, which defaults to ``dataset_dir``. One ``<image>`` token per image, placed
before the question as in the README's example.

The rejected image m' (MFPO sec. 3.1) has no place in LLaMA-Factory's format: its DPO uses
only the text pair. It is kept in the extra column ``rejected_images`` (paths, aligned with
``images``), which LLaMA-Factory ignores (its converter reads only the columns the entry maps),
so the same file serves LLaMA-Factory's text DPO and a trainer that reads the image pair.

Records are streamed into a JSON array; the data file and ``dataset_info.json`` are written
under temporary names and renamed into place, ``dataset_info.json`` last.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mfpo.exporters import publish
from mfpo.schemas import ResultRecord
from mfpo.storage.base import InvalidKey, ObjectNotFound
from mfpo.storage.local import LocalStore

DATASET_NAME = "mfpo"
DATA_FILE = f"{DATASET_NAME}.json"
INFO_FILE = "dataset_info.json"
IMAGE_TOKEN = "<image>"
REJECTED_IMAGES = "rejected_images"


def dataset_info_entry(file_name: str = DATA_FILE) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of the export (README: sharegpt preference + multimodal image)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "system": "system", "chosen": "chosen", "rejected": "rejected",
                    "images": "images"},
    }


def llamafactory_example(record: ResultRecord) -> dict[str, Any]:
    """One sharegpt preference row of a record (image paths relative to the export folder)."""
    return {
        "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}{record.question}"}],
        "system": record.system or "",
        "chosen": {"from": "gpt", "value": record.chosen},
        "rejected": {"from": "gpt", "value": record.rejected},
        "images": [record.image],
        REJECTED_IMAGES: [record.rejected_image],
        "id": record.id,
    }


def _copy_image(source: LocalStore, target: LocalStore, record: ResultRecord, key: str) -> None:
    try:
        target.put(key, source.get(key))
    except ObjectNotFound:
        raise FileNotFoundError(f"record {record.id!r}: image {key!r} is missing from {source.root}") from None
    except InvalidKey as exc:
        raise ValueError(f"record {record.id!r}: image path {key!r} is not a relative path inside the dataset "
                         f"folder ({exc})") from None


def _atomic_write(path: Path, chunks: Iterable[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(chunk)
        publish(tmp, path)  # 0666 & ~umask, not mkstemp's 0600
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_llamafactory(out_dir: Path, records: Iterable[ResultRecord], dest: Path) -> Path:
    """Write the LLaMA-Factory folder ``dest`` from the dataset folder ``out_dir``; returns its dataset_info.json."""
    source, target = LocalStore(out_dir), LocalStore(dest)

    def rows() -> Iterable[str]:
        yield "["
        for n, record in enumerate(records):
            for key in (record.image, record.rejected_image):
                _copy_image(source, target, record, key)
            yield ("," if n else "") + "\n" + json.dumps(llamafactory_example(record), ensure_ascii=False)
        yield "\n]\n"

    _atomic_write(dest / DATA_FILE, rows())
    info = dest / INFO_FILE
    _atomic_write(info, [json.dumps({DATASET_NAME: dataset_info_entry()}, indent=2) + "\n"])
    return info
