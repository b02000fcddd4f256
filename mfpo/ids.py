"""Content-derived identifiers.

Item ids and output keys are hashes of content, so re-running the same item with
the same options writes the same keys (idempotent, resumable) and different
options never overwrite each other.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_safe_id(value: str) -> str:
    """Return ``value`` if it is safe as a file/object key component, else raise.

    Allowed: letters, digits, ``.``, ``_``, ``-``; 1-128 characters; not starting
    with a dot or dash (no ``..``, no ``/``: ids never escape their folder).
    """
    if not _SAFE_ID.fullmatch(value) or ".." in value:  # fullmatch: "$" would let a trailing newline in
        raise ValueError(
            f"id {value!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def digest(*parts: bytes | str, length: int = 16) -> str:
    """Hex sha256 of the parts (length-prefixed, so part boundaries matter)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def item_id(image_bytes: bytes, question: str, chosen: str, rejected: str) -> str:
    """Content id of an item without an explicit id: hash of image bytes and texts."""
    return digest(image_bytes, question, chosen, rejected)


def options_key(options: dict[str, Any]) -> str:
    """Short hash of generation options (canonical JSON), part of every output key."""
    return digest(json.dumps(options, sort_keys=True, separators=(",", ":")), length=12)


def seed_for(item: str, options_key_: str, seed: int) -> int:
    """Per-item 63-bit noise seed from the item id, the options key and the run seed."""
    return int(digest(item, options_key_, str(seed), length=16), 16) & ((1 << 63) - 1)
