"""Authentication before anything else: keys, failed-attempt limits, request limits, signed gallery links.

:class:`AuthFirst` is ASGI middleware in front of every ``/v1/`` route: it decides from the headers
alone, so an unauthenticated request is answered 401 before a byte of its body is read (no 300 MB
upload spooled for nothing). Limits live in Redis through the ``limits`` package (a moving window),
so every gateway replica counts against the same budget and a restart resets nothing:

* ``rate_limit_per_minute`` requests per API key (429 + Retry-After);
* ``auth_failures_per_minute`` failed authentications per client address: past it, the address gets
  429 for the rest of the window, valid key or not (key guessing costs a minute per few tries).

A gallery page can also be opened with a signed link (``?token=``), issued to an authenticated call:
an HMAC over tenant, job and expiry, so a browser needs no Bearer header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

GALLERY_PATH = re.compile(r"^/v1/jobs/(?P<job>[A-Za-z0-9._-]+)/gallery$")


@dataclass(frozen=True)
class Denied:
    status: int
    detail: str
    headers: dict[str, str]


class RateLimits:
    """Request and failed-authentication limits, counted in Redis (``limits``, moving window)."""

    def __init__(self, redis_url: str, namespace: str, per_key_per_minute: int, failures_per_minute: int) -> None:
        from limits import parse
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        storage = RedisStorage(redis_url.replace("redis://", "redis://", 1), key_prefix=f"mfpo:{namespace}limits")
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_key = parse(f"{per_key_per_minute}/minute")
        self._failures = parse(f"{failures_per_minute}/minute")

    @staticmethod
    def _wait(reset_time: float) -> int:
        return max(1, int(reset_time - time.time() + 0.999))

    def hit_key(self, key: str) -> int:
        """Count a request of this API key; seconds to wait (0: allowed). The key itself is not stored."""
        name = "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]
        if self._limiter.hit(self._per_key, name):
            return 0
        return self._wait(self._limiter.get_window_stats(self._per_key, name).reset_time)

    def client_blocked(self, client: str) -> int:
        """Seconds this client address must wait after too many failed authentications (0: not blocked)."""
        if self._limiter.test(self._failures, f"fail:{client}"):
            return 0
        return self._wait(self._limiter.get_window_stats(self._failures, f"fail:{client}").reset_time)

    def count_failure(self, client: str) -> None:
        self._limiter.hit(self._failures, f"fail:{client}")


class GalleryLinks:
    """Short-lived signed links to a job's gallery: ``token`` = payload.signature (HMAC-SHA256)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.secret, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, tenant: str, job_id: str, ttl_s: float) -> tuple[str, float]:
        expires = time.time() + ttl_s
        payload = json.dumps([tenant, job_id, round(expires)], separators=(",", ":")).encode()
        token = base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)
        return token, round(expires)

    def check(self, token: str, job_id: str) -> str | None:
        """The tenant the token was issued to for ``job_id``, or None (forged, other job, expired)."""
        try:
            body, signature = token.split(".", 1)
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if not hmac.compare_digest(signature, self._sign(payload)):
                return None
            tenant, job, expires = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if job != job_id or not isinstance(tenant, str) or not isinstance(expires, int) or expires < time.time():
            return None
        return tenant


class Authenticator:
    """Who is asking: a tenant, or a denial (401 / 429) with its reason."""

    def __init__(self, keys: dict[str, str], limits: RateLimits, links: GalleryLinks) -> None:
        self.keys = keys
        self.limits = limits
        self.links = links

    def tenant_of_key(self, key: str) -> str | None:
        tenant = None
        for known, owner in self.keys.items():  # compare with every key: no timing hint of a near miss
            if secrets.compare_digest(known.encode(), key.encode()):
                tenant = owner
        return tenant

    def authenticate(self, scope: Scope) -> str | Denied:
        client = (scope.get("client") or ("unknown", 0))[0]
        match = GALLERY_PATH.fullmatch(scope["path"])
        if match is not None:
            token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[-1]
            if token is not None:
                tenant = self.links.check(token, match.group("job"))
                if tenant is not None:
                    return tenant
        blocked = self.limits.client_blocked(client)
        if blocked:
            return Denied(429, f"too many failed authentications from this address; retry in {blocked} s",
                          {"Retry-After": str(blocked)})
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not key.strip():
            return Denied(401, "missing API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        tenant = self.tenant_of_key(key.strip())
        if tenant is None:
            self.limits.count_failure(client)
            return Denied(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
        wait = self.limits.hit_key(key.strip())
        if wait:
            return Denied(429, f"rate limit exceeded; retry in {wait} s", {"Retry-After": str(wait)})
        return tenant


class AuthFirst:
    """ASGI middleware: every ``/v1/`` request is authenticated from its headers before its body is read."""

    def __init__(self, app: ASGIApp, resources: Any) -> None:
        self.app = app
        self.resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        try:
            result = await run_in_threadpool(self.resources.authenticator().authenticate, scope)
        except Exception as exc:  # Redis away: the limits cannot be checked
            import redis

            if not isinstance(exc, redis.RedisError):
                raise
            response = JSONResponse({"detail": "the broker (Redis) is unavailable; retry shortly"}, 503,
                                    headers={"Retry-After": "5"})
            await response(scope, receive, send)
            return
        if isinstance(result, Denied):
            await JSONResponse({"detail": result.detail}, result.status, headers=result.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = result
        await self.app(scope, receive, send)
