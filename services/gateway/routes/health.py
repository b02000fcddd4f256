"""Open routes: liveness, readiness (Redis and the store answer), Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.deps import PlatformDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis or the store is not answering"}})
def readyz(request: Request, platform: PlatformDep) -> JSONResponse:
    """Ready when the broker and the object store both answer (503 otherwise, with which failed and why)."""
    import redis

    checks: dict[str, str] = {}
    try:
        redis.Redis.from_url(platform.broker_url(), socket_connect_timeout=2, socket_timeout=2).ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}: {exc}"
    try:
        request.app.state.resources.jobs().store.exists("readyz-probe")
        checks["store"] = "ok"
    except Exception as exc:  # any store failure means not ready; the reason (a missing bucket...) is shown
        checks["store"] = f"unavailable: {type(exc).__name__}: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    """Prometheus metrics of this gateway process."""
    return Response(generate_latest(request.app.state.resources.registry), media_type=CONTENT_TYPE_LATEST)
