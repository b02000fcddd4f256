"""Request and response bodies of the v1 API (Create = what a client sends, Public = what it gets)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

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
    status: Literal["open", "closing", "processing", "finished", "cancelled"] = Field(
        description="open: accepts items; closing: close asked, submissions still in flight; processing: closed, "
        "items unfinished; finished: dataset ready; cancelled: stopped, no dataset."
    )
    cancelled_at: datetime | None = None
    counts: JobCounts
    progress: float = Field(description="Finished items / submitted items (0 when none).")
    items_per_second: float = Field(description="Items finished per second recently (status_rate_window_s).")
    eta_seconds: float | None = Field(
        description="Seconds to finish the submitted items at the recent rate (null until a rate is known)."
    )
    stages: dict[str, int] = Field(
        default_factory=dict,
        description="Items each stage ran on ('{stage}') and skipped as already done ('{stage}:skipped').",
    )


class JobDeleted(BaseModel):
    id: str
    detail: str


class ItemSummary(BaseModel):
    id: str
    index: int = Field(description="Position in the submission it came in (the row of an upload).")
    status: Literal["queued", "running", "done", "failed"]
    failure: Failure | None = None


class ItemList(BaseModel):
    items: list[ItemSummary]
    next_after: str | None = Field(description="Cursor of the next page (the 'after' parameter); null: last page.")


class UploadedObject(BaseModel):
    ref: str = Field(description="What an item's image field names: store://uploads/NAME.")
    bytes: int
    width: int
    height: int


class JobList(BaseModel):
    jobs: list[JobPublic]
    next_after: str | None = Field(description="Cursor of the next page (the 'after' parameter); null: last page.")


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/PreferenceItem"})]] = Field(
        description="Native-format items (PreferenceItem); images as data: URIs or store://uploads/NAME. Each item is "
        "checked on its own: a malformed one is answered in 'rejected' with the reason, the others go on.",
        examples=[[{
            "id": "cup-0001",
            "image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ"
                     "/pLvAAAAAElFTkSuQmCC",
            "question": "What is on the table?",
            "chosen": "A red cup stands on a wooden table.",
            "rejected": "A blue bowl and a cat are on the table.",
            "annotations": [{"label": "red cup", "box": [0, 0, 1, 1]}],
        }]],
    )


class ItemAccepted(BaseModel):
    index: int
    id: str


class ItemRefused(BaseModel):
    index: int
    error: str


class ItemsResult(BaseModel):
    accepted: list[ItemAccepted]
    rejected: list[ItemRefused]
    unprocessed: list[int] = Field(
        default_factory=list,
        description="Indexes not handled because the store or broker failed (503): send them again.",
    )


class ItemsInterrupted(ItemsResult):
    """A 503 body: the reason, and the per-item answers decided before the failure."""

    detail: str


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


class UploadForm(BaseModel):
    """The multipart form of ``POST /v1/jobs/{id}/uploads`` (documentation of the request body)."""

    file: bytes = Field(json_schema_extra={"format": "binary"},
                        description="Items: .jsonl, .json or .parquet in a format the readers know.")
    images: bytes | None = Field(default=None, json_schema_extra={"format": "binary"},
                                 description="Optional zip of the images the rows name by relative path.")
    format: str | None = Field(default=None, description="Force the input format (default: detected).")
