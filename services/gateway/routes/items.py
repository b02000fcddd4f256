"""Items: submit a batch (stored first, then queued), read one item's result or failure."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from mfpo.jobs import ItemRejected, JobKeys, accept_item
from services.gateway.deps import CeleryDep, JobDep, JobStoreDep, SettingsDep
from services.gateway.schemas import (
    AUTHED_ERRORS,
    ItemAccepted,
    ItemPublic,
    ItemRefused,
    ItemsCreate,
    ItemsResult,
    errors,
)
from worker.client import enqueue_item

router = APIRouter(prefix="/v1/jobs/{job_id}/items", tags=["items"],
                   responses={**AUTHED_ERRORS, **errors(409)})

TEXT_FIELDS = ("question", "chosen", "rejected")
URL_TTL = timedelta(hours=1)


@router.post("")
def submit_items(
    body: ItemsCreate, request: Request, job: JobDep, jobs: JobStoreDep, celery: CeleryDep, settings: SettingsDep
) -> ItemsResult:
    """Accept a batch: each item is validated and written to the store, then queued; per-item errors."""
    if job.closed_at is not None:
        raise HTTPException(409, f"job {job.id} is closed; create a new job for more items")
    if len(body.items) > settings.max_items_per_request:
        raise HTTPException(413, f"{len(body.items)} items in one request; the limit is "
                                 f"{settings.max_items_per_request} (max_items_per_request)")
    accepted, rejected = [], []
    base = len(jobs.item_ids(job))
    metrics = request.app.state.resources
    for index, raw in enumerate(body.items):
        try:
            too_long = [f for f in TEXT_FIELDS if isinstance(raw, dict) and isinstance(raw.get(f), str)
                        and len(raw[f]) > settings.max_text_chars]
            if too_long:
                raise ItemRejected(f"{', '.join(too_long)} longer than {settings.max_text_chars} characters")
            item_id = accept_item(jobs, job, raw, seq=base + index)
        except ItemRejected as exc:
            rejected.append(ItemRefused(index=index, error=str(exc)))
            metrics.items_rejected.inc()
            continue
        enqueue_item(celery, job.tenant, job.id, item_id)
        accepted.append(ItemAccepted(index=index, id=item_id))
        metrics.items_accepted.inc()
    return ItemsResult(accepted=accepted, rejected=rejected)


def _with_urls(record: dict[str, Any], jobs: Any, job: Any) -> dict[str, Any]:
    out = jobs.outputs(job)
    for field in ("image", "rejected_image", "mask"):
        record[f"{field}_url"] = out.url(record[field], URL_TTL)
    return record


@router.get("/{item_id}")
def get_item(item_id: str, job: JobDep, jobs: JobStoreDep) -> ItemPublic:
    """The item's result record (with presigned URLs) or its failure; queued/running while unfinished."""
    try:
        jobs.get_item(job, item_id)
    except LookupError:
        raise HTTPException(404, f"item {item_id!r} not found in job {job.id}") from None
    outcome = jobs.get_outcome(job, item_id)
    if outcome is None:
        started = any(True for _ in jobs.store.list(f"{JobKeys(job.tenant, job.id).root}/work/{item_id}/"))
        return ItemPublic(id=item_id, status="running" if started else "queued")
    if outcome.status == "failed":
        return ItemPublic(id=item_id, status="failed", failure=outcome.failure)
    assert outcome.record_key is not None
    record = json.loads(jobs.outputs(job).get(outcome.record_key))
    return ItemPublic(id=item_id, status="done", record=_with_urls(record, jobs, job))
