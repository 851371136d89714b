"""create_app(): every route and the wiring of one gateway process, on one screen.

upstream client -> poller -> diff -> bus -> fan-out -> SSE -> pages and clients
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import web

from gateway import codec
from gateway.aio import stop
from gateway.bus import Bus, MemoryBus
from gateway.bus.redis import RedisBus
from gateway.disconnect import SHUTDOWN
from gateway.errors import BuildcastError
from gateway.fanout import Fanout
from gateway.heartbeat import Heartbeats
from gateway.http_errors import check_build_id, error_response, from_error, from_http_error
from gateway.lease import Lease, LocalLease, RedisLease, replica_name
from gateway.redis_client import RedisConnection
from gateway.registry import LocalRegistry, RedisRegistry, Registry
from gateway.settings import Settings
from gateway.state import STATE, GatewayState
from gateway.transports import sse, ws
from gateway.upstream import UpstreamClient
from gateway.watch import Watches

log = logging.getLogger(__name__)

REDIS: web.AppKey[RedisConnection | None] = web.AppKey("redis")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings, redis: RedisConnection | None = None) -> web.Application:
    """The gateway; on `redis` (which it then owns and closes) when replicas share the work."""
    upstream = UpstreamClient(settings.upstream, timeout=settings.upstream_timeout)
    bus: Bus
    lease: Lease
    registry: Registry
    if redis is None:
        bus = MemoryBus(history=settings.history, max_builds=settings.retained_builds)
        lease, registry = LocalLease(), LocalRegistry()
    else:
        replica = replica_name()
        bus = RedisBus(redis, history=settings.history, retention=settings.retention)
        lease = RedisLease(redis, replica, settings.lease_ttl)
        registry = RedisRegistry(redis, replica, settings.lease_ttl)
    fanout = Fanout(bus)
    watches = Watches(settings, upstream, bus, lease)
    app = web.Application(middlewares=[errors_as_json])
    heartbeats = Heartbeats(settings.heartbeat)
    app[STATE] = GatewayState(settings, upstream, bus, fanout, watches, registry, heartbeats)
    app[REDIS] = redis
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_end_streams)
    app.add_routes(
        [
            web.get("/", _page(settings.web_root / "index.html")),
            web.get("/builds/{build_id}", _page(settings.web_root / "build.html")),
            web.get("/wall", _page(settings.web_root / "wall.html")),
            web.get("/api/v1/builds/{build_id}", build_view),
            web.get("/api/v1/builds/{build_id}/stream", build_stream, allow_head=False),
            web.get("/api/v1/stream", multi_stream, allow_head=False),
            web.get("/api/v1/ws", websocket, allow_head=False),
            web.get("/api/v1/watched", watched),
            web.get("/api/v1/openapi.json", api_document),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.static("/static", settings.web_root),
        ]
    )
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.bus.start(state.fanout.deliver)
    await state.registry.start(state.watches.local_viewers)
    beating = asyncio.create_task(state.heartbeats.run(), name="heartbeats")
    yield
    await stop([beating])
    await state.registry.close()
    await state.watches.close()
    await state.bus.close()
    await state.upstream.aclose()
    if (redis := app[REDIS]) is not None:
        await redis.close()


async def _end_streams(app: web.Application) -> None:
    """End every stream and socket now: clients reconnect elsewhere, shutdown waits for none."""
    state = app[STATE]
    state.fanout.close()
    for socket in list(state.sockets):
        await socket.close(code=SHUTDOWN.code, message=SHUTDOWN.reason.encode())


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client sees is PROTOCOL.md's JSON body; never a traceback."""
    try:
        return await handler(request)
    except BuildcastError as exc:
        return from_error(exc)
    except web.HTTPNotFound:
        return error_response(404, "not_found", f"no such path {request.path}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_error(exc)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


def _page(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


async def build_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    build_id = check_build_id(request.match_info["build_id"])
    async with state.watches.watching(build_id):
        latest = await state.bus.latest(build_id)
    if latest is None:
        return error_response(503, "upstream_unavailable", f"no view of {build_id} yet")
    return web.Response(body=codec.snapshot_view(latest), content_type="application/json")


async def build_stream(request: web.Request) -> web.StreamResponse:
    return await sse.build_stream(request, request.app[STATE])


async def multi_stream(request: web.Request) -> web.StreamResponse:
    return await sse.multi_stream(request, request.app[STATE])


async def websocket(request: web.Request) -> web.StreamResponse:
    return await ws.handle(request, request.app[STATE])


async def watched(request: web.Request) -> web.Response:
    """Every build watched in the deployment, with its summary and all replicas' viewers."""
    state = request.app[STATE]
    viewers = await state.registry.viewers()
    summaries = await state.bus.summaries(sorted(viewers))
    builds = [{**summary, "viewers": viewers[b]} for b, summary in summaries.items()]
    return web.Response(body=codec.dumps({"builds": builds}), content_type="application/json")


async def api_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (docs/openapi.yaml, as JSON)."""
    body = _api_document(request.app[STATE].settings.api_document)
    return web.Response(body=body, content_type="application/json")


@functools.cache
def _api_document(path: Path) -> bytes:
    return codec.dumps(yaml.safe_load(path.read_text()))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    if await request.app[STATE].bus.ready():
        return web.Response(body=b'{"status":"ready"}', content_type="application/json")
    return error_response(503, "not_ready", "the bus is not reachable")
