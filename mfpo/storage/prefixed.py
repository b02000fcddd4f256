"""A view of an object store under a key prefix (``jobs/acme/j1/out/`` + key)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from mfpo.storage.base import ObjectStore, check_key


class PrefixedStore(ObjectStore):
    """Every key is stored as ``prefix/key`` in ``inner``; ``list`` yields keys without the prefix."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = check_key(prefix.strip("/"))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}"

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.inner.put(self._key(key), data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(self._key(key))

    def exists(self, key: str) -> bool:
        return self.inner.exists(self._key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        cut = len(self.prefix) + 1
        for key in self.inner.list(f"{self.prefix}/{prefix}"):
            yield key[cut:]

    def delete(self, key: str) -> None:
        self.inner.delete(self._key(key))

    def url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.inner.url(self._key(key), expires)
