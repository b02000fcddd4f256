"""Benchmark files as rows: JSON arrays or JSON Lines in, JSON Lines out.

Every benchmark ships its own layout: POPE and LLaVA-Bench use JSON Lines
(``coco_pope_random.json`` is JSON Lines despite its name), AMBER and MMHal-Bench a JSON
array. :func:`read_rows` reads either, by content rather than by file name. Ids are
compared as strings everywhere (``1`` in one file and ``"1"`` in another are the same
question), see :func:`row_ids`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

INDEX_KEY = "index"
"""Pseudo id key: a row's 0-based position in its file (MMHal-Bench's template has no id field)."""

DEFAULT_ID_KEYS = ("question_id", "id", "image_id")
"""Id fields tried in order: LLaVA / POPE / LLaVA-Bench, AMBER, Object HalBench (one question per image)."""


class RowsError(ValueError):
    """A benchmark file that cannot be read as rows, with the file and line."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON array file or a JSON Lines file (blank lines skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RowsError(f"cannot read {path}: {exc}") from exc
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RowsError(f"{path}: not valid JSON ({exc})") from exc
        rows = list(data)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RowsError(f"{path}, line {n}: not valid JSON ({exc})") from exc
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowsError(f"{path}: row {n} is {type(row).__name__}, expected an object")
    return rows


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON Lines (UTF-8, one object per line); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def id_key_of(rows: Sequence[Mapping[str, Any]], id_key: str | None = None) -> str:
    """The id field of ``rows``: ``id_key`` if given, else the first of :data:`DEFAULT_ID_KEYS` every row has,
    else :data:`INDEX_KEY` (row position)."""
    if id_key:
        return id_key
    for key in DEFAULT_ID_KEYS:
        if rows and all(key in row for row in rows):
            return key
    return INDEX_KEY


def row_ids(rows: Sequence[Mapping[str, Any]], id_key: str | None = None, source: str = "rows") -> list[str]:
    """String id of each row (see :func:`id_key_of`); duplicate or missing ids raise :class:`RowsError`."""
    key = id_key_of(rows, id_key)
    if key == INDEX_KEY:
        return [str(n) for n in range(len(rows))]
    ids: list[str] = []
    for n, row in enumerate(rows):
        if key not in row:
            raise RowsError(f"{source}: row {n} has no {key!r} field")
        ids.append(str(row[key]))
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise RowsError(f"{source}: duplicate {key!r} values {duplicates[:5]}; pass another id key "
                        f"(or {INDEX_KEY!r} for row positions)")
    return ids


def first_field(row: Mapping[str, Any], keys: Sequence[str], what: str, source: str) -> Any:
    """The value of the first of ``keys`` present in ``row``; :class:`RowsError` naming ``what`` if none is."""
    for key in keys:
        if key in row:
            return row[key]
    raise RowsError(f"{source}: a row has none of the {what} fields {list(keys)} (has {sorted(row)[:10]})")
