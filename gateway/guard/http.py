"""The gateway's front door: who may ask what, how many at once, and the headers of every answer.

Checks run once per request, when it arrives: a stream's messages are never
checked one by one. In order, before any handler runs:

1. `OPTIONS` from an allowed Origin is a CORS preflight, answered here.
2. Open requests per process and per client address are capped (`429`, or
   `503` when the process is full, both with `Retry-After`); `/healthz` and
   `/readyz` are exempt, so a full process still says it lives.
3. With `--auth-secret`, every API route but the OpenAPI document needs a
   token (`401` before anything else): `Authorization: Bearer`, the
   `buildcast_token` cookie, or `?token=` on the routes EventSource and
   WebSocket use (they cannot send headers). The handler then checks each
   build against the token's claim, after the id's own rule: `400` before
   `403` before `404`.

Every answer leaves with `nosniff`, `Referrer-Policy: no-referrer` and a
`Server` that names no version; pages with a Content-Security-Policy that
allows no inline script and no framing; API answers with `no-store`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from gateway.errors import Forbidden, TooMany, Unauthorized
from gateway.guard.clients import client_address
from gateway.guard.limits import Connections
from gateway.guard.tokens import Grant, verify
from gateway.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_COOKIE = "buildcast_token"

CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""No inline script or style element, nothing framed; `data:` images for the status favicon."""

PROTECTED = frozenset(
    {"view", "stream", "multi_stream", "ws", "watched", "recent", "partition_events", "status"}
)
"""Routes (by name) that need a token when access control is on (any valid token reads a
partition's events: a partition is not a build)."""

QUERY_TOKEN = frozenset({"stream", "multi_stream", "ws"})
"""Routes that take `?token=`: EventSource and a browser's WebSocket cannot send headers."""

EXEMPT = frozenset({"/healthz", "/readyz"})
RETRY_FULL = 5  # seconds a client waits when the process or its own share is full


@dataclass(frozen=True, slots=True)
class Access:
    """Who asks, and which builds they may watch (a grant of None: access control is off)."""

    client: str
    grant: Grant | None
    subject: str | None = None

    def check(self, build_id: str) -> None:
        if self.grant is not None and not self.grant.allows(build_id):
            raise Forbidden(f"the token does not name build {build_id}")

    def allows(self, build_id: str) -> bool:
        return self.grant is None or self.grant.allows(build_id)


ACCESS = web.RequestKey("access", Access)
"""The request's `Access`, set by the front door for every request it lets in."""


def access(request: web.Request) -> Access:
    return request[ACCESS]


class FrontDoor:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.connections = Connections(
            settings.max_connections, settings.max_connections_per_client
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS and self._cors_origin(request):
            return _preflight()
        client = client_address(
            request.remote,
            request.headers.get(hdrs.X_FORWARDED_FOR),
            self._settings.trusted_proxies,
        )
        request[ACCESS] = self._admit(request, client)
        if request.path in EXEMPT:
            return await handler(request)
        connections = self.connections
        if (full := connections.full(client)) is not None:
            status = 503 if full == "process" else None
            raise TooMany(f"too many open requests from this {full}", RETRY_FULL, status)
        connections.open(client)
        try:
            return await handler(request)
        finally:
            connections.close(client)

    def _admit(self, request: web.Request, client: str) -> Access:
        secret = self._settings.auth_secret
        route = request.match_info.route.name
        if secret is None or route not in PROTECTED:
            return Access(client, None)
        token = token_of(request, query=route in QUERY_TOKEN)
        if token is None:
            raise Unauthorized("this gateway needs an access token")
        grant = verify(token, secret, self._settings.token_leeway)
        return Access(client, grant, grant.subject)

    def _cors_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get(hdrs.ORIGIN)
        return origin if origin in self._settings.allowed_origins else None

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers[hdrs.SERVER] = "buildcast"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        if response.content_type == "text/html":
            headers["Content-Security-Policy"] = CSP
        elif request.path.startswith("/api/") and hdrs.CACHE_CONTROL not in headers:
            headers[hdrs.CACHE_CONTROL] = "no-store"
        if origin := self._cors_origin(request):
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            headers[hdrs.VARY] = "Origin"


def token_of(request: web.Request, *, query: bool) -> str | None:
    """The request's token: a Bearer header, the cookie, or (where allowed) `?token=`."""
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if cookie := request.cookies.get(TOKEN_COOKIE):
        return cookie
    if query and (given := request.query.get("token")):
        return given
    return None


def _preflight() -> web.Response:
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: "Authorization, Last-Event-ID",
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
        },
    )
