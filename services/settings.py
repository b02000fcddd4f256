"""One settings object for the gateway and the workers, read from ``MFPO_*`` environment variables.

``get_settings()`` is cached; tests override it (``app.dependency_overrides`` for the
gateway, environment variables for worker processes). Every limit on client input is
an explicit setting here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfpo.storage.base import ObjectStore


class Settings(BaseSettings):
    """Platform settings (environment variable = ``MFPO_`` + upper-case field name)."""

    model_config = SettingsConfigDict(env_prefix="MFPO_", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker (Redis) URL.")
    redis_password: SecretStr = Field(
        default=SecretStr(""),
        description="Redis password, put into redis_url (URL-quoted) when the URL has none: keeps the URL non-secret.",
    )
    queue_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Prefix of the Celery queue names ('{prefix}cpu', '{prefix}gpu'): deployments sharing a Redis.",
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3/MinIO 'host:port'; unset: a local folder store at store_dir."
    )
    s3_access_key: str = Field(default="", description="S3 access key id.")
    s3_secret_key: SecretStr = Field(default=SecretStr(""), description="S3 secret key.")
    s3_bucket: str = Field(default="mfpo", description="Bucket of the platform's records.")
    s3_secure: bool = Field(default=True, description="HTTPS to the S3 endpoint.")
    s3_create_bucket: bool = Field(default=False, description="Create the bucket at start-up when missing.")
    s3_public_endpoint: str | None = Field(
        default=None, description="'host:port' of the store as clients reach it (presigned URLs); unset: s3_endpoint."
    )
    s3_public_secure: bool | None = Field(default=None, description="HTTPS on s3_public_endpoint (unset: s3_secure).")
    store_dir: Path = Field(default=Path("mfpo-store"), description="Local object store folder (no S3 endpoint).")
    api_keys: SecretStr = Field(
        default=SecretStr(""), description="API keys as 'tenant:key,tenant:key' (secret; never logged)."
    )
    api_keys_file: Path | None = Field(
        default=None, description="File with one 'tenant:key' per line (e.g. a mounted Kubernetes secret)."
    )
    # -- limits on client input --------------------------------------------------------------
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Largest request body (413).")
    max_upload_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024, description="Largest uploaded file.")
    max_items_per_request: int = Field(default=1000, ge=1, description="Items in one POST .../items (413).")
    max_text_chars: int = Field(default=20_000, ge=1, description="Longest question/chosen/rejected (422).")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="Largest image, in pixels (per-item error).")
    rate_limit_per_minute: int = Field(default=600, ge=1, description="Requests per API key per minute (429).")
    # -- workers -------------------------------------------------------------------------------
    visibility_timeout_s: int = Field(
        default=3 * 3600, ge=60, description="Redis visibility timeout: longer than the longest task."
    )
    task_max_retries: int = Field(default=8, ge=0, description="Retries of a task on transient store errors.")
    retry_backoff_max_s: int = Field(default=120, ge=1, description="Longest wait between retries.")
    reconcile_interval_s: int = Field(
        default=600, ge=10, description="Period of the beat task that re-queues unfinished items of closed jobs."
    )
    beat_schedule_file: Path | None = Field(
        default=None,
        description="Celery beat's schedule file (default: in the temp folder, so a read-only root filesystem works).",
    )
    grounding_model: str | None = Field(default=None, description="GroundingDINO/OWLv2 folder for gpu workers.")
    sam_checkpoint: str | None = Field(default=None, description="SAM checkpoint for gpu workers.")
    sam_type: str = Field(default="vit_h", description="Architecture of sam_checkpoint.")

    def broker_url(self) -> str:
        """``redis_url`` with ``redis_password`` in it (URL-quoted), unless the URL already names a password."""
        password = self.redis_password.get_secret_value()
        parts = urlsplit(self.redis_url)
        if not password or parts.password is not None:
            return self.redis_url
        user, _, host = parts.netloc.rpartition("@")  # user is already URL-quoted in the URL
        netloc = f"{user}:{quote(password, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def tenant_keys(self) -> dict[str, str]:
        """API key -> tenant, from ``api_keys`` and ``api_keys_file``; malformed entries are an error."""
        entries = [e for e in self.api_keys.get_secret_value().split(",") if e.strip()]
        if self.api_keys_file is not None:
            entries += [line for line in self.api_keys_file.read_text().splitlines() if line.strip()]
        out: dict[str, str] = {}
        for entry in entries:
            tenant, sep, key = entry.strip().partition(":")
            if not sep or not tenant or len(key) < 8:
                raise ValueError("MFPO_API_KEYS entries must be 'tenant:key' with a key of 8+ characters")
            out[key] = tenant
        return out

    def open_store(self) -> ObjectStore:
        """The object store these settings name (S3 when an endpoint is set, else the local folder)."""
        if self.s3_endpoint:
            from mfpo.storage.s3 import S3Config, S3Store

            return S3Store(
                S3Config(
                    endpoint=self.s3_endpoint,
                    access_key=self.s3_access_key,
                    secret_key=self.s3_secret_key,
                    bucket=self.s3_bucket,
                    secure=self.s3_secure,
                    create_bucket=self.s3_create_bucket,
                    public_endpoint=self.s3_public_endpoint or None,
                    public_secure=self.s3_public_secure,
                )
            )
        from mfpo.storage.local import LocalStore

        return LocalStore(self.store_dir)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
