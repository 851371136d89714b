"""The baseline of the fan-out benchmark: SSE and WebSocket fan-out the idiomatic Python way.

What a competent team writes first with the usual stack, so Buildcast's figures
have a yardstick measured in the same run: aiohttp with aiohttp-sse
(`sse_response`, its ping task per stream), one redis.asyncio pub/sub
subscription per process whose reader decodes each message once, and per client
an `asyncio.Queue` (bounded: a full queue cuts the client off) drained by the
client's own handler task. It runs on uvloop like Buildcast, so the comparison
measures the design, not the event loop.

    GET /api/v1/builds/{build_id}/stream   SSE: the snapshot, then each delta
    GET /api/v1/ws                         WebSocket: {"op": "subscribe", "buildId": ...}
    GET /healthz

A build's snapshot is the JSON stored at `baseline:{build_id}:snapshot`; its
deltas are the JSON published on the channel `baseline:{build_id}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
import uvloop
from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response
from redis.asyncio import BlockingConnectionPool, Redis

QUEUE_SIZE = 256
"""Messages queued per client before it counts as too slow (Buildcast's limit too)."""

CHANNELS = "baseline:*"

log = logging.getLogger("baseline")

Item = tuple[str, str, str]  # (event, id, JSON)
END: Item = ("", "", "")
"""Queued after the last message a client too slow gets."""


class Hub:
    """The process's one subscription, and every client's queue by build."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.queues: dict[str, set[asyncio.Queue[Item]]] = {}

    async def listen(self) -> None:
        async with self.redis.pubsub() as pubsub:
            await pubsub.psubscribe(CHANNELS)
            async for item in pubsub.listen():
                if item["type"] != "pmessage":
                    continue
                build_id = item["channel"].decode().removeprefix("baseline:")
                text = item["data"].decode()
                message = orjson.loads(text)
                event = (message["type"], str(message["seq"]), text)
                clients = self.queues.get(build_id, set())
                for queue in list(clients):
                    if queue.qsize() >= QUEUE_SIZE:  # too slow: its handler ends at END
                        clients.discard(queue)
                        queue.put_nowait(END)
                    else:
                        queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def follow(self, build_id: str) -> AsyncIterator[tuple[Item, asyncio.Queue[Item]]]:
        """The build's snapshot, and a queue of its messages from before it was read."""
        queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_SIZE + 1)  # room for END
        self.queues.setdefault(build_id, set()).add(queue)
        try:
            stored = await self.redis.get(f"baseline:{build_id}:snapshot")
            if stored is None:
                raise web.HTTPNotFound(text=f"no build {build_id}")
            text = stored.decode()
            yield ("snapshot", str(orjson.loads(text)["seq"]), text), queue
        finally:
            self.queues.get(build_id, set()).discard(queue)


HUB = web.AppKey("hub", Hub)


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    build_id = request.match_info["build_id"]
    async with hub.follow(build_id) as (item, queue), sse_response(request) as response:
        while item is not END and response.is_connected():
            event, event_id, text = item
            await response.send(text, id=event_id, event=event)
            item = await queue.get()
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    first = await ws.receive()
    if first.type is not WSMsgType.TEXT:
        return ws
    build_id = orjson.loads(first.data)["buildId"]
    async with request.app[HUB].follow(build_id) as (item, queue):
        reader = asyncio.create_task(_drain(ws))  # answers the peer's pings, sees its close
        try:
            while item is not END and not ws.closed:
                await ws.send_str(item[2])
                item = await queue.get()
        finally:
            reader.cancel()
    await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    listener = asyncio.create_task(app[HUB].listen())
    yield
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await app[HUB].redis.aclose()


def create_app(redis_url: str) -> web.Application:
    app = web.Application()
    # Blocking: a burst of new clients waits for a pooled connection instead of failing.
    app[HUB] = Hub(Redis(connection_pool=BlockingConnectionPool.from_url(redis_url)))
    app.cleanup_ctx.append(_lifecycle)
    app.add_routes(
        [
            web.get("/api/v1/builds/{build_id}/stream", stream),
            web.get("/api/v1/ws", websocket),
            web.get("/healthz", healthz),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis:// URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvloop.install()
    web.run_app(
        create_app(args.redis), host=args.host, port=args.port, print=None, shutdown_timeout=1
    )


if __name__ == "__main__":
    main()
