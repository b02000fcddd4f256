"""Local-folder object store: the embedded pipeline's default."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from mfpo.storage.base import ObjectNotFound, ObjectStore, check_key


class LocalStore(ObjectStore):
    """Objects are files under ``root``; keys map to relative paths.

    Writes go to a temporary file in the same folder and are renamed into place,
    so a killed process never leaves a partial object behind.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Filesystem path of ``key`` (validated, always inside ``root``)."""
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        with open(path, "rb") as src:
            self._write(key, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))

    def copy(self, source: str, target: str) -> None:
        try:
            self.put_file(target, self.path(source))
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at key {source!r}") from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"range of {key!r}: offset and length must be >= 0, got {offset}, {length}")
        try:
            with self.path(key).open("rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at key {key!r}") from None

    def _write(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        """Write through a temporary file in the target's folder, then rename it into place (atomic).

        Files get the permissions a plain ``open()`` would give under the process umask (``mkstemp``
        alone would make them 0600, unreadable to a web server or a training job under another uid).
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object at key {key!r}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        """Keys under ``prefix``: only the folder the prefix names is walked, not the whole store."""
        folder, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        if folder:
            check_key(folder)
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix) and (start_after is None or rel > start_after):
                    keys.append(rel)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.path(key).as_uri()


@lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: setting it to read it is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
