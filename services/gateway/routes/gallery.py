"""The gallery of a finished job: one page of one filter of the written dataset at a time.

A page costs the same in a job of any size: one range read of the filter's index
(``dataset/gallery-index.bin``, :mod:`mfpo.pipeline.dataset_index`), the page's lines of
``dataset.jsonl`` (or ``failures.jsonl``) in a few range reads (close lines in one), and a 24-byte
range read of each record's mask PNG for its size (which places the region boxes; none for a
fallback record, whose global region is the image). An id search reads the job state (the item's
chunk) and that chunk's outcomes, as ``GET .../items/{id}`` does. Image URLs are presigned for the
lifetime of a signed link, so a page opened from one never outlives its images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from mfpo.gallery import Navigation, known_size, png_size, render_gallery_page
from mfpo.jobs import JobKeys, JobRecord, JobState, JobStore
from mfpo.pipeline.dataset import DatasetStats
from mfpo.pipeline.dataset_index import INDEX_FILE, VIEW_LABELS, read_view
from mfpo.schemas import Failure, ResultRecord
from mfpo.storage.base import ObjectNotFound
from services.gateway.deps import JobDep, JobStateDep, JobStoreDep, SettingsDep
from services.gateway.routes.datasets import require_finished
from services.gateway.schemas import AUTHED_ERRORS, ErrorPublic, errors

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["gallery"], responses={**AUTHED_ERRORS, **errors(409)})

PAGE_SIZES = (25, 50, 100, 200)
"""Page sizes the gallery offers (any size from 1 to the last is accepted)."""

READERS = 8
"""Concurrent range reads per page (records' line ranges and mask headers)."""

DEFAULTS: dict[str, object] = {"view": "all", "per": 100, "layout": "cards", "page": 1}
"""The query parameters' defaults (left out of the page's links)."""

Layout = Literal["cards", "thumbs"]
Mapper = Callable[..., Iterator[Any]]


class GalleryLink(BaseModel):
    url: str = Field(description="The gallery's first page, openable in a browser without an Authorization header.")
    token: str = Field(description="The signed token in the URL (valid for this job only).")
    expires_at: float = Field(description="Unix time the link and its pages' image URLs stop working.")


@router.post("/gallery-link")
def gallery_link(job: JobDep, jobs: JobStoreDep, request: Request, settings: SettingsDep) -> GalleryLink:
    """A short-lived signed link to the job's gallery, for a browser (which sends no Bearer header)."""
    require_finished(jobs, job)
    links = request.app.state.resources.authenticator().links
    token, expires = links.issue(job.tenant, job.id, settings.gallery_link_ttl_s)
    return GalleryLink(url=f"/v1/jobs/{job.id}/gallery?{urlencode({'token': token})}", token=token, expires_at=expires)


def dataset_page(jobs: JobStore, job: JobRecord, stats: DatasetStats, page: int) -> list[ResultRecord]:
    """The records of one page of ``stats.page_offsets``, read with one range request on the manifest (a
    dataset written before the filters' index existed)."""
    offset, length = stats.page_range(page)
    if length == 0:
        return []
    data = jobs.store.get_range(JobKeys(job.tenant, job.id).manifest, offset, length)
    return [ResultRecord.model_validate_json(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def view_page(jobs: JobStore, job: JobRecord, stats: DatasetStats, view: str, first: int, count: int,
              map_fn: Mapper = map) -> list[ResultRecord | Failure]:
    """Entries ``[first, first + count)`` of filter ``view``: one range read of the index, then the lines."""
    keys = JobKeys(job.tenant, job.id)
    files = {"dataset.jsonl": keys.manifest, "failures.jsonl": f"{keys.dataset}/failures.jsonl",
             INDEX_FILE: f"{keys.dataset}/{INDEX_FILE}"}
    return read_view(lambda name, offset, length: jobs.store.get_range(files[name], offset, length), stats.views,
                     view, first, count, map_fn=map_fn)


def image_sizes(jobs: JobStore, job: JobRecord, records: list[ResultRecord],
                map_fn: Mapper = map) -> dict[str, tuple[int, int] | None]:
    """Each record's image size: from its regions where they hold it, else from its mask PNG's first 24 bytes."""
    outputs = jobs.outputs(job)

    def size(record: ResultRecord) -> tuple[int, int] | None:
        known = known_size(record)
        if known is not None:
            return known
        try:
            return png_size(outputs.get_range(record.mask, 0, 24))
        except (ObjectNotFound, ValueError):
            return None

    return dict(zip([r.id for r in records], map_fn(size, records), strict=True))


@router.get("/gallery", response_class=Response,
            responses={200: {"description": "The gallery page", "content": {"text/html": {}}},
                       404: {"model": ErrorPublic, "description": "No such job (JSON), or no such page, filter or "
                             "item (a page saying so)", "content": {"text/html": {}}}})
def get_gallery(
    job: JobDep, jobs: JobStoreDep, settings: SettingsDep, state: JobStateDep,
    page: Annotated[int, Query(ge=1, description="1-based page.")] = 1,
    view: Annotated[str, Query(pattern=r"^[a-z0-9-]{1,40}$", description="The filter: " + ", ".join(
        f"{name} ({label})" for name, label in VIEW_LABELS.items()) + ".")] = "all",
    per: Annotated[int, Query(ge=1, le=PAGE_SIZES[-1], description="Cards per page.")] = 100,  # DEFAULTS
    layout: Annotated[Layout, Query(description="Cards, or a grid of thumbnails.")] = "cards",
    item: Annotated[str | None, Query(alias="id", max_length=512,
                                      description="Show this item only (done or failed), found by its id.")] = None,
    token: Annotated[str | None, Query(description="A signed link's token (instead of a Bearer key).")] = None,
) -> HTMLResponse:
    """The job's gallery, a page of a filter at a time: per item the rejected image over the original (blink
    switch), the mask with per-keyword boxes, the texts with the answers' differences marked; failed rows
    with their reasons; filters, page sizes, thumbnails and an id search. Image URLs are presigned."""
    require_finished(jobs, job)
    stats = DatasetStats.model_validate_json(jobs.store.get(JobKeys(job.tenant, job.id).stats))
    outputs = jobs.outputs(job)
    ttl = timedelta(seconds=settings.gallery_link_ttl_s)  # the images live as long as the page's link

    @cache
    def link(rel: str) -> str:  # the original appears twice on a card: presign it once
        return outputs.url(rel, ttl)

    def href(**changes: object) -> str:
        """This gallery's URL with ``changes`` (a new filter, size or page; page 1 unless given), defaults left out."""
        params = {"view": view, "per": per, "layout": layout, "page": 1, **changes}
        query = {k: v for k, v in params.items() if DEFAULTS[k] != v}
        return "?" + urlencode({**query, **({"token": token} if token else {})})

    indexed = bool(stats.views)
    per = per if indexed else stats.page_size  # an old dataset pages by its page offsets only
    nav = Navigation(
        page_href=lambda k: href(page=k + 1),
        view_href=lambda v: href(view=v),
        page_sizes=[(size, href(per=size)) for size in PAGE_SIZES] if indexed else (),
        search=True, search_token=token,
    )
    title = f"MFPO job {job.name}"
    with ThreadPoolExecutor(READERS, thread_name_prefix="mfpo-gallery") as pool:
        if item:
            return _item_page(jobs, job, state, stats, item, title, link, nav, layout, pool.map)
        if indexed:
            if view not in stats.views:
                return _not_found(stats, title, link, nav, layout, f"this job's dataset has no filter {view!r}")
            pages = max(1, math.ceil(stats.views[view].count / per))
            if page > pages:
                raise HTTPException(404, f"page {page} does not exist (1-{pages})")
            items = view_page(jobs, job, stats, view, (page - 1) * per, per, pool.map)
        else:
            if view != "all":
                return _not_found(stats, title, link, nav, layout, "this job's dataset was written before the "
                                  "gallery's filters existed; only view=all is available")
            pages = max(1, len(stats.page_offsets))
            try:
                items = list(dataset_page(jobs, job, stats, page - 1))
            except ValueError as exc:
                raise HTTPException(404, str(exc)) from None
        records = [r for r in items if isinstance(r, ResultRecord)]
        sizes = image_sizes(jobs, job, records, pool.map)
    html = render_gallery_page(items, title, link, stats, nav, view=view, page=page - 1, pages=pages, per=per,
                               sizes=sizes, layout=layout, first_number=(page - 1) * per)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _item_page(jobs: JobStore, job: JobRecord, state: JobState, stats: DatasetStats, item: str, title: str,
               link: Callable[[str], str], nav: Navigation, layout: Layout, map_fn: Mapper) -> HTMLResponse:
    """One item's card, found through the job state (its chunk) and the chunk's outcomes."""
    chunk = state.item_chunk(item)
    outcome = jobs.outcome(job, chunk, item) if chunk is not None else None
    if outcome is None:
        return _not_found(stats, title, link, nav, layout, f"no item {item!r} in this job")
    found: ResultRecord | Failure | None = outcome.record if outcome.status == "done" else outcome.failure
    if found is None:
        return _not_found(stats, title, link, nav, layout, f"no item {item!r} in this job")
    sizes = image_sizes(jobs, job, [found], map_fn) if isinstance(found, ResultRecord) else {}
    html = render_gallery_page([found], title, link, stats, nav, view="", sizes=sizes, layout=layout,
                               notice=f"item {item}")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _not_found(stats: DatasetStats, title: str, link: Callable[[str], str], nav: Navigation,
               layout: Layout, notice: str) -> HTMLResponse:
    """A gallery page that says what was not found (404), with the filters and the search to go on from."""
    html = render_gallery_page([], title, link, stats, nav, view="", layout=layout, notice=notice)
    return HTMLResponse(html, status_code=404, headers={"Cache-Control": "no-store"})
