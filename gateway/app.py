"""create_app(): every route and the wiring of one gateway process, on one screen.

upstream client -> poller -> diff -> bus -> fan-out -> SSE -> pages and clients
"""

from __future__ import annotations

import asyncio
import functools
import html
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import backends
from gateway.aio import stop
from gateway.backends.redis.connection import RedisConnection
from gateway.delivery import sse, ws
from gateway.delivery.fanout import Fanout
from gateway.delivery.heartbeat import Heartbeats
from gateway.delivery.http_errors import (
    check_build_id,
    error_response,
    from_error,
    from_http_error,
)
from gateway.errors import BuildcastError
from gateway.guard.http import FrontDoor, access
from gateway.ingest.partition_events import FRESH, PartitionEvents
from gateway.ingest.upstream import FirstLooks, UpstreamClient
from gateway.ingest.watch import Watches
from gateway.ops import access as access_log
from gateway.ops.metrics import REJECTIONS, Metrics, Readings
from gateway.ops.status import Reporter, status
from gateway.protocol import codec
from gateway.protocol.rules import CONTROL, Code
from gateway.settings import Settings
from gateway.state import STATE, GatewayState

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PARTITION_EVENTS = web.AppKey("partition_events", PartitionEvents)


def create_app(settings: Settings, redis: RedisConnection | None = None) -> web.Application:
    """The gateway; on `redis` (which it then owns and closes) when replicas share the work."""
    metrics = Metrics()
    upstream = _upstream(settings, 100, metrics)
    looks = FirstLooks(_upstream(settings, settings.first_looks, metrics), settings.first_looks)
    shared = backends.create(settings, redis)
    watches = Watches(
        settings,
        upstream,
        shared.bus,
        shared.lease,
        shared.missing,
        first_looks=looks,
        on_published=lambda kind: metrics.published.labels(kind).inc(),
        recent=shared.recent,
    )
    metrics.read(
        Readings(
            watched=lambda: len(watches.local_viewers()),
            pollers=lambda: len(watches.pollers()),
            view_age=lambda: _stalest(watches),
            bus_up=shared.bus.up,
        )
    )
    door = FrontDoor(settings)
    app = web.Application(
        middlewares=[access_log.middleware(settings), errors_as_json, door.middleware]
    )
    app[STATE] = GatewayState(
        settings=settings,
        upstream=upstream,
        first_looks=looks,
        backends=shared,
        fanout=Fanout(shared.bus, metrics),
        watches=watches,
        heartbeats=Heartbeats(settings.heartbeat),
        door=door,
        metrics=metrics,
    )
    app[PARTITION_EVENTS] = PartitionEvents(settings, upstream, shared.cache)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_streams)
    app.on_response_prepare.append(door.on_prepare)
    app.on_response_prepare.append(_last_on_connection)
    app.add_routes(
        [
            web.get("/", _page(settings.web_root / "index.html")),
            web.get("/builds/{build_id}", _page(settings.web_root / "build.html")),
            web.get("/wall", _page(settings.web_root / "wall.html")),
            web.get("/api/v1/builds/{build_id}", build_view, name="view"),
            web.get(
                "/api/v1/builds/{build_id}/stream", build_stream, allow_head=False, name="stream"
            ),
            web.get("/api/v1/stream", multi_stream, allow_head=False, name="multi_stream"),
            web.get("/api/v1/ws", websocket, allow_head=False, name="ws"),
            web.get("/api/v1/watched", watched, name="watched"),
            web.get("/api/v1/recent", recent, name="recent"),
            web.get(
                "/api/v1/partitions/{ref:[^/]*}/events", partition_events, name="partition_events"
            ),
            web.get("/api/v1/status", status_view, name="status"),
            web.get("/status", _page(settings.web_root / "status.html")),
            web.get("/api/v1/openapi.json", api_document),
            *probes(settings.metrics_port is None),
            web.static("/static", settings.web_root),
        ]
    )
    return app


def probes(metrics: bool) -> list[web.RouteDef]:
    """Liveness, readiness and (unless `--metrics-port` serves it) the metrics."""
    routes = [web.get("/healthz", healthz), web.get("/readyz", readyz)]
    return [*routes, web.get("/metrics", metrics_page)] if metrics else routes


def metrics_app(gateway: web.Application) -> web.Application:
    """What `--metrics-port` serves: the metrics and the probes of `gateway`, nothing else."""
    app = web.Application(middlewares=[errors_as_json])
    app[STATE] = gateway[STATE]
    app.add_routes(probes(True))
    return app


def _upstream(settings: Settings, connections: int, metrics: Metrics) -> UpstreamClient:
    def observe(endpoint: str, outcome: str, seconds: float) -> None:
        metrics.upstream_requests.labels(endpoint, outcome).inc()
        metrics.upstream_seconds.labels(endpoint).observe(seconds)

    return UpstreamClient(
        settings.upstream,
        timeout=settings.upstream_timeout,
        deadline=settings.upstream_deadline,
        max_bytes=settings.upstream_max_bytes,
        max_connections=connections,
        observe=observe,
    )


def _stalest(watches: Watches) -> float:
    """Seconds since the upstream last answered for the build this replica polls longest ago."""
    answered = [p.answered_ms for p in watches.pollers() if p.answered_ms is not None]
    return max(0.0, time.time() - min(answered) / 1000) if answered else 0.0


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.bus.start(state.fanout.deliver, state.watches.lease_released)
    reporter = Reporter(state.backends.replica, state.watches, state.metrics.tally)
    await state.backends.registry.start(reporter)
    beating = asyncio.create_task(state.heartbeats.run(), name="heartbeats")
    yield
    await stop([beating])
    await state.watches.close()  # releases the leases: the backends are still open
    await state.backends.close()
    await state.upstream.aclose()
    await state.first_looks.aclose()


async def _end_streams(app: web.Application) -> None:
    """End every stream and socket now: clients reconnect elsewhere, shutdown waits for none."""
    app[STATE].streams.end_all()


async def _last_on_connection(request: web.Request, response: web.StreamResponse) -> None:
    """Once shutting down, each answer closes its connection: the next request goes elsewhere."""
    if request.app[STATE].streams.closing:
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"  # aiohttp wrote its own before this hook


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client sees is the protocol's JSON body; never a traceback."""
    try:
        return await handler(request)
    except BuildcastError as exc:
        if exc.code in REJECTIONS:
            request.app[STATE].metrics.rejected.labels(exc.code).inc()
        return from_error(exc)
    except web.HTTPNotFound:
        if _wants_page(request):
            return _not_found_page(request.app[STATE].settings.web_root / "404.html", request.path)
        return error_response(Code.NOT_FOUND, f"no such path {request.path}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_error(exc)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(Code.INTERNAL, "internal error")


def _page(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


def _wants_page(request: web.Request) -> bool:
    """A browser asking for a page (not the API, not a page's file) that does not exist."""
    return (
        request.method in (hdrs.METH_GET, hdrs.METH_HEAD)
        and "text/html" in request.headers.get(hdrs.ACCEPT, "")
        and not request.path.startswith(("/api/", "/static/"))
    )


_ASKED = "<!-- the path asked for -->"


def _not_found_page(page: Path, path: str) -> web.Response:
    """web/404.html, saying which path was not found (escaped: it is the client's text)."""
    asked = html.escape(CONTROL.sub("\ufffd", path))
    return web.Response(
        status=404,
        text=_page_text(page).replace(_ASKED, asked),
        content_type="text/html",
        headers={hdrs.CACHE_CONTROL: "no-cache"},
    )


@functools.cache
def _page_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def build_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    who = access(request)
    build_id = check_build_id(request.match_info["build_id"])
    who.check(build_id)
    async with state.watches.watching(build_id, who.client):
        latest = await state.bus.latest(build_id)
    if latest is None:
        return error_response(Code.UPSTREAM_UNAVAILABLE, f"no view of {build_id} yet")
    return web.Response(body=latest.view_json, content_type="application/json")


async def build_stream(request: web.Request) -> web.StreamResponse:
    return await sse.build_stream(request, request.app[STATE])


async def multi_stream(request: web.Request) -> web.StreamResponse:
    return await sse.multi_stream(request, request.app[STATE])


async def websocket(request: web.Request) -> web.StreamResponse:
    return await ws.handle(request, request.app[STATE])


async def watched(request: web.Request) -> web.Response:
    """Every build watched in the deployment, with its summary and all replicas' viewers."""
    state = request.app[STATE]
    who = access(request)
    viewers = await state.backends.registry.viewers()
    summaries = await state.bus.summaries(sorted(b for b in viewers if who.allows(b)))
    builds = [{**summary, "viewers": viewers[b]} for b, summary in summaries.items()]
    return web.Response(body=codec.dumps({"builds": builds}), content_type="application/json")


async def recent(request: web.Request) -> web.Response:
    """The builds the deployment watched in the last day, newest first, as last stored."""
    state = request.app[STATE]
    who = access(request)
    lately = [(b, at) for b, at in await state.backends.recent.recent() if who.allows(b)]
    summaries = await state.bus.summaries([b for b, _ in lately])
    builds = [{**summaries[b], "lastWatchedAtMs": at} for b, at in lately if b in summaries]
    return web.Response(body=codec.dumps({"builds": builds}), content_type="application/json")


async def partition_events(request: web.Request) -> web.Response:
    """A partition's own events: from the upstream at most once per ref every FRESH seconds."""
    ref = request.match_info["ref"]
    found = await request.app[PARTITION_EVENTS].answer(ref, access(request).client)
    if found.code is not None:
        return error_response(found.code, found.body.decode())
    return web.Response(
        body=found.body,
        content_type="application/json",
        headers={hdrs.CACHE_CONTROL: f"private, max-age={FRESH:.0f}"},
    )


async def status_view(request: web.Request) -> web.Response:
    """Every replica, and who polls each watched build, how often, how old its data is."""
    found = await status(request.app[STATE].backends, access(request))
    return web.Response(body=codec.dumps(found), content_type="application/json")


async def api_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (docs/openapi.yaml, as JSON)."""
    body = _api_document(request.app[STATE].settings.api_document)
    return web.Response(body=body, content_type="application/json")


@functools.cache
def _api_document(path: Path) -> bytes:
    return codec.dumps(yaml.safe_load(path.read_text()))


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus' text format (`--metrics-port` may serve it apart from the API)."""
    return web.Response(
        body=request.app[STATE].metrics.exposition(),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.streams.closing:
        return error_response(Code.NOT_READY, "shutting down")
    if await state.bus.ready():
        return web.Response(body=b'{"status":"ready"}', content_type="application/json")
    return error_response(Code.NOT_READY, "the bus is not reachable")
