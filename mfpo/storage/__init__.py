"""Object storage behind one interface: local folder and S3/MinIO."""

from mfpo.storage.base import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StoreError,
    StoreUnavailable,
    check_key,
)
from mfpo.storage.local import LocalStore

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "StoreError",
    "StoreUnavailable",
    "check_key",
]
