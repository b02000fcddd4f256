"""Dependencies of the routes, as ``Annotated`` aliases (the full-stack template's style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mfpo.jobs import Dispatcher, JobNotFound, JobRecord, JobState, JobStore
from mfpo.jobs.settings import PlatformSettings
from services.gateway.settings import GatewaySettings

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def get_settings_from_app(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


SettingsDep = Annotated[GatewaySettings, Depends(get_settings_from_app)]


def get_platform_from_app(request: Request) -> PlatformSettings:
    platform: PlatformSettings = request.app.state.platform
    return platform


PlatformDep = Annotated[PlatformSettings, Depends(get_platform_from_app)]


def get_job_store(request: Request) -> JobStore:
    jobs: JobStore = request.app.state.resources.jobs()
    return jobs


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.resources.dispatcher()
    return dispatcher


DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def get_tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None
) -> str:
    """The tenant :class:`~services.gateway.auth.AuthFirst` authenticated (keys, limits: there, before the body is
    read); ``credentials`` declares the Bearer scheme in OpenAPI."""
    tenant: str | None = getattr(request.state, "tenant", None)
    if tenant is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


def get_job(job_id: str, tenant: TenantDep, jobs: JobStoreDep) -> JobRecord:
    """The tenant's job; 404 for a missing job and for another tenant's (never 403)."""
    try:
        return jobs.get_job(tenant, job_id)
    except JobNotFound:
        raise HTTPException(404, f"job {job_id!r} not found") from None


JobDep = Annotated[JobRecord, Depends(get_job)]


def get_job_state(job: JobDep, request: Request) -> JobState:
    state: JobState = request.app.state.resources.state(job)
    return state


JobStateDep = Annotated[JobState, Depends(get_job_state)]


def get_state_factory(request: Request) -> Callable[[JobRecord], JobState]:
    factory: Callable[[JobRecord], JobState] = request.app.state.resources.state
    return factory


JobStateFactory = Annotated[Callable[[JobRecord], JobState], Depends(get_state_factory)]
