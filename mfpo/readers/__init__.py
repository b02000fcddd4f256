"""Input readers: preference items from the native format and public datasets.

>>> for entry in read_items(Path("items.jsonl")):   # doctest: +SKIP
...     if isinstance(entry, ReadItem): ...          # a valid item (+ inline image bytes)
...     else: ...                                     # a Failure with a readable reason

Formats (``format=``): ``native`` (:mod:`.native`), ``rlhfv`` (:mod:`.rlhfv`),
``rlaifv`` (:mod:`.rlaifv`), ``trl`` (:mod:`.trl`), ``vlfeedback`` (:mod:`.vlfeedback`).
Files: ``.jsonl`` / ``.json`` (JSON lines, or one JSON array) and ``.parquet``.

With ``format=None`` the format is detected from the keys of the first row that
parses (:func:`detect_format`):

1. ``completions`` present -> ``vlfeedback``
2. ``text`` present and no ``chosen`` -> ``rlhfv``
3. ``prompt`` and ``chosen`` present -> ``trl``
4. ``question`` and ``chosen`` present -> ``rlaifv`` when ``image`` is a
   ``{bytes, path}`` struct or ``ds_name`` is present, else ``native``

Anything else is an error that names the formats.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from mfpo.images import ImageLimits
from mfpo.readers.base import ReadItem, Row, RowParser, to_read_item
from mfpo.readers.files import RowOrFailure, iter_rows
from mfpo.readers.native import parse_native_row
from mfpo.readers.rlaifv import parse_rlaifv_row
from mfpo.readers.rlhfv import parse_rlhfv_row
from mfpo.readers.trl import parse_trl_row
from mfpo.readers.vlfeedback import parse_vlfeedback_row
from mfpo.schemas import Failure

__all__ = ["FORMATS", "PARSERS", "ReadItem", "detect_format", "read_items"]

PARSERS: dict[str, RowParser] = {
    "native": parse_native_row,
    "rlhfv": parse_rlhfv_row,
    "rlaifv": parse_rlaifv_row,
    "trl": parse_trl_row,
    "vlfeedback": parse_vlfeedback_row,
}
FORMATS: tuple[str, ...] = tuple(PARSERS)


def detect_format(row: Row) -> str:
    """The input format of a row, from its keys (rules in the module docstring)."""
    keys = set(row)
    if "completions" in keys:
        return "vlfeedback"
    if "text" in keys and "chosen" not in keys:
        return "rlhfv"
    if {"prompt", "chosen"} <= keys:
        return "trl"
    if {"question", "chosen"} <= keys:
        if isinstance(row.get("image"), Mapping) or "ds_name" in keys:
            return "rlaifv"
        return "native"
    raise ValueError(
        f"cannot detect the input format from the first row's keys {sorted(keys)}: expected one of "
        f"{', '.join(FORMATS)} (native: image/question/chosen/rejected; rlhfv: image/text; rlaifv: "
        "image struct/question/chosen/rejected; trl: prompt/chosen/rejected/images; vlfeedback: "
        "prompt/completions/img_path); pass format= to choose"
    )


def read_items(
    path: Path,
    format: str | None = None,
    limits: ImageLimits | None = None,
    *,
    batch_size: int = 64,
) -> Iterator[ReadItem | Failure]:
    """Each row of ``path`` as a :class:`ReadItem`, or a :class:`Failure` saying why not.

    ``format`` is one of :data:`FORMATS`, or None to detect it from the first row.
    ``limits.max_bytes`` is applied to inline image bytes here; pixel limits apply when
    the image is decoded. Parquet is read ``batch_size`` rows at a time. Raises
    ``ValueError`` at once for an unknown format or file type and ``FileNotFoundError``
    for a missing file; a format that cannot be detected raises on first iteration.
    """
    path = Path(path)
    if format is not None and format not in PARSERS:
        raise ValueError(f"unknown input format {format!r}: use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    rows = iter_rows(path, batch_size=batch_size)
    return _read(rows, path.resolve().parent, format, limits or ImageLimits())


def _read(
    rows: Iterator[RowOrFailure], base_dir: Path, format: str | None, limits: ImageLimits
) -> Iterator[ReadItem | Failure]:
    parser = PARSERS[format] if format is not None else None
    for entry in rows:
        if isinstance(entry, Failure):
            yield entry
            continue
        index, row = entry
        if parser is None:
            parser = PARSERS[detect_format(row)]
        yield to_read_item(row, index, base_dir, parser, limits)
