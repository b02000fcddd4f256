"""The job record, kept in the object store (the system of record): ``tenants/{t}/jobs/{j}/job.json``.

A job groups items submitted by one tenant under one set of options
(:class:`~mfpo.pipeline.config.GenerateConfig`). Its items are stored in chunks before any task
is queued (:mod:`mfpo.jobs.intake`), and every item ends with exactly one outcome in its chunk's
``outcomes/{chunk}.jsonl`` (:class:`~mfpo.stages.artifacts.Outcome`): ``done`` with its record, or
``failed`` with a reason.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field, field_validator

from mfpo.ids import check_safe_id
from mfpo.pipeline.config import GenerateConfig


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class JobRecord(BaseModel):
    """One job: its owner, name, options and life-cycle times."""

    id: str = Field(description="Job id (random, url-safe).")
    tenant: str = Field(description="Owner; a tenant never sees another tenant's jobs.")
    name: str = Field(min_length=1, max_length=200, description="Human-readable name.")
    options: GenerateConfig = Field(description="Options every item of the job is generated with.")
    created_at: datetime = Field(default_factory=utc_now)
    closed_at: datetime | None = Field(default=None, description="Set by close: no more items accepted.")
    cancelled_at: datetime | None = Field(
        default=None, description="Set by cancel: no more work is done and no dataset is written."
    )

    @field_validator("id", "tenant")
    @classmethod
    def _safe(cls, v: str) -> str:
        return check_safe_id(v)
