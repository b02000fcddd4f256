"""Dependencies of the routes, as ``Annotated`` aliases (the full-stack template's style)."""

from __future__ import annotations

import secrets
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, HTTPException, Request

from mfpo.jobs import JobNotFound, JobRecord, JobStore
from services.settings import Settings


def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


def get_job_store(request: Request) -> JobStore:
    jobs: JobStore = request.app.state.resources.jobs()
    return jobs


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]


def get_celery(request: Request) -> Celery:
    app: Celery = request.app.state.resources.celery()
    return app


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant of the request's bearer key: 401 without a valid key, 429 over the rate limit."""
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    key = authorization.removeprefix("Bearer ").strip()
    tenant = None
    for known, owner in request.app.state.resources.tenant_keys().items():
        if secrets.compare_digest(known.encode(), key.encode()):
            tenant = owner
    if tenant is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    wait = request.app.state.resources.rate_limiter.check(key)
    if wait:
        raise HTTPException(429, f"rate limit exceeded; retry in {wait} s", headers={"Retry-After": str(wait)})
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


def get_job(job_id: str, tenant: TenantDep, jobs: JobStoreDep) -> JobRecord:
    """The tenant's job; 404 for a missing job and for another tenant's (never 403)."""
    try:
        return jobs.get_job(tenant, job_id)
    except JobNotFound:
        raise HTTPException(404, f"job {job_id!r} not found") from None


JobDep = Annotated[JobRecord, Depends(get_job)]
