"""RLAIF-V (``openbmb/RLAIF-V-Dataset``): image struct and plain text columns.

Layout, from the dataset card (``dataset_info`` and "Data fields" of README.md):
``ds_name`` (string), ``image`` (HF ``Image``: ``{bytes, path}`` struct, "Dict
contains path and bytes"), ``question``, ``chosen``, ``rejected``,
``origin_dataset``, ``origin_split``, ``idx``, ``image_path`` (all strings). Item id:
``"rlaifv-{idx}"``. Extra columns (e.g. the ``rejected_image`` of an
``mfpo export --format rlaifv`` file) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from mfpo.readers.base import ParsedRow, Row, RowError, dataset_id, image_field

TEXT_COLUMNS = ("question", "chosen", "rejected")


def parse_rlaifv_row(row: Row, index: int, base_dir: Path) -> ParsedRow:
    """Item fields from the text columns; image bytes from the ``image`` struct."""
    item_id = dataset_id("rlaifv", row.get("idx"))
    try:
        image, data = image_field(row.get("image"), index, base_dir)
    except RowError as exc:
        raise RowError(exc.reason, item_id=item_id) from exc
    fields = {key: row[key] for key in TEXT_COLUMNS if row.get(key) is not None}
    fields.update(id=item_id, image=image)
    return ParsedRow(fields=fields, image_bytes=data)
