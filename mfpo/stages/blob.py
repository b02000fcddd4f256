"""The ``images`` artifact: a chunk's original image bytes in one object (a stored, uncompressed zip).

One object per chunk instead of one per item keeps the store's request count per item low;
zip is a format every tool opens (``unzip -l`` lists a chunk), members are the item ids, and
the bytes are kept exactly as submitted (images are already compressed: no deflate).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable


def pack_images(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """Zip (stored) of ``(item id, image bytes)`` pairs, in order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: same input, same bytes
            zf.writestr(info, data)
    return buf.getvalue()


class ImageBlob:
    """Read access to a packed chunk: ``blob[item_id]`` is that item's original image bytes."""

    def __init__(self, data: bytes) -> None:
        self._zip = zipfile.ZipFile(io.BytesIO(data))

    def __getitem__(self, item_id: str) -> bytes:
        try:
            return self._zip.read(item_id)
        except KeyError:
            raise KeyError(f"no image for item {item_id!r} in the chunk") from None

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_id in self._zip.NameToInfo

    def names(self) -> list[str]:
        return self._zip.namelist()
