"""Items: submit a batch (stored in chunks first, then queued), read one item's result or failure."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from mfpo.jobs import (
    ItemRejected,
    JobClosing,
    JobKeys,
    JobRecord,
    JobState,
    JobStore,
    Submission,
    SubmissionInterrupted,
)
from mfpo.jobs.intake import IntakeResult, read_image_reference, validate_item
from mfpo.stages.chunk import Chunk
from mfpo.stages.runner import TRANSIENT
from mfpo.storage.base import ObjectNotFound, StoreError
from services.gateway.deps import (
    DispatcherDep,
    JobDep,
    JobStateDep,
    JobStoreDep,
    PlatformDep,
    SettingsDep,
)
from services.gateway.schemas import (
    AUTHED_ERRORS,
    ItemAccepted,
    ItemList,
    ItemPublic,
    ItemRefused,
    ItemsCreate,
    ItemsInterrupted,
    ItemsResult,
    ItemSummary,
    errors,
)

router = APIRouter(prefix="/v1/jobs/{job_id}/items", tags=["items"],
                   responses={**AUTHED_ERRORS, **errors(409)})

URL_TTL = timedelta(hours=1)


def items_result(result: IntakeResult) -> ItemsResult:
    return ItemsResult(accepted=[ItemAccepted(index=i, id=v) for i, v in result.accepted],
                       rejected=[ItemRefused(index=i, error=e) for i, e in result.rejected],
                       unprocessed=result.unprocessed)


def interrupted(exc: SubmissionInterrupted) -> JSONResponse:
    """503 + Retry-After with what was decided before the store or broker failed (a retry is idempotent)."""
    body = ItemsInterrupted(detail=f"the store or broker failed mid-submission ({exc.reason}); items in "
                                   "'accepted' and 'rejected' are settled, send the 'unprocessed' ones again",
                            **items_result(exc.result).model_dump())
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})


def count(request: Request, result: ItemsResult) -> None:
    metrics = request.app.state.resources
    metrics.items_accepted.inc(len(result.accepted))
    metrics.items_rejected.inc(len(result.rejected))


@router.post("", responses={503: {"model": ItemsInterrupted, "description": "Store or broker failed mid-way."}})
def submit_items(body: ItemsCreate, request: Request, job: JobDep, jobs: JobStoreDep, state: JobStateDep,
                 dispatcher: DispatcherDep, settings: SettingsDep, platform: PlatformDep) -> Any:
    """Accept a batch: each item is validated and stored (in chunks), then queued; per-item answers.

    Sending the same batch again is harmless: items already stored with the same content are answered
    accepted again, and nothing is stored twice."""
    if job.closed_at is not None:
        raise HTTPException(409, f"job {job.id} is closed; create a new job for more items")
    if len(body.items) > settings.max_items_per_request:
        raise HTTPException(413, f"{len(body.items)} items in one request; the limit is "
                                 f"{settings.max_items_per_request} (max_items_per_request)")
    limits = settings.intake_limits()
    try:
        with Submission(jobs, state, dispatcher, job, platform) as submission:
            for index, raw in enumerate(body.items):
                try:
                    item = validate_item(raw, limits)
                    data = image_bytes(jobs, job, item.image, submission, index)
                except ItemRejected as exc:
                    submission.reject(index, str(exc))
                    continue
                if data is not None:
                    submission.add(index, item, data)
            result = items_result(submission.finish())
    except JobClosing:
        raise HTTPException(409, f"job {job.id} is closed; create a new job for more items") from None
    except SubmissionInterrupted as exc:
        return interrupted(exc)
    count(request, result)
    return result


def image_bytes(jobs: JobStore, job: JobRecord, ref: str, submission: Submission, index: int) -> bytes | None:
    """The item's image bytes; a store failure interrupts the submission (None) instead of failing the item."""
    try:
        return read_image_reference(jobs, job, ref)
    except (StoreError, *TRANSIENT) as exc:
        submission.interrupt(exc, index)
        return None


MAX_CHUNKS_PER_PAGE = 32


@router.get("")
def list_items(job: JobDep, jobs: JobStoreDep, state: JobStateDep,
               status: Annotated[Literal["all", "queued", "running", "done", "failed"],
                                 Query(description="Only items in this state.")] = "all",
               limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
               after: Annotated[str | None, Query(pattern=r"^[0-9]{8}-[0-9a-f]{1,8}:[0-9]{1,5}$",
                                                  description="The previous page's next_after.")] = None,
               ) -> ItemList:
    """The job's items in submission order with their state (and failure reasons), a page at a time.

    A page reads at most 32 chunks (one object each), so it costs the same in a job of any size; with a filter,
    a page may hold fewer than ``limit`` items - follow ``next_after`` until it is null."""
    chunk_after, index_after = (after.rsplit(":", 1)[0], int(after.rsplit(":", 1)[1])) if after else (None, -1)
    out: list[ItemSummary] = []
    cursor: str | None = None
    resume = chunk_after is not None and state.chunk_state(chunk_after) is not None  # a cursor of this job
    chunks = ([chunk_after, *state.chunks_after(chunk_after, MAX_CHUNKS_PER_PAGE - 1)] if resume
              else state.chunks_after(chunk_after, MAX_CHUNKS_PER_PAGE))
    for chunk in chunks:
        for entry in chunk_items(jobs, job, state, chunk):
            if chunk == chunk_after and entry.index <= index_after:
                continue
            if status != "all" and entry.status != status:
                continue
            if len(out) == limit:
                return ItemList(items=out, next_after=cursor)
            out.append(entry)
            cursor = f"{chunk}:{entry.index}"
        cursor = f"{chunk}:99999"
    more = len(chunks) == MAX_CHUNKS_PER_PAGE
    return ItemList(items=out, next_after=cursor if more else None)


def chunk_items(jobs: JobStore, job: JobRecord, state: JobState, chunk: str) -> list[ItemSummary]:
    """A chunk's items with their state: from its outcomes when finished, else from its item list."""
    try:
        return [ItemSummary(id=o.id, index=o.index, status=o.status, failure=o.failure)
                for o in jobs.outcomes(job, chunk)]
    except ObjectNotFound:
        pass
    cs = state.chunk_state(chunk)
    status = "running" if cs is not None and cs.status == "running" else "queued"
    record = Chunk.model_validate_json(jobs.store.get(JobKeys(job.tenant, job.id).artifact(chunk, "items")))
    return [ItemSummary(id=i.id, index=i.index, status=status) for i in record.items]


@router.get("/{item_id}")
def get_item(item_id: str, job: JobDep, jobs: JobStoreDep, state: JobStateDep) -> ItemPublic:
    """The item's result record (with presigned URLs) or its failure; queued/running while unfinished."""
    chunk = state.item_chunk(item_id)
    if chunk is None:
        raise HTTPException(404, f"item {item_id!r} not found in job {job.id}")
    outcome = jobs.outcome(job, chunk, item_id)
    if outcome is None:
        cs = state.chunk_state(chunk)
        return ItemPublic(id=item_id, status="running" if cs is not None and cs.status == "running" else "queued")
    if outcome.status == "failed":
        return ItemPublic(id=item_id, status="failed", failure=outcome.failure)
    assert outcome.record is not None
    record = outcome.record.model_dump(mode="json")
    out = jobs.outputs(job)
    for field in ("image", "rejected_image", "mask"):
        record[f"{field}_url"] = out.url(record[field], URL_TTL)
    for negative in record.get("negatives", {}).values():  # each kind's image and mask
        negative["image_url"], negative["mask_url"] = out.url(negative["image"], URL_TTL), out.url(negative["mask"],
                                                                                                     URL_TTL)
    return ItemPublic(id=item_id, status="done", record=record)
