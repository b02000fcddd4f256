"""Where the S3/MinIO store is and how to reach it: one settings class for every process.

The CLI (``s3://`` URIs of ``mfpo train``/``export``), the gateway, the workers and the trainer read
the same ``MFPO_S3_*`` variables through :class:`S3Settings`; nothing else parses them.

========================  =====================================================  ==============
variable                  meaning                                                default
========================  =====================================================  ==============
``MFPO_S3_ENDPOINT``      ``host:port`` of the S3/MinIO server                   none (local)
``MFPO_S3_ACCESS_KEY``    access key id                                          anonymous
``MFPO_S3_SECRET_KEY``    secret access key                                      anonymous
``MFPO_S3_BUCKET``        the platform's bucket (``s3://`` URIs name their own)  ``mfpo``
``MFPO_S3_SECURE``        HTTPS on/off (``true``/``false``, ``1``/``0``, ...)    ``true``
``MFPO_S3_REGION``        bucket region (empty: ask the server)                  ``us-east-1``
``MFPO_S3_CREATE_BUCKET`` create a missing bucket at start-up                    ``false``
``MFPO_S3_PUBLIC_ENDPOINT`` ``host:port`` clients reach (presigned URLs)         the endpoint
``MFPO_S3_PUBLIC_SECURE`` HTTPS in presigned URLs                                as ``SECURE``
========================  =====================================================  ==============
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MFPO_S3_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class S3Settings(BaseSettings):
    """The ``MFPO_S3_*`` variables (environment variable = ``MFPO_S3_`` + upper-case field name)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    endpoint: str | None = Field(
        default=None, description="S3/MinIO 'host:port' (no scheme); unset: no S3 (the platform uses a local folder)."
    )
    access_key: str = Field(default="", description="S3 access key id; empty for anonymous access.")
    secret_key: SecretStr = Field(default=SecretStr(""), description="S3 secret key (never printed).")
    bucket: str = Field(default="mfpo", description="Bucket of the platform's records (s3:// URIs name their own).")
    secure: bool = Field(default=True, description="HTTPS to the endpoint; false for plain-HTTP MinIO.")
    region: str | None = Field(
        default="us-east-1", description="Bucket region for request signing; empty asks the server (one request)."
    )
    create_bucket: bool = Field(default=False, description="Create the bucket at start-up when it is missing.")
    public_endpoint: str | None = Field(
        default=None, description="'host:port' of the store as clients reach it (presigned URLs); unset: endpoint."
    )
    public_secure: bool | None = Field(default=None, description="HTTPS on public_endpoint (unset: as secure).")

    @field_validator("secure", "create_bucket", "public_secure", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        """Booleans from the environment: a word we do not know is an error, never ``False``."""
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            if lowered == "":
                return None
            raise ValueError(f"{value!r} is not a boolean; use one of {sorted(_TRUE | _FALSE)}")
        return value

    @field_validator("endpoint", "public_endpoint", "region", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> S3Settings:
        """Settings from ``environ`` alone (not the process environment); errors name the variable."""
        values = {
            name: environ[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in environ
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0])
            message = str(first["msg"]).removeprefix("Value error, ")
            raw = repr(values.get(name))
            detail = message if message.startswith(raw) else f"{raw}: {message}"
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={detail}") from None

    def store_config(self, bucket: str | None = None, prefix: str = "", create_bucket: bool | None = None) -> Any:
        """The :class:`~mfpo.storage.s3.S3Config` of these settings (``bucket``/``prefix`` override)."""
        from mfpo.storage.s3 import S3Config

        if not self.endpoint:
            raise ValueError(
                f"an s3:// store needs the endpoint in {ENV_PREFIX}ENDPOINT ('host:port', e.g. localhost:9000); "
                f"credentials go in {ENV_PREFIX}ACCESS_KEY/{ENV_PREFIX}SECRET_KEY, and {ENV_PREFIX}SECURE=false "
                "selects plain HTTP"
            )
        return S3Config(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            bucket=bucket or self.bucket,
            secure=self.secure,
            region=self.region,
            prefix=prefix,
            create_bucket=self.create_bucket if create_bucket is None else create_bucket,
            public_endpoint=self.public_endpoint,
            public_secure=self.public_secure,
        )
