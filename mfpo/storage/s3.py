"""S3-compatible object store (MinIO, AWS S3, moto) on the ``minio`` client.

The distributed deployment keeps items and results in a bucket; this module maps the
:class:`~mfpo.storage.base.ObjectStore` contract onto it:

* keys are validated with :func:`~mfpo.storage.base.check_key` and stored under an
  optional key prefix inside the bucket;
* errors are translated: a missing object raises :class:`ObjectNotFound`, network
  failures, timeouts, HTTP 5xx and throttling raise :class:`StoreUnavailable`
  (transient, retry later), other S3 errors (access denied, missing bucket...) raise
  :class:`StoreError` with the server's code and message;
* the HTTP pool has short timeouts and a small retry budget, so a dead endpoint fails
  in seconds rather than the client's default of minutes.

A single S3 ``PUT`` is atomic: readers see either the old or the new object.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from pydantic import Field, SecretStr, field_validator

from mfpo.config import ComponentConfig
from mfpo.storage.base import ObjectNotFound, ObjectStore, StoreError, StoreUnavailable, check_key

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (without the dotted-IP rule)
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

#: S3 error codes that mean "try again later" even when the HTTP status is not 5xx.
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}
)
_RETRY_STATUSES = (500, 502, 503, 504)
_AUTH_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"})


class S3Config(ComponentConfig):
    """Where the bucket lives and how hard to try before giving up."""

    endpoint: str = Field(
        default="localhost:9000", description="S3 endpoint as 'host:port', without a scheme (see 'secure')."
    )
    access_key: str = Field(default="", description="Access key id; empty for anonymous access.")
    secret_key: SecretStr = Field(default=SecretStr(""), description="Secret access key (never printed).")
    bucket: str = Field(
        default="mfpo", description="Bucket name: 3-63 lowercase letters, digits, '.' or '-'."
    )
    secure: bool = Field(
        default=True, description="Use HTTPS; set false for a plain-HTTP MinIO on a private network."
    )
    region: str | None = Field(
        default="us-east-1",
        description="Bucket region, used for request signing; None asks the server (one extra request).",
    )
    prefix: str = Field(
        default="",
        description="Key prefix inside the bucket, e.g. 'runs/r1'; keys are stored as '<prefix>/<key>'.",
    )
    create_bucket: bool = Field(
        default=False, description="Create the bucket when it does not exist instead of raising an error."
    )
    public_endpoint: str | None = Field(
        default=None,
        description="'host:port' clients reach the store at, for presigned URLs (e.g. MinIO behind an ingress); "
        "None: the endpoint. The proxy in front must pass the Host header on.",
    )
    public_secure: bool | None = Field(
        default=None, description="HTTPS in presigned URLs of the public endpoint; None: same as 'secure'."
    )
    connect_timeout_s: float = Field(default=3.0, gt=0, description="Seconds to wait for a TCP connection.")
    read_timeout_s: float = Field(default=30.0, gt=0, description="Seconds to wait for response data.")
    max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="HTTP retries on connection errors, timeouts and 5xx before giving up.",
    )
    backoff_s: float = Field(
        default=0.2,
        ge=0,
        description="Base of the exponential backoff between retries (seconds, doubled each try).",
    )
    pool_size: int = Field(default=10, ge=1, description="Maximum pooled HTTP connections to the endpoint.")
    multipart_part_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Part size of multipart uploads of files (datasets): the memory an upload holds at once.",
    )

    @field_validator("endpoint", "public_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "://" in value or "/" in value or not value:
            raise ValueError(
                f"endpoint must be 'host:port' without scheme or path, got {value!r}; "
                "e.g. endpoint='localhost:9000' with secure=False for http://localhost:9000"
            )
        return value

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not _BUCKET_NAME.fullmatch(value) or ".." in value:
            raise ValueError(
                f"invalid bucket name {value!r}: use 3-63 lowercase letters, digits, '.' or '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value:
            check_key(value)
        return value


def make_http_client(config: S3Config) -> urllib3.PoolManager:
    """A bounded urllib3 pool: short timeouts, ``max_retries`` tries with exponential backoff.

    ``Retry-After`` headers are ignored so the worst-case latency of a call stays bounded by
    roughly ``(max_retries + 1) * (connect_timeout_s + read_timeout_s)`` plus the backoff.
    """
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s),
        maxsize=config.pool_size,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=config.max_retries,
            backoff_factor=config.backoff_s,
            status_forcelist=_RETRY_STATUSES,
            respect_retry_after_header=False,
        ),
    )


def classify_error(exc: Exception, what: str) -> StoreError:
    """Translate a ``minio``/``urllib3`` exception into the store's error hierarchy.

    ``what`` describes the failed operation for the message, e.g. ``"get 'a/b.png'"``.
    """
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        detail = f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return ObjectNotFound(f"{what}: no such object")
        if exc.code in TRANSIENT_CODES or status >= 500:
            return StoreUnavailable(f"{what}: S3 server is unavailable ({detail}, HTTP {status})")
        hint = "; check access_key/secret_key and the bucket policy" if exc.code in _AUTH_CODES else ""
        return StoreError(f"{what}: S3 request failed ({detail}, HTTP {status}){hint}")
    if isinstance(exc, (ServerError, InvalidResponseError)):
        status = exc.status_code if isinstance(exc, ServerError) else exc._code
        if status >= 500:
            return StoreUnavailable(f"{what}: S3 server error (HTTP {status}): {exc}")
        return StoreError(f"{what}: unexpected S3 response (HTTP {status}): {exc}")
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return StoreUnavailable(f"{what}: S3 endpoint unreachable: {exc}")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


_TRANSLATED = (
    S3Error,
    ServerError,
    InvalidResponseError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


class S3Store(ObjectStore):
    """Objects in an S3 bucket; key ``k`` is stored as ``<prefix>/k``.

    Construction checks that the bucket exists (creating it when ``create_bucket`` is
    set) and so fails fast: :class:`StoreError` for a missing bucket or refused
    credentials, :class:`StoreUnavailable` when the endpoint cannot be reached.
    """

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.client = Minio(
            config.endpoint,
            access_key=config.access_key or None,
            secret_key=config.secret_key.get_secret_value() or None,
            secure=config.secure,
            region=config.region or None,
            http_client=make_http_client(config),
        )
        self.url_client = self.client
        if config.public_endpoint:
            # Presigning is local computation when the region is known: this client never sends a request.
            self.url_client = Minio(
                config.public_endpoint,
                access_key=config.access_key or None,
                secret_key=config.secret_key.get_secret_value() or None,
                secure=config.secure if config.public_secure is None else config.public_secure,
                region=config.region or "us-east-1",
            )
        self._prefix = f"{config.prefix}/" if config.prefix else ""
        self._ensure_bucket()

    def __repr__(self) -> str:
        scheme = "https" if self.config.secure else "http"
        return f"S3Store({scheme}://{self.config.endpoint}/{self.config.bucket}/{self._prefix})"

    @property
    def bucket(self) -> str:
        return self.config.bucket

    def object_name(self, key: str) -> str:
        """The bucket object name of ``key`` (validated, prefixed)."""
        return self._prefix + check_key(key)

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except _TRANSLATED as exc:
            error = classify_error(exc, what)
            if isinstance(exc, S3Error) and exc.code == "NoSuchBucket":
                error = StoreError(self._missing_bucket_message())
            raise error from exc

    def _missing_bucket_message(self) -> str:
        scheme = "https" if self.config.secure else "http"
        return (
            f"bucket {self.bucket!r} does not exist at endpoint {scheme}://{self.config.endpoint}; "
            "create it, or set create_bucket=True (MFPO_S3_CREATE_BUCKET=true for the platform)"
        )

    def _ensure_bucket(self) -> None:
        with self._translate(f"check bucket {self.bucket!r}"):
            if self.client.bucket_exists(self.bucket):
                return
        if not self.config.create_bucket:
            raise StoreError(self._missing_bucket_message())
        try:
            with self._translate(f"create bucket {self.bucket!r}"):
                self.client.make_bucket(self.bucket, location=self.config.region or None)
        except StoreError as exc:  # another process may have created it in between
            cause = exc.__cause__
            if not (isinstance(cause, S3Error) and cause.code == "BucketAlreadyOwnedByYou"):
                raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        name = self.object_name(key)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"put {key!r}: data must be bytes, got {type(data).__name__}")
        with self._translate(f"put {key!r}"):
            self.client.put_object(self.bucket, name, io.BytesIO(data), len(data), content_type=content_type)

    def get(self, key: str) -> bytes:
        name = self.object_name(key)
        with self._translate(f"get {key!r}"):
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        name = self.object_name(key)
        try:
            with self._translate(f"stat {key!r}"):
                self.client.stat_object(self.bucket, name)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[str]:
        # S3 lists keys in UTF-8 byte order, which equals str order for the ASCII keys check_key allows.
        after = None if start_after is None else self._prefix + start_after
        with self._translate(f"list {prefix!r}"):
            for obj in self.client.list_objects(self.bucket, prefix=self._prefix + prefix, recursive=True,
                                                start_after=after):
                name = obj.object_name
                if name is not None and not obj.is_dir:
                    yield name[len(self._prefix) :]

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"range of {key!r}: offset and length must be >= 0, got {offset}, {length}")
        if length == 0:
            return b""
        name = self.object_name(key)
        with self._translate(f"get {key!r} bytes {offset}+{length}"):
            response = self.client.get_object(self.bucket, name, offset=offset, length=length)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str = "application/octet-stream") -> None:
        """Upload a file in parts of ``multipart_part_bytes`` (multipart above one part): memory stays bounded."""
        name = self.object_name(key)
        with self._translate(f"put {key!r} from a file"):
            self.client.fput_object(self.bucket, name, os.fspath(path), content_type=content_type,
                                    part_size=self.config.multipart_part_bytes)

    def copy(self, source: str, target: str) -> None:
        """Server-side copy (no bytes through this process)."""
        from minio.commonconfig import CopySource

        with self._translate(f"copy {source!r} to {target!r}"):
            self.client.copy_object(self.bucket, self.object_name(target),
                                    CopySource(self.bucket, self.object_name(source)))

    def delete(self, key: str) -> None:
        name = self.object_name(key)
        with self._translate(f"delete {key!r}"):
            self.client.remove_object(self.bucket, name)

    def url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A presigned ``GET`` URL valid for ``expires`` (1 second to 7 days), on the public endpoint if set."""
        name = self.object_name(key)
        if not timedelta(seconds=1) <= expires <= timedelta(days=7):
            raise ValueError(f"presigned URL expiry must be between 1 second and 7 days, got {expires}")
        with self._translate(f"presign {key!r}"):
            return self.url_client.presigned_get_object(self.bucket, name, expires=expires)
