"""Request and response bodies of the v1 API (Create = what a client sends, Public = what it gets)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mfpo.schemas import Failure


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="A name for the job.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Generation options (keywords, regions.mode, perturbation.noise_step, seed, limits ...); "
        "model paths are deployment settings and cannot be set here.",
    )


class JobCounts(BaseModel):
    submitted: int
    queued: int
    running: int
    done: int
    failed: int


class JobPublic(BaseModel):
    id: str
    name: str
    options: dict[str, Any]
    created_at: datetime
    closed_at: datetime | None
    status: Literal["open", "processing", "finished"] = Field(
        description="open: accepts items; processing: closed, items unfinished; finished: dataset ready."
    )
    counts: JobCounts
    progress: float = Field(description="Finished items / submitted items (0 when none).")
    items_per_second: float = Field(description="Finished items per second since the job was created.")
    eta_seconds: float | None = Field(description="Estimated seconds to finish the submitted items.")


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] = Field(description="Native-format items; images as data: URIs or store://uploads/NAME.")


class ItemAccepted(BaseModel):
    index: int
    id: str


class ItemRefused(BaseModel):
    index: int
    error: str


class ItemsResult(BaseModel):
    accepted: list[ItemAccepted]
    rejected: list[ItemRefused]


class ItemPublic(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    record: dict[str, Any] | None = Field(default=None, description="Result record; image fields are URLs.")
    failure: Failure | None = None


class ErrorPublic(BaseModel):
    """Every error answer: ``{"detail": "<what is wrong, for a person>"}``."""

    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error status codes (all with :class:`ErrorPublic`)."""
    text = {
        400: "The body could not be parsed.",
        401: "Missing or invalid API key.",
        404: "No such job or item for this tenant.",
        409: "The job is closed, or not finished yet.",
        413: "Body, upload or batch over a configured limit.",
        422: "Invalid request: the detail says which field and why.",
        429: "Rate limit exceeded; see Retry-After.",
        503: "The object store or broker is unavailable; see Retry-After.",
    }
    return {code: {"model": ErrorPublic, "description": text[code]} for code in codes}


AUTHED_ERRORS = errors(400, 401, 404, 413, 422, 429, 503)
"""Errors any authenticated route can answer."""
