"""Settings of the distributed platform (broker, store, chunks, timing), read once by gateway, workers and beat.

Environment variable = ``MFPO_`` + upper-case field name; the store's own variables are
``MFPO_S3_*`` (:class:`~mfpo.storage.settings.S3Settings`). ``get_platform_settings()`` parses
them once per process; the shells (``services/``, ``worker/``) take what they need from it and
never parse the environment themselves.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mfpo.pipeline.config import GenerateConfig
from mfpo.regions.config import RegionsConfig
from mfpo.storage.base import ObjectStore
from mfpo.storage.settings import S3Settings


class PlatformSettings(BaseSettings):
    """The platform's settings (environment variable = ``MFPO_`` + upper-case field name)."""

    model_config = SettingsConfigDict(env_prefix="MFPO_", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL: Celery broker and job state.")
    redis_password: SecretStr = Field(
        default=SecretStr(""),
        description="Redis password, put into redis_url (URL-quoted) when the URL has none: keeps the URL non-secret.",
    )
    queue_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Prefix of the Celery queue names ('{prefix}cpu', '{prefix}gpu') and of the job-state keys in "
        "Redis: deployments sharing a Redis.",
    )
    store_dir: Path = Field(default=Path("mfpo-store"), description="Local object store folder (no S3 endpoint).")
    s3: S3Settings = Field(default_factory=S3Settings, description="The S3 store (MFPO_S3_* variables).")
    # -- chunks ----------------------------------------------------------------------------------
    chunk_size: int = Field(
        default=64, ge=1, le=4096,
        description="Items per chunk: the unit of a task, of the store objects of a stage and of a model batch "
        "group. Larger chunks amortise per-task and per-object costs; smaller ones spread a small job over more "
        "workers.",
    )
    chunk_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Largest sum of image bytes in one chunk (a chunk closes early when the next image would pass "
        "it): bounds the memory a worker holds for one chunk.",
    )
    submit_threads: int = Field(
        default=4, ge=1, le=64,
        description="Chunks one submission writes to the store at once (a bounded thread pool per request).",
    )
    put_threads: int = Field(
        default=4, ge=1, le=64, description="Per-item output files a worker writes at once (bounded thread pool)."
    )
    # -- timing ----------------------------------------------------------------------------------
    heartbeat_interval_s: float = Field(
        default=10.0, gt=0, description="How often a worker running a stage refreshes the chunk's heartbeat."
    )
    overdue_after_s: float = Field(
        default=120.0, gt=0,
        description="A running stage whose heartbeat is older than this is overdue (its worker died): reconcile "
        "runs it again. Must exceed heartbeat_interval_s by a margin.",
    )
    queued_timeout_s: float = Field(
        default=6 * 3600.0, gt=0,
        description="A chunk queued longer than this without a worker starting it is dispatched again (a lost "
        "queue entry). Queued work is never re-dispatched before: long queues are normal at scale.",
    )
    submission_lease_s: float = Field(
        default=600.0, gt=0,
        description="How long a submission (POST or upload) may hold its item ids before they count as abandoned.",
    )
    close_wait_s: float = Field(
        default=30.0, ge=0, description="How long close waits for submissions still in flight before answering 409."
    )
    reconcile_interval_s: int = Field(
        default=60, ge=1,
        description="Period of the beat task that finds overdue work and lost state of every active job.",
    )
    finalize_prefetch: int = Field(
        default=8, ge=1, le=64, description="Chunk outcome files finalize reads ahead (bounded memory)."
    )
    dataset_row_group: int = Field(
        default=10_000, ge=1, description="Rows per Parquet row group of a job's dataset (finalize memory)."
    )
    item_time_limit_s: float = Field(
        default=120.0, gt=0,
        description="One item's work in one stage may take this long; past it the item fails with the reason and "
        "the chunk goes on. The task's hard time limit is this times chunk_size plus task_time_margin_s.",
    )
    task_time_margin_s: float = Field(
        default=300.0, gt=0, description="Added to item_time_limit_s x chunk_size for a task's hard time limit."
    )
    stage_max_attempts: int = Field(
        default=3, ge=1,
        description="Runs of one stage on one chunk before it gives up (its process keeps dying: hard time limit, "
        "out of memory): the chunk's unfinished items then fail with the reason.",
    )
    # -- Celery ----------------------------------------------------------------------------------
    visibility_timeout_s: int = Field(
        default=3 * 3600, ge=60, description="Redis visibility timeout: longer than the longest task."
    )
    task_max_retries: int = Field(default=8, ge=0, description="Retries of a task on transient store errors.")
    retry_backoff_max_s: int = Field(default=120, ge=1, description="Longest wait between retries.")
    beat_schedule_file: Path | None = Field(
        default=None,
        description="Celery beat's schedule file (default: in the temp folder, so a read-only root filesystem works).",
    )
    # -- models of the gpu workers ---------------------------------------------------------------
    grounding_model: str | None = Field(default=None, description="GroundingDINO/OWLv2 folder for gpu workers.")
    sam_checkpoint: str | None = Field(default=None, description="SAM checkpoint for gpu workers.")
    sam_type: str = Field(default="vit_h", description="Architecture of sam_checkpoint.")
    clip_model: str | None = Field(
        default=None, description="CLIP transformers folder for gpu workers: AdaViP's eq. 9 choice (negatives kind "
        "adavip needs it)."
    )
    inpainting_model: str | None = Field(
        default=None, description="diffusers inpainting pipeline folder for gpu workers: AdaViP's object removal "
        "(without it AdaViP uses the classical fill)."
    )
    policy_model: str | None = Field(
        default=None, description="LLaVA-1.5 transformers folder for gpu workers: the policy MBPO attacks and answers "
        "with (negatives kind mbpo needs it)."
    )

    def broker_url(self) -> str:
        """``redis_url`` with ``redis_password`` in it (URL-quoted), unless the URL already names a password."""
        password = self.redis_password.get_secret_value()
        parts = urlsplit(self.redis_url)
        if not password or parts.password is not None:
            return self.redis_url
        user, _, host = parts.netloc.rpartition("@")  # user is already URL-quoted in the URL
        netloc = f"{user}:{quote(password, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def models_configured(self) -> bool:
        return bool(self.grounding_model and self.sam_checkpoint)

    @property
    def gpu_workers(self) -> bool:
        """Whether this deployment runs gpu workers (any model of theirs is configured)."""
        return self.models_configured or bool(self.clip_model or self.inpainting_model or self.policy_model)

    def negative_kinds(self) -> list[str]:
        """The rejected-image kinds this deployment can make (adavip needs clip_model, mbpo policy_model)."""
        kinds = ["mfpo", "mdpo", "global"]
        return kinds + ["adavip"] * bool(self.clip_model) + ["mbpo"] * bool(self.policy_model)

    def deployment_negatives(self, negatives: dict[str, Any]) -> dict[str, Any]:
        """A job's ``negatives`` options (JSON) with this deployment's model paths put in (they are deployment
        settings, never job options); the kinds asked for must be among :meth:`negative_kinds`."""
        out = json.loads(json.dumps(negatives))
        kinds = out.get("kinds") or []

        def section(parent: dict[str, Any], name: str) -> dict[str, Any] | None:
            child = parent.setdefault(name, {})
            return child if isinstance(child, dict) else None  # not an object: the validation says so

        adavip = section(out, "adavip")
        if "adavip" in kinds and self.clip_model and adavip is not None:
            if (clip := section(adavip, "clip")) is not None:
                clip["model_path"] = self.clip_model
            if self.inpainting_model and (diffusers := section(adavip, "diffusers")) is not None:
                diffusers["model_path"] = self.inpainting_model
                adavip.setdefault("inpainter", "diffusers")
        mbpo = section(out, "mbpo")
        if "mbpo" in kinds and self.policy_model and mbpo is not None:
            mbpo["model_path"] = self.policy_model
        return out

    def stage_config(self, options: GenerateConfig, gpu: bool) -> GenerateConfig:
        """A job's options as a stage runs them: on a gpu worker with this deployment's models put in."""
        if not gpu:
            return options
        data = options.model_dump(mode="json")
        data["regions"] = self.job_regions(options.regions).model_dump(mode="json")
        data["negatives"] = self.deployment_negatives(data["negatives"])
        return GenerateConfig.model_validate(data)

    def job_regions(self, regions: RegionsConfig) -> RegionsConfig:
        """A job's region settings plus this deployment's models (model paths are deployment settings, never
        job options), for the stage that loads them."""
        if regions.mode in ("grounded", "auto") and self.models_configured:
            models = {
                "grounding": {"model_path": self.grounding_model},
                "sam": {"checkpoint": self.sam_checkpoint, "sam_type": self.sam_type},
            }
            return RegionsConfig.model_validate(regions.model_dump() | models)
        return regions

    def open_store(self) -> ObjectStore:
        """The object store these settings name (S3 when an endpoint is set, else the local folder)."""
        if self.s3.endpoint:
            from mfpo.storage.s3 import S3Store

            return S3Store(self.s3.store_config())
        from mfpo.storage.local import LocalStore

        return LocalStore(self.store_dir)

    def celery_config(self) -> dict[str, Any]:
        """Celery settings every shell applies to its app (workers and the gateway's sender alike)."""
        return {
            "broker_url": self.broker_url(),
            "mfpo_queue_prefix": self.queue_prefix,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_ignore_result": True,
            "task_default_queue": f"{self.queue_prefix}cpu",
            "task_serializer": "json",
            "accept_content": ["json"],
            "broker_transport_options": {"visibility_timeout": self.visibility_timeout_s},
            "broker_connection_retry_on_startup": True,
            "worker_hijack_root_logger": False,
            "task_track_started": False,
        }


def env_names(*classes: type[BaseSettings]) -> set[str]:
    """Every environment variable the given settings classes read (nested settings included)."""
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            nested = info.annotation
            if isinstance(nested, type) and issubclass(nested, BaseSettings):
                names |= env_names(nested)
            else:
                names.add(f"{prefix}{name}".upper())
    return names


@lru_cache(maxsize=1)
def get_platform_settings() -> PlatformSettings:
    """The process's platform settings, parsed once."""
    return PlatformSettings()
