"""The access log: one line per request, and per stream or socket when it ends.

Each line says who (the client's address, and the token's subject when
there is one), what (method, route, the builds), how it went (status, bytes,
seconds) and, for a stream or socket, why it ended (`gateway.protocol.endings`:
`client left`, `too slow`, `shutdown`...). Never a token, a query string or a
header: a token may ride in any of them. Probes, scrapes and static files
are not logged, so a steady state is quiet.

A request's `Visit` starts in the outermost middleware. Streams and sockets
fill it in (their builds, the bytes they wrote, why they ended). aiohttp logs
each finished answer through `AccessLogger`, once its bytes are known; a
stream whose client left is cancelled instead, and the middleware logs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway.guard.clients import client_address
from gateway.guard.http import ACCESS
from gateway.protocol.endings import CLIENT_LEFT
from gateway.settings import Settings

log = logging.getLogger("buildcast.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

QUIET = ("/healthz", "/readyz", "/metrics", "/static/", "/favicon.ico")
"""Paths (or prefixes) not logged: probes, scrapes and static files would drown the rest."""


MAX_ID = 200
"""Characters of a requested build id logged: one refused as malformed may be kilobytes."""


@dataclass(slots=True)
class Visit:
    client: str
    started: float  # the loop's clock
    builds: tuple[str, ...] = ()
    stream: bool = False  # an SSE stream or a WebSocket: `sent` counts its bytes
    sent: int = 0
    ended: str | None = None  # why a stream or socket ended
    logged: bool = False


VISIT = web.RequestKey("visit", Visit)


def visit(request: web.Request) -> Visit:
    """The request's Visit (a detached one where access is not logged)."""
    found = request.get(VISIT)
    return found if found is not None else Visit("-", 0.0)


def middleware(settings: Settings) -> Middleware:
    @web.middleware
    async def visits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(QUIET):
            return await handler(request)
        client = client_address(
            request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
        )
        request[VISIT] = found = Visit(client, asyncio.get_running_loop().time())
        try:
            return await handler(request)
        except asyncio.CancelledError:  # the client left a stream: aiohttp logs nothing then
            found.ended = found.ended or CLIENT_LEFT
            write(request, found, 200 if found.stream else 499, None)
            raise

    return visits


class AccessLogger(AbstractAccessLogger):
    """aiohttp's hook, called once an answer is written (or its client is gone)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        found = request.get(VISIT)
        if found is not None and isinstance(request, web.Request):
            write(request, found, response.status, response.body_length)

    @property
    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)


def write(request: web.Request, found: Visit, status: int, length: int | None) -> None:
    if found.logged:
        return
    found.logged = True
    seconds = asyncio.get_running_loop().time() - found.started
    match = request.match_info
    route = match.route.resource
    builds = found.builds or ((match["build_id"][:MAX_ID],) if "build_id" in match else ())
    fields: dict[str, object] = {
        "client": found.client,
        "method": request.method,
        "route": route.canonical if route is not None else "-",
        "builds": list(builds),
        "status": status,
        "bytes": found.sent if found.stream else length or 0,
        "seconds": round(seconds, 3),
    }
    if found.ended is not None:
        fields["ended"] = found.ended
    if (who := request.get(ACCESS)) is not None and who.subject:
        fields["sub"] = who.subject
    text = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if k not in ("client", "method"))
    log.info("%s %s %s", found.client, request.method, text, extra=fields)


def _text(value: object) -> str:
    text = ",".join(value) or "-" if isinstance(value, list) else str(value)
    return f'"{text}"' if " " in text else text
