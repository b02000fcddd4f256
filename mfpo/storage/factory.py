"""Open an object store from a URI: a local folder or an S3 bucket.

Accepted forms:

* ``/data/mfpo``, ``./out``, ``file:///data/mfpo`` -> :class:`~mfpo.storage.local.LocalStore`;
* ``s3://bucket`` or ``s3://bucket/some/prefix`` -> :class:`~mfpo.storage.s3.S3Store`.

The endpoint and credentials of an ``s3://`` URI come from the environment, so they
never appear in command lines or logs:

========================  =====================================================  ==========
variable                  meaning                                                default
========================  =====================================================  ==========
``MFPO_S3_ENDPOINT``      ``host:port`` of the S3/MinIO server (required)        --
``MFPO_S3_ACCESS_KEY``    access key id                                          anonymous
``MFPO_S3_SECRET_KEY``    secret access key                                      anonymous
``MFPO_S3_SECURE``        HTTPS on/off: ``1/true/yes/on`` or ``0/false/no/off``  ``true``
``MFPO_S3_REGION``        bucket region (empty: ask the server)                  ``us-east-1``
========================  =====================================================  ==========
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from mfpo.storage.base import ObjectStore
from mfpo.storage.local import LocalStore

ENV_ENDPOINT = "MFPO_S3_ENDPOINT"
ENV_ACCESS_KEY = "MFPO_S3_ACCESS_KEY"
ENV_SECRET_KEY = "MFPO_S3_SECRET_KEY"
ENV_SECURE = "MFPO_S3_SECURE"
ENV_REGION = "MFPO_S3_REGION"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean environment variable; anything unrecognised is an error, not ``False``."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean; use one of {sorted(_TRUE | _FALSE)}")


def s3_settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The :class:`~mfpo.storage.s3.S3Config` options given by ``MFPO_S3_*`` variables."""
    endpoint = environ.get(ENV_ENDPOINT, "").strip()
    if not endpoint:
        raise ValueError(
            f"an s3:// store needs the endpoint in {ENV_ENDPOINT} ('host:port', e.g. localhost:9000); "
            f"credentials go in {ENV_ACCESS_KEY}/{ENV_SECRET_KEY}, and {ENV_SECURE}=false selects plain HTTP"
        )
    settings: dict[str, Any] = {"endpoint": endpoint}
    if ENV_ACCESS_KEY in environ:
        settings["access_key"] = environ[ENV_ACCESS_KEY]
    if ENV_SECRET_KEY in environ:
        settings["secret_key"] = environ[ENV_SECRET_KEY]
    if ENV_SECURE in environ:
        settings["secure"] = parse_bool(ENV_SECURE, environ[ENV_SECURE])
    if ENV_REGION in environ:
        settings["region"] = environ[ENV_REGION].strip() or None
    return settings


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

        if not parts.netloc:
            raise ValueError(f"S3 URI {uri!r} has no bucket; use s3://bucket or s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ValueError(f"S3 URI {uri!r} must not have a query or fragment")
        settings = s3_settings_from_env(os.environ if environ is None else environ)
        config = S3Config(
            bucket=parts.netloc,
            prefix=unquote(parts.path),
            create_bucket=create_bucket,
            **settings,
        )
        return S3Store(config)
    raise ValueError(
        f"unsupported store URI scheme {parts.scheme!r} in {uri!r}; use a path, file:// or s3://"
    )
