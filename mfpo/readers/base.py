"""What every reader produces, and the helpers the format parsers share.

A format parser turns one raw row (a ``dict`` from a JSON line or a Parquet row)
into a :class:`ParsedRow`: the fields of a :class:`~mfpo.schemas.PreferenceItem`
plus the image bytes when the format carries them inline. It raises
:class:`RowError` for a row it cannot understand; :func:`to_read_item` then
validates the fields and turns every problem into a :class:`~mfpo.schemas.Failure`
with a readable reason, so no row is ever dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mfpo.ids import check_safe_id
from mfpo.images import ImageLimits
from mfpo.schemas import Failure, PreferenceItem

Row = dict[str, Any]


@dataclass(frozen=True)
class ReadItem:
    """One input row read and validated.

    ``image_bytes`` is set when the format carries the image inline (RLHF-V / RLAIF-V
    Parquet, TRL images as bytes); ``item.image`` is then a placeholder such as
    ``"inline:row-12"``. Otherwise ``item.image`` is an absolute path, URL, data URI
    or ``store://`` key, and ``image_bytes`` is None (loaded later with
    :func:`mfpo.images.load_image_bytes`).
    """

    row: int
    item: PreferenceItem
    image_bytes: bytes | None = None


@dataclass
class ParsedRow:
    """A row mapped onto :class:`PreferenceItem` fields (not yet validated)."""

    fields: dict[str, Any]
    image_bytes: bytes | None = None


class RowError(ValueError):
    """A row that cannot become an item: the stage and a readable reason."""

    def __init__(self, reason: str, stage: str = "validate", item_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
        self.item_id = item_id


RowParser = Callable[[Row, int, Path], ParsedRow]
"""(row, 0-based row number, folder of the input file) -> parsed row; raises RowError."""


# --- ids --------------------------------------------------------------------------------

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def dataset_id(prefix: str | None, value: object) -> str | None:
    """A safe item id from a dataset's own id/idx, e.g. ``("rlaifv", 123) -> "rlaifv-123"``.

    Characters outside ``[A-Za-z0-9._-]`` become ``_`` and ``..`` becomes ``_``, so the
    id passes :func:`mfpo.ids.check_safe_id`. None or an empty value gives None (the
    pipeline then uses a content id).
    """
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text:
        return None
    text = _UNSAFE_ID_CHARS.sub("_", text)
    while ".." in text:
        text = text.replace("..", "_")
    candidate = f"{prefix}-{text}" if prefix else text
    if not candidate[0].isalnum():
        candidate = "id" + candidate
    return check_safe_id(candidate[:128])


# --- images -----------------------------------------------------------------------------

_URI_PREFIXES = ("http://", "https://", "data:", "store://", "file://")


def resolve_reference(ref: str, base_dir: Path) -> str:
    """A path relative to the input file's folder made absolute; URLs, URIs, keys unchanged."""
    if ref.lower().startswith(_URI_PREFIXES) or not ref.strip():
        return ref
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return str(path.resolve())


def inline_placeholder(row: int) -> str:
    """The ``item.image`` of an item whose image bytes came inline with row ``row``."""
    return f"inline:row-{row}"


def image_field(value: object, row: int, base_dir: Path, column: str = "image") -> tuple[str, bytes | None]:
    """``(item.image, image_bytes)`` from an image column value.

    Accepts a Hugging Face image struct ``{"bytes": ..., "path": ...}`` (bytes win;
    a path alone is resolved like a reference), raw ``bytes``, or a reference string.
    """
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if isinstance(data, (bytes, bytearray)) and data:
            return inline_placeholder(row), bytes(data)
        path = value.get("path")
        if isinstance(path, str) and path.strip():
            return resolve_reference(path, base_dir), None
        raise RowError(f"{column}: image struct has neither bytes nor a path")
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise RowError(f"{column}: image bytes are empty")
        return inline_placeholder(row), bytes(value)
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"{column}: image reference is empty")
        return resolve_reference(value, base_dir), None
    if value is None:
        raise RowError(f"{column}: missing image")
    raise RowError(f"{column}: expected an image path/URL or an image struct, got {type(value).__name__}")


PROVENANCE_COLUMNS = ("ds_name", "origin_dataset", "origin_split", "idx", "image_path")
"""The provenance columns of openbmb's RLHF-V and RLAIF-V datasets (their dataset cards)."""


def provenance(row: Row, columns: tuple[str, ...] = PROVENANCE_COLUMNS) -> dict[str, str] | None:
    """The item's ``source``: the row's non-null ``columns`` as strings (None when it has none).

    Kept unchanged in the record, so an export in the input's layout (RLAIF-V) carries the input's own
    provenance, not ours.
    """
    source = {c: str(row[c]) for c in columns if row.get(c) is not None and not isinstance(row[c], (bytes, dict))}
    return source or None


def require(row: Row, *names: str) -> None:
    """Raise a RowError naming the columns of ``names`` that the row lacks (or has as null)."""
    missing = [n for n in names if row.get(n) is None]
    if missing:
        raise RowError(f"missing field(s): {', '.join(missing)}")


# --- validation and failures ------------------------------------------------------------


def readable_validation_error(exc: ValidationError) -> str:
    """``"chosen: text is empty; image: field required"`` from a pydantic error."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "item"
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "missing":
            msg = "field required"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts) or str(exc)


def elide(value: Any, max_chars: int = 256) -> Any:
    """A JSON-safe copy of a raw row for a Failure: bytes -> ``"<N bytes>"``, long strings cut."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= max_chars else value[:64] + f"...<{len(value)} chars>"
    if isinstance(value, Mapping):
        return {str(k): elide(v, max_chars) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [elide(v, max_chars) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def to_read_item(
    row: Row, index: int, base_dir: Path, parser: RowParser, limits: ImageLimits
) -> ReadItem | Failure:
    """Parse and validate one row; every problem becomes a Failure with the row elided."""
    item_id: str | None = None
    try:
        parsed = parser(row, index, base_dir)
        raw_id = parsed.fields.get("id")
        item_id = raw_id if isinstance(raw_id, str) else None
        if parsed.image_bytes is not None and len(parsed.image_bytes) > limits.max_bytes:
            raise RowError(
                f"inline image is {len(parsed.image_bytes)} bytes, over max_bytes={limits.max_bytes}",
                stage="image",
            )
        item = PreferenceItem.model_validate(parsed.fields)
    except RowError as exc:
        return Failure(
            row=index, id=exc.item_id or item_id, stage=exc.stage, reason=exc.reason, raw=elide(row)
        )
    except ValidationError as exc:
        return Failure(
            row=index, id=item_id, stage="validate", reason=readable_validation_error(exc), raw=elide(row)
        )
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a row shaped unlike its format
        return Failure(
            row=index, id=item_id, stage="validate", reason=f"cannot parse row: {exc!r}", raw=elide(row)
        )
    return ReadItem(row=index, item=item, image_bytes=parsed.image_bytes)
