"""The gateway's own settings (the HTTP API: keys, request limits), read from ``MFPO_*`` variables once.

Everything else (broker, store, chunks, timing) is the platform's
(:class:`~mfpo.jobs.settings.PlatformSettings`), shared with the workers. Every limit on client
input is an explicit setting here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfpo.jobs.intake import IntakeLimits


class GatewaySettings(BaseSettings):
    """Gateway settings (environment variable = ``MFPO_`` + upper-case field name)."""

    model_config = SettingsConfigDict(env_prefix="MFPO_", extra="ignore")

    api_keys: SecretStr = Field(
        default=SecretStr(""), description="API keys as 'tenant:key,tenant:key' (secret; never logged)."
    )
    api_keys_file: Path | None = Field(
        default=None, description="File with one 'tenant:key' per line (e.g. a mounted Kubernetes secret)."
    )
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Largest request body (413).")
    max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1024, description="Largest uploaded file, and largest sum of a zip's members."
    )
    max_items_per_request: int = Field(default=1000, ge=1, description="Items in one POST .../items (413).")
    max_text_chars: int = Field(default=20_000, ge=1, description="Longest question/chosen/rejected (per-item 422).")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="Largest image, in pixels (per-item error).")
    max_working_pixels: int = Field(
        default=16_777_216, ge=1,
        description="Default and largest limits.max_working_pixels of a job: the image size the stages work on, "
        "which bounds a worker's memory per item.",
    )
    rate_limit_per_minute: int = Field(default=600, ge=1, description="Requests per API key per minute (429).")
    status_rate_window_s: float = Field(
        default=120.0, gt=0, description="Window of the recent completion rate behind a job's items/s and ETA."
    )

    def intake_limits(self) -> IntakeLimits:
        return IntakeLimits(max_text_chars=self.max_text_chars)

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


@lru_cache(maxsize=1)
def get_gateway_settings() -> GatewaySettings:
    return GatewaySettings()
