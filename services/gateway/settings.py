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

DEFAULT_OPTION_BOUNDS: dict[str, float] = {
    "keywords.max_phrase_words": 6,  # candidates grow with the phrase length (graph size ~ n^2)
    "keywords.max_iter": 1000,  # PageRank iterations
    "keywords.top_k": 10,  # keywords -> regions -> masks per item
    "keywords.extra_stopwords": 500,  # list length
    "perturbation.num_train_timesteps": 4000,  # schedule length
    "perturbation.model_resolution": 2048,  # the noise grid (model_resolution^2 x 3 floats)
    "png_compress_level": 6,  # 7-9 cost several times level 1 on noise, for ~no gain
    "negatives.kinds": 5,  # constructors per item
    "negatives.mdpo.output_size": 1024,  # the crop's square (output_size^2 x 3 bytes)
    "negatives.adavip.max_candidates": 16,  # one inpaint + one CLIP pass each
    "negatives.adavip.detect_labels": 200,  # detector queries per item
    "negatives.adavip.mask_dilation": 64,
    "negatives.adavip.max_sentences": 32,  # CLIP texts per item
    "negatives.adavip.fill.iterations": 500,  # Jacobi sweeps per level
    "negatives.adavip.diffusers.num_inference_steps": 50,  # UNet passes per fill
    "negatives.adavip.diffusers.resolution": 1024,
    "negatives.mbpo.steps": 50,  # vision-tower forward + backward passes
    "negatives.mbpo.max_new_tokens": 512,  # generated tokens per item
}
"""Server-side bounds of the job options that cost time or memory (the gateway's default ``option_bounds``)."""


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
    option_bounds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_OPTION_BOUNDS),
        description="Largest value a job may give each option that costs worker time or memory (dotted path -> "
        "bound; for lists, their length), as JSON. Missing paths keep their default bound.",
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=1, description="Requests per API key per minute, counted in Redis across replicas (429)."
    )
    auth_failures_per_minute: int = Field(
        default=20, ge=1,
        description="Failed authentications per client address per minute; past it the address gets 429 for the "
        "rest of the minute (key guessing).",
    )
    link_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Key of the signed gallery links (the same on every replica); empty: derived from the API keys.",
    )
    gallery_link_ttl_s: int = Field(
        default=12 * 3600, ge=60, le=7 * 24 * 3600,
        description="Lifetime of a signed gallery link and of the presigned image URLs of its pages.",
    )
    status_rate_window_s: float = Field(
        default=120.0, gt=0, description="Window of the recent completion rate behind a job's items/s and ETA."
    )

    def link_key(self) -> bytes:
        """The HMAC key of gallery links: the setting, else a digest of the API keys (shared by every replica)."""
        import hashlib

        secret = self.link_secret.get_secret_value()
        if secret:
            return secret.encode()
        material = "\n".join(sorted(f"{t}:{k}" for k, t in self.tenant_keys().items()))
        return hashlib.sha256(b"mfpo-gallery-links\n" + material.encode()).digest()

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
