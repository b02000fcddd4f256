"""The gateway application: ``create_app(settings)`` wires routers, limits, errors and metrics.

Run it with ``mfpo serve`` (uvicorn). Every client error is a 4xx with a readable
``detail``: request bodies over ``max_body_bytes`` get 413 before they are read in full,
schema errors 422, unknown routes 404; an unexpected exception is logged and answered
500 without internals.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfpo.jobs import JobStore
from mfpo.storage.base import StoreUnavailable
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import datasets, health, items, jobs, uploads
from services.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Resources:
    """What routes share, created on first use: the store, the Celery client, keys, limiter, metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._jobs: JobStore | None = None
        self._celery: Celery | None = None
        self._keys = settings.tenant_keys()  # malformed keys fail at start-up
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
        self.registry = CollectorRegistry()
        self.requests = Counter("mfpo_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("mfpo_http_request_seconds", "Request latency", ["route"], registry=self.registry)
        self.items_accepted = Counter("mfpo_items_accepted", "Items accepted", registry=self.registry)
        self.items_rejected = Counter("mfpo_items_rejected", "Items rejected", registry=self.registry)

    def tenant_keys(self) -> dict[str, str]:
        return self._keys

    def jobs(self) -> JobStore:
        with self._lock:
            if self._jobs is None:
                self._jobs = JobStore(self.settings.open_store())
            return self._jobs

    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                from worker.app import create_celery

                self._celery = create_celery(self.settings)
            return self._celery


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit (by Content-Length, or while streaming).

    File uploads (paths ending in ``/uploads``) get ``upload_limit``, everything else ``limit``.
    """

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app = app
        self.body_limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"].rstrip("/").endswith("/uploads") else self.body_limit
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reject(limit, scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _reject(limit, scope, receive, send)


async def _reject(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": f"request body over {limit} bytes"}, 413)
    await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="MFPO platform",
        version="1",
        description="Modality-fair preference data: submit items, get rejected images and a dataset.",
    )
    app.state.settings = settings
    app.state.resources = Resources(settings)
    for router in (health.router, jobs.router, items.router, uploads.router, datasets.router):
        app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(errors)[:2000]}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("object store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the object store is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        resources: Resources = request.app.state.resources
        resources.requests.labels(request.method, route, str(response.status_code)).inc()
        resources.latency.labels(route).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    return app
