"""The gallery of a finished job: one page of the written dataset at a time (never the per-item objects)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from mfpo.gallery import render_gallery_page
from mfpo.jobs import JobKeys, JobRecord, JobStore
from mfpo.pipeline.dataset import DatasetStats
from mfpo.schemas import ResultRecord
from services.gateway.deps import JobDep, JobStoreDep, SettingsDep
from services.gateway.routes.datasets import require_finished
from services.gateway.schemas import AUTHED_ERRORS, errors

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["gallery"], responses={**AUTHED_ERRORS, **errors(409)})

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
    """The records of one page, read with one range request on the manifest (never the whole dataset)."""
    offset, length = stats.page_range(page)
    if length == 0:
        return []
    data = jobs.store.get_range(JobKeys(job.tenant, job.id).manifest, offset, length)
    return [ResultRecord.model_validate_json(line) for line in data.decode("utf-8").splitlines() if line.strip()]


@router.get("/gallery", response_class=Response,
            responses={200: {"description": "The gallery page", "content": {"text/html": {}}}})
def get_gallery(job: JobDep, jobs: JobStoreDep, settings: SettingsDep,
                page: int = Query(1, ge=1, description="1-based page."),
                token: str | None = Query(None, description="A signed link's token (instead of a Bearer key)."),
                ) -> HTMLResponse:
    """The job's gallery (original, rejected image and mask per item; presigned image URLs), a page at a time."""
    require_finished(jobs, job)
    stats = DatasetStats.model_validate_json(jobs.store.get(JobKeys(job.tenant, job.id).stats))
    try:
        records = dataset_page(jobs, job, stats, page - 1)
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from None
    outputs = jobs.outputs(job)
    ttl = timedelta(seconds=settings.gallery_link_ttl_s)  # the images live as long as the page's link
    html = render_gallery_page(
        records,
        f"MFPO job {job.name}",
        link=lambda rel: outputs.url(rel, ttl),
        page_href=lambda k: f"?{urlencode({'page': k + 1, **({'token': token} if token else {})})}",
        stats=stats,
        page=page - 1,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
