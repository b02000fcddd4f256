"""RLHF-V (``openbmb/RLHF-V-Dataset``): image struct + a JSON ``text`` column.

Layout, from the dataset card (``dataset_info`` of README.md, Jan 2024 onwards):
``ds_name`` (string), ``image`` (HF ``Image``: a ``{bytes, path}`` struct in Parquet),
``text`` (string: a JSON object with keys ``"question"``, ``"chosen"``,
``"rejected"``), ``origin_dataset``, ``origin_split`` (strings), ``idx`` (int64),
``image_path`` (string). Item id: ``"rlhfv-{idx}"``. The provenance columns (``ds_name``,
``origin_dataset``, ``origin_split``, ``idx``, ``image_path``) become the item's ``source``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mfpo.readers.base import ParsedRow, Row, RowError, dataset_id, image_field, provenance, require

TEXT_KEYS = ("question", "chosen", "rejected")


def parse_rlhfv_row(row: Row, index: int, base_dir: Path) -> ParsedRow:
    """Item fields from the decoded ``text`` JSON; image bytes from the ``image`` struct."""
    item_id = dataset_id("rlhfv", row.get("idx"))
    require(row, "text")
    text = row["text"]
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RowError(f"text: not valid JSON: {exc}", item_id=item_id) from exc
    if not isinstance(text, Mapping):
        raise RowError(
            f"text: expected a JSON object with keys {', '.join(TEXT_KEYS)}, got {type(text).__name__}",
            item_id=item_id,
        )
    try:
        image, data = image_field(row.get("image"), index, base_dir)
    except RowError as exc:
        raise RowError(exc.reason, item_id=item_id) from exc
    fields = {key: text[key] for key in TEXT_KEYS if key in text}
    fields.update(id=item_id, image=image, source=provenance(row))
    return ParsedRow(fields=fields, image_bytes=data)
