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

import redis
from celery import Celery
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfpo.jobs import Dispatcher, JobRecord, JobState, JobStore
from mfpo.jobs.settings import PlatformSettings, get_platform_settings
from mfpo.jobs.state import StateLost
from mfpo.storage.base import StoreError, StoreUnavailable
from services.gateway.auth import Authenticator, AuthFirst, GalleryLinks, RateLimits
from services.gateway.routes import datasets, gallery, health, items, jobs, objects, uploads
from services.gateway.settings import GatewaySettings, get_gateway_settings

log = logging.getLogger(__name__)


class Resources:
    """What routes share, created on first use: store, Redis, Celery sender, keys, limiter, metrics."""

    def __init__(self, settings: GatewaySettings, platform: PlatformSettings) -> None:
        self.settings = settings
        self.platform = platform
        self._lock = threading.Lock()
        self._jobs: JobStore | None = None
        self._celery: Celery | None = None
        self._redis: Any = None
        self._keys = settings.tenant_keys()  # malformed keys fail at start-up
        self._authenticator: Authenticator | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter("mfpo_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("mfpo_http_request_seconds", "Request latency", ["route"], registry=self.registry)
        self.items_accepted = Counter("mfpo_items_accepted", "Items accepted", registry=self.registry)
        self.items_rejected = Counter("mfpo_items_rejected", "Items rejected", registry=self.registry)

    def tenant_keys(self) -> dict[str, str]:
        return self._keys

    def authenticator(self) -> Authenticator:
        with self._lock:
            if self._authenticator is None:
                limits = RateLimits(self.platform.broker_url(), self.platform.queue_prefix,
                                    self.settings.rate_limit_per_minute, self.settings.auth_failures_per_minute)
                self._authenticator = Authenticator(self._keys, limits, GalleryLinks(self.settings.link_key()))
            return self._authenticator

    def jobs(self) -> JobStore:
        with self._lock:
            if self._jobs is None:
                self._jobs = JobStore(self.platform.open_store())
            return self._jobs

    def celery(self) -> Celery:
        """A Celery client (sender only) configured like the workers, from the platform settings."""
        with self._lock:
            if self._celery is None:
                app = Celery("mfpo-gateway")
                app.conf.update(self.platform.celery_config())
                self._celery = app
            return self._celery

    def redis(self) -> Any:
        with self._lock:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(self.platform.broker_url(), socket_timeout=10,
                                                   socket_connect_timeout=3)
            return self._redis

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.celery(), self.platform.queue_prefix, self.platform.models_configured)

    def state(self, job: JobRecord) -> JobState:
        return JobState(self.redis(), self.platform.queue_prefix, job.tenant, job.id)


class JsonBodies:
    """ASGI middleware: a ``/v1/`` body sent as ``application/x-www-form-urlencoded`` (``curl -d`` without a
    Content-Type) is read as the JSON it is; no route takes form-encoded data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = [(k, b"application/json" if k == b"content-type"
                        and v.split(b";")[0].strip().lower() == b"application/x-www-form-urlencoded" else v)
                       for k, v in scope.get("headers") or []]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


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


def strict_query(request: Request) -> None:
    """Query parameters the route does not declare, or one given twice (``?page=1&page=2``: which one?), are a
    422 with the reason, not silently ignored or "the last one wins"."""
    route = request.scope.get("route")
    declared = {p.alias for p in route.dependant.query_params} if isinstance(route, APIRoute) else set()
    for deps in getattr(getattr(route, "dependant", None), "dependencies", []):
        declared |= {p.alias for p in deps.query_params}
    keys = [k for k, _ in request.query_params.multi_items()]
    unknown = sorted({k for k in keys if k not in declared})
    if unknown:
        raise HTTPException(422, f"unknown query parameter(s): {', '.join(map(repr, unknown))}")
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise HTTPException(422, f"query parameter(s) {', '.join(map(repr, repeated))} given more than once")


def add_item_schema(app: FastAPI) -> None:
    """Put the item schema (PreferenceItem and what it uses) into the OpenAPI components, where the items of
    ``POST .../items`` refer to it (they are validated one by one, so the body itself takes any list)."""
    from fastapi.openapi.utils import get_openapi

    from mfpo.schemas import PreferenceItem

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            item = PreferenceItem.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(item.pop("$defs", {}))
            components["PreferenceItem"] = item
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: GatewaySettings | None = None, platform: PlatformSettings | None = None) -> FastAPI:
    settings = settings or get_gateway_settings()
    platform = platform or get_platform_settings()
    app = FastAPIOffline(  # Swagger UI and ReDoc from the package, not a CDN: /docs works offline
        dependencies=[Depends(strict_query)],
        title="MFPO platform",
        version="1",
        description="Modality-fair preference data: submit items, get rejected images and a dataset.",
    )
    app.state.settings = settings
    app.state.platform = platform
    app.state.resources = Resources(settings, platform)
    for router in (health.router, jobs.router, items.router, uploads.router, objects.router, datasets.router,
                   gallery.router):
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

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("object store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"the object store refused the request: {exc}"}, status_code=503,
                            headers={"Retry-After": "30"})

    @app.exception_handler(StateLost)
    async def state_lost(request: Request, exc: StateLost) -> JSONResponse:
        log.warning("job state lost on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the job's state is being rebuilt from the store; retry shortly"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the broker (Redis) is unavailable; retry shortly"}, status_code=503,
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
    add_item_schema(app)
    app.add_middleware(JsonBodies)
    app.add_middleware(AuthFirst, resources=app.state.resources)  # outermost: no body is read before it
    return app
