"""Records of the distributed platform, kept in the object store (the system of record).

A job groups items submitted by one tenant under one set of options
(:class:`~mfpo.pipeline.config.GenerateConfig`). Each item is written to the store
before it is queued (:class:`StoredItem`), and ends with exactly one
:class:`ItemOutcome` (``done`` with its result record, or ``failed`` with a reason).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from mfpo.ids import check_safe_id
from mfpo.pipeline.config import GenerateConfig
from mfpo.schemas import Failure, PreferenceItem


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

    @field_validator("id", "tenant")
    @classmethod
    def _safe(cls, v: str) -> str:
        return check_safe_id(v)


class StoredItem(BaseModel):
    """An accepted item as stored before queueing; its image bytes live at ``image_key``."""

    seq: int = Field(ge=0, description="Submission order within the job (dataset order).")
    item: PreferenceItem = Field(description="The item; ``item.id`` is set (given or content-derived).")
    image_key: str = Field(description="Store key of the original image bytes.")


class ItemOutcome(BaseModel):
    """How an item ended. Written after its outputs, so ``done`` implies a complete record."""

    item_id: str
    status: Literal["done", "failed"]
    record_key: str | None = Field(default=None, description="Key of the result record (done).")
    failure: Failure | None = Field(default=None, description="Why it failed (failed).")
    finished_at: datetime = Field(default_factory=utc_now)
