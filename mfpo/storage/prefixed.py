"""A view of an object store under a key prefix (``jobs/acme/j1/out/`` + key)."""

from __future__ import annotations

import os
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

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        cut = len(self.prefix) + 1
        after = None if start_after is None else f"{self.prefix}/{start_after}"
        for key in self.inner.list(f"{self.prefix}/{prefix}", after):
            yield key[cut:]

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(self._key(key), offset, length)

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        self.inner.put_file(self._key(key), path, content_type)

    def copy(self, source: str, target: str) -> None:
        self.inner.copy(self._key(source), self._key(target))

    def delete(self, key: str) -> None:
        self.inner.delete(self._key(key))

    def url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.inner.url(self._key(key), expires)
