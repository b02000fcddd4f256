"""Training data: a finished dataset (local folder or ``s3://bucket/prefix``) checked before any step.

The folder/prefix holds ``dataset.jsonl`` (as ``mfpo generate`` writes it, or a job's ``out/``
prefix on the platform) with image paths relative to it. :func:`load_examples` reads every
record, fetches its original and rejected image, and checks each answer's token count; all
problems are collected and raised together as :class:`DatasetError` naming the record ids,
before the first training step.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from mfpo.schemas import ResultRecord
from mfpo.storage.base import ObjectNotFound, ObjectStore
from mfpo.storage.factory import open_store


class DatasetError(ValueError):
    """The dataset cannot be trained on; the message lists each bad record and why."""


@dataclass
class Example:
    """One item: question, chosen and rejected answers, original image m and rejected image m'."""

    id: str
    question: str
    chosen: str
    rejected: str
    image: Image.Image
    rejected_image: Image.Image


def _image(store: ObjectStore, key: str) -> Image.Image:
    with Image.open(io.BytesIO(store.get(key))) as im:
        return im.convert("RGB")


def require_dataset(uri: str) -> None:
    """Raise :class:`DatasetError` unless ``uri`` holds a ``dataset.jsonl``: a cheap check made before the model
    loads, so a wrong ``--dataset`` fails in seconds, not after minutes of loading weights."""
    if not open_store(uri).exists("dataset.jsonl"):
        raise DatasetError(f"{uri}: no dataset.jsonl (a folder made by `mfpo generate`?)")


def load_examples(
    uri: str, count_tokens: Callable[[str], int], max_answer_tokens: int, limit: int | None = None
) -> list[Example]:
    """Every record of the dataset at ``uri`` as an :class:`Example`; raises :class:`DatasetError`."""
    store = open_store(uri)
    try:
        lines = store.get("dataset.jsonl").decode("utf-8").splitlines()
    except ObjectNotFound:
        raise DatasetError(f"{uri}: no dataset.jsonl (a folder made by `mfpo generate`?)") from None
    examples: list[Example] = []
    problems: list[str] = []
    for n, line in enumerate(lines[:limit] if limit else lines):
        if not line.strip():
            continue
        try:
            record = ResultRecord.model_validate_json(line)
        except ValueError as exc:
            problems.append(f"line {n + 1}: not a dataset record ({str(exc).splitlines()[0]})")
            continue
        for field in ("chosen", "rejected"):
            tokens = count_tokens(getattr(record, field))
            if tokens > max_answer_tokens:
                problems.append(f"{record.id}: {field} answer is {tokens} tokens, over max_answer_tokens="
                                f"{max_answer_tokens}")
        try:
            image, rejected = _image(store, record.image), _image(store, record.rejected_image)
        except ObjectNotFound as exc:
            problems.append(f"{record.id}: missing image ({exc})")
            continue
        except OSError as exc:
            problems.append(f"{record.id}: unreadable image ({exc})")
            continue
        examples.append(Example(record.id, record.question, record.chosen, record.rejected, image, rejected))
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{uri}: {len(problems)} problem(s) before training:\n{shown}{more}")
    if not examples:
        raise DatasetError(f"{uri}: the dataset has no records")
    return examples
