"""TRL vision DPO: ``prompt``, ``chosen``, ``rejected`` and ``images``.

Layout, from TRL's "Dataset formats" guide (preference type) and the dataset
``HuggingFaceH4/rlaif-v_formatted`` (README ``dataset_info``): ``images`` is a
sequence of HF ``Image`` (``{bytes, path}`` structs in Parquet); ``prompt`` is
either a plain string or *conversational*::

    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "..."}]}]

and ``chosen`` / ``rejected`` are strings or
``[{"role": "assistant", "content": [{"type": "text", "text": "..."}]}]``.

Mapping: the question is the text of the prompt's single user message (``<image>``
placeholders in plain strings are removed); the text of its system message(s), if any,
is the item's ``system`` (kept through to the exports; TRL's export puts it back as the
first message); an answer is the text of its assistant message(s). A row must have exactly one image
(``images`` with one element, or a single ``image`` column) and a single-turn prompt,
else it fails with the reason. ``id``, when present, is kept (made safe).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfpo.readers.base import ParsedRow, Row, RowError, dataset_id, image_field

IMAGE_TOKEN = re.compile(r"<image>\s*")


def parse_trl_row(row: Row, index: int, base_dir: Path) -> ParsedRow:
    """Item fields from a TRL row: question, answers and the one image."""
    item_id = dataset_id(None, row.get("id"))
    try:
        image, data = image_field(_single_image(row), index, base_dir, column="images")
        fields: dict[str, Any] = {"id": item_id, "image": image}
        if row.get("prompt") is not None:
            fields["system"] = system_text(row["prompt"])
        for column, key, reader in (
            ("prompt", "question", prompt_text),
            ("chosen", "chosen", answer_text),
            ("rejected", "rejected", answer_text),
        ):
            if row.get(column) is not None:
                fields[key] = reader(row[column], column)
    except RowError as exc:
        raise RowError(exc.reason, exc.stage, item_id) from exc
    return ParsedRow(fields=fields, image_bytes=data)


def _single_image(row: Row) -> object:
    if "images" in row and row["images"] is not None:
        images = row["images"]
        if isinstance(images, (str, bytes, Mapping)):
            return images
        if not isinstance(images, Sequence) or len(images) != 1:
            count = len(images) if isinstance(images, Sequence) else type(images).__name__
            raise RowError(f"images: MFPO items have exactly one image, got {count}")
        return images[0]
    return row.get("image")


def prompt_text(prompt: object, column: str = "prompt") -> str:
    """The question: a plain prompt without ``<image>`` tokens, or the one user turn's text."""
    if isinstance(prompt, str):
        return IMAGE_TOKEN.sub("", prompt).strip()
    turns = [m for m in _messages(prompt, column) if m.get("role") != "system"]
    roles = [str(m.get("role")) for m in turns]
    if roles != ["user"]:
        raise RowError(
            f"{column}: expected a single-turn prompt (one user message), got roles {roles}"
        )
    return _content_text(turns[0].get("content"), column)


def system_text(prompt: object, column: str = "prompt") -> str | None:
    """The text of a conversational prompt's system message(s) (joined by newlines); None if there is none."""
    if isinstance(prompt, str):
        return None
    texts = [_content_text(m.get("content"), column) for m in _messages(prompt, column) if m.get("role") == "system"]
    return "\n".join(t for t in texts if t) or None


def answer_text(answer: object, column: str) -> str:
    """An answer: a plain string, or the text of the assistant message(s)."""
    if isinstance(answer, str):
        return answer
    turns = [m for m in _messages(answer, column) if m.get("role") == "assistant"]
    if not turns:
        raise RowError(f"{column}: no assistant message")
    return "\n".join(_content_text(m.get("content"), column) for m in turns)


def _messages(value: object, column: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or not all(isinstance(m, Mapping) for m in value):
        raise RowError(f"{column}: expected a string or a list of {{role, content}} messages")
    return list(value)


def _content_text(content: object, column: str) -> str:
    """Text of a message's content: a string, or the ``text`` parts of a parts list."""
    if isinstance(content, str):
        return IMAGE_TOKEN.sub("", content).strip()
    if isinstance(content, Sequence):
        texts = [
            str(part.get("text"))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text" and part.get("text") is not None
        ]
        return "\n".join(texts).strip()
    raise RowError(f"{column}: message content must be a string or a list of parts")
