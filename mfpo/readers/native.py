"""The native format: one JSON object per line, the fields of a PreferenceItem.

``{"id"?, "image", "question", "chosen", "rejected", "annotations"?}`` where
``annotations`` is a list of ``{"label", "box": [x0, y0, x1, y1]}`` or
``{"label", "polygon": [[x, y], ...]}`` in pixels of the original image. A relative
``image`` path is relative to the JSONL file's folder. Unknown keys are refused
(a typo such as ``"rejcted"`` must not pass unnoticed); an ``id`` must already be
safe (:func:`mfpo.ids.check_safe_id`).
"""

from __future__ import annotations

from pathlib import Path

from mfpo.readers.base import ParsedRow, Row, resolve_reference


def parse_native_row(row: Row, index: int, base_dir: Path) -> ParsedRow:
    """The row as item fields, with a relative image path made absolute."""
    fields = dict(row)
    image = fields.get("image")
    if isinstance(image, str):
        fields["image"] = resolve_reference(image, base_dir)
    return ParsedRow(fields=fields)
