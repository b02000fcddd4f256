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

from mfpo.schemas import NegativeRecord, ResultRecord
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


def require_dataset(uri: str, negatives: str | None = None) -> None:
    """Raise :class:`DatasetError` unless ``uri`` holds a ``dataset.jsonl`` whose first record has the ``negatives``
    kind of rejected image: a cheap check (one ranged read) made before the model loads, so a wrong ``--dataset``
    or a loss without its negatives fails in seconds, not after minutes of loading weights."""
    store = open_store(uri)
    if not store.exists("dataset.jsonl"):
        raise DatasetError(f"{uri}: no dataset.jsonl (a folder made by `mfpo generate`?)")
    if negatives is None:
        return
    head = store.get_range("dataset.jsonl", 0, 1 << 20).split(b"\n", 1)[0]
    try:
        record = ResultRecord.model_validate_json(head)
    except ValueError:
        return  # not a record (or longer than 1 MiB): load_examples reports it with the others
    missing_negatives(uri, record, negatives)


def missing_negatives(uri: str, record: ResultRecord, kind: str) -> NegativeRecord:
    """``record``'s ``kind`` rejected image, or :class:`DatasetError` saying what the dataset holds and what to do."""
    negative = record.negative(kind)
    if negative is not None:
        return negative
    held = ", ".join(record.negatives) or "mfpo"
    raise DatasetError(
        f"{uri}: record {record.id} has no {kind!r} rejected images (it holds: {held}). Make them with "
        f"`mfpo generate --negatives {held.replace(' ', '')},{kind}` (a job: options.negatives.kinds), or train on "
        f"a kind it holds with --negatives {held.split(',')[0]}."
    )


def load_examples(
    uri: str, count_tokens: Callable[[str], int], max_answer_tokens: int, limit: int | None = None,
    negatives: str | None = "mfpo",
) -> list[Example]:
    """Every record of the dataset at ``uri`` as an :class:`Example`; raises :class:`DatasetError`.

    ``negatives``: the kind of rejected image to train on (``rejected_image`` of the example; mbpo's answer, when
    it has one, replaces the rejected text); None: the record's ``rejected_image`` (text-only losses). A record
    without that kind is a problem reported with the others.
    """
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
        rejected_text, rejected_key = record.rejected, record.rejected_image
        if negatives is not None:
            try:
                negative = missing_negatives(uri, record, negatives)
            except DatasetError as exc:
                problems.append(str(exc).removeprefix(f"{uri}: "))
                continue
            rejected_key, rejected_text = negative.image, negative.response or record.rejected
        for field, text in (("chosen", record.chosen), ("rejected", rejected_text)):
            tokens = count_tokens(text)
            if tokens > max_answer_tokens:
                problems.append(f"{record.id}: {field} answer is {tokens} tokens, over max_answer_tokens="
                                f"{max_answer_tokens}")
        try:
            image, rejected = _image(store, record.image), _image(store, rejected_key)
        except ObjectNotFound as exc:
            problems.append(f"{record.id}: missing image ({exc})")
            continue
        except OSError as exc:
            problems.append(f"{record.id}: unreadable image ({exc})")
            continue
        examples.append(Example(record.id, record.question, record.chosen, rejected_text, image, rejected))
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{uri}: {len(problems)} problem(s) before training:\n{shown}{more}")
    if not examples:
        raise DatasetError(f"{uri}: the dataset has no records")
    return examples
