"""Open an object store from a URI: a local folder or an S3 bucket.

Accepted forms:

* ``/data/mfpo``, ``./out``, ``file:///data/mfpo`` -> :class:`~mfpo.storage.local.LocalStore`;
* ``s3://bucket`` or ``s3://bucket/some/prefix`` -> :class:`~mfpo.storage.s3.S3Store`.

The endpoint and credentials of an ``s3://`` URI come from the ``MFPO_S3_*`` environment
variables (:class:`~mfpo.storage.settings.S3Settings`, the one place they are parsed), so they
never appear in command lines or logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from mfpo.storage.base import ObjectStore
from mfpo.storage.local import LocalStore


def open_store(
    uri: str | os.PathLike[str],
    *,
    create_bucket: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ObjectStore:
    """Open the store named by ``uri`` (see the module docstring for the accepted forms).

    ``create_bucket`` creates a missing S3 bucket instead of failing; ``environ``
    replaces ``os.environ`` as the source of the ``MFPO_S3_*`` settings.
    """
    if isinstance(uri, os.PathLike):
        return LocalStore(uri)
    if not uri:
        raise ValueError("store URI is empty; give a folder path, file:///path or s3://bucket/prefix")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # plain path (or a Windows drive letter)
        return LocalStore(Path(uri).expanduser())
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI {uri!r} names host {parts.netloc!r}; use file:///absolute/path")
        return LocalStore(url2pathname(parts.path))
    if scheme == "s3":
        from mfpo.storage.s3 import S3Config, S3Store  # the minio client is only needed here
        from mfpo.storage.settings import S3Settings

        if not parts.netloc:
            raise ValueError(f"S3 URI {uri!r} has no bucket; use s3://bucket or s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ValueError(f"S3 URI {uri!r} must not have a query or fragment")
        settings = S3Settings() if environ is None else S3Settings.from_environ(environ)
        config: S3Config = settings.store_config(bucket=parts.netloc, prefix=unquote(parts.path),
                                                 create_bucket=create_bucket or settings.create_bucket)
        return S3Store(config)
    raise ValueError(
        f"unsupported store URI scheme {parts.scheme!r} in {uri!r}; use a path, file:// or s3://"
    )
