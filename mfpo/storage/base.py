"""The object-store interface: the system of record for items and results.

Keys are ``/``-separated relative paths such as ``rejected/ab12-cd34.png``.
Every store validates keys with :func:`check_key`, so a key can never escape the
store's root (no absolute paths, no ``..``, no backslashes).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import timedelta

_KEY_PART = re.compile(r"^[A-Za-z0-9_.=+-]+$")
MAX_KEY_LENGTH = 512


class StoreError(Exception):
    """Base of object-store errors."""


class ObjectNotFound(StoreError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "object not found"


class StoreUnavailable(StoreError):
    """A transient failure (network, server 5xx, throttling): retrying may succeed."""


class InvalidKey(StoreError, ValueError):
    """The key is not a safe relative object key."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKey`."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key must be 1-{MAX_KEY_LENGTH} characters, got {len(key)}")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _KEY_PART.fullmatch(part):  # not match + "$": "a\n" would pass
            raise InvalidKey(
                f"object key {key!r} is not allowed: use '/'-separated parts of letters, "
                "digits and '_.=+-', with no empty, '.' or '..' parts"
            )
    return key


class ObjectStore(ABC):
    """Put/get bytes by key. Implementations: local folder and S3 (MinIO)."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write ``data`` at ``key`` atomically (readers never see a partial object)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes at ``key``; raise :class:`ObjectNotFound` if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True if an object is stored at ``key``."""

    @abstractmethod
    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        """Yield the keys that start with ``prefix``, in lexicographic order (after ``start_after`` if given).

        Only for paths whose size does not grow with a job (indexes, a job's chunk list in recovery and
        finalize): never call it per item or per request on a job's objects.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is absent."""

    @abstractmethod
    def url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL a client can fetch the object from (presigned for S3, file:// locally)."""

    # -- operations with a generic implementation; stores override them where the backend does better --

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``key`` from byte ``offset`` (fewer at the end of the object)."""
        if offset < 0 or length < 0:
            raise ValueError(f"range of {key!r}: offset and length must be >= 0, got {offset}, {length}")
        return self.get(key)[offset : offset + length]

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        """Write the file at ``path`` to ``key`` atomically; large files stream (memory stays bounded)."""
        with open(path, "rb") as fh:
            self.put(key, fh.read(), content_type)

    def copy(self, source: str, target: str) -> None:
        """Copy the object at ``source`` to ``target`` (server-side where the backend can)."""
        self.put(target, self.get(source))
