"""RLAIF-V (``openbmb/RLAIF-V-Dataset``): image struct and plain text columns.

Layout, from the dataset card (``dataset_info`` and "Data fields" of README.md):
``ds_name`` (string), ``image`` (HF ``Image``: ``{bytes, path}`` struct, "Dict
contains path and bytes"), ``question``, ``chosen``, ``rejected``,
``origin_dataset``, ``origin_split``, ``idx``, ``image_path`` (all strings). Item id:
``"rlaifv-{idx}"``. The provenance columns (``ds_name``, ``origin_dataset``,
``origin_split``, ``idx``, ``image_path``) become the item's ``source``, so an RLAIF-V
export carries them back unchanged; a ``system`` column (an ``mfpo export --format
rlaifv`` file has one) is the item's system prompt. Other extra columns (e.g. its
``rejected_image`` and ``mfpo``) are ignored.
"""

from __future__ import annotations

from pathlib import Path

from mfpo.readers.base import ParsedRow, Row, RowError, dataset_id, image_field, provenance

TEXT_COLUMNS = ("question", "chosen", "rejected")


def parse_rlaifv_row(row: Row, index: int, base_dir: Path) -> ParsedRow:
    """Item fields from the text columns; image bytes from the ``image`` struct."""
    item_id = dataset_id("rlaifv", row.get("idx"))
    try:
        image, data = image_field(row.get("image"), index, base_dir)
    except RowError as exc:
        raise RowError(exc.reason, item_id=item_id) from exc
    fields = {key: row[key] for key in TEXT_COLUMNS if row.get(key) is not None}
    if isinstance(row.get("system"), str):
        fields["system"] = row["system"]
    fields.update(id=item_id, image=image, source=provenance(row))
    return ParsedRow(fields=fields, image_bytes=data)
