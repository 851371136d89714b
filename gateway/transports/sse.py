"""Server-Sent Events: one build per stream, resumable with Last-Event-ID.

A connection is one coroutine: catch up, then write whatever the fan-out has
queued (several messages in one write), or a heartbeat comment when nothing
came for `heartbeat` seconds. A write that cannot finish in `write_timeout`
means a stalled client: it is cut off and resumes by itself with its last id.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from gateway import codec
from gateway.errors import BusUnavailable
from gateway.fanout import Subscriber
from gateway.follow import Follower
from gateway.http_errors import check_build_id
from gateway.messages import Kind, Message
from gateway.resume import parse_token
from gateway.settings import Settings
from gateway.state import GatewayState

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event through, do not buffer
}


async def stream(request: web.Request, state: GatewayState) -> web.StreamResponse:
    build_id = check_build_id(request.match_info["build_id"])
    since = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    response = web.StreamResponse(headers=HEADERS)
    async with state.watches.watching(build_id):
        subscriber = Subscriber(
            build_id, state.settings.subscriber_buffer, lambda: _cut_off(request)
        )
        try:
            await state.fanout.attach(subscriber)
            follower = Follower(state.bus, build_id)
            first = await follower.catch_up(parse_token(build_id, since))
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                await _send(request, response, subscriber, follower, first, state.settings)
        finally:
            await state.fanout.detach(subscriber)
    return response


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    subscriber: Subscriber,
    follower: Follower,
    batch: list[Message],
    settings: Settings,
) -> None:
    """Write until the client leaves, falls too far behind, the build is gone or we shut down."""
    pending = codec.sse_retry(settings.retry_ms) + _frames(batch, follower)
    while True:
        if pending:
            try:
                async with asyncio.timeout(settings.write_timeout):
                    await response.write(pending)
            except TimeoutError:
                _cut_off(request)
                return
        if subscriber.overflowed or subscriber.closed or _ended(batch):
            return
        if subscriber.pending:
            try:
                batch = await follower.admit(subscriber.take())
            except BusUnavailable:
                return  # a gap we cannot repair now: the client resumes with its last id
            pending = _frames(batch, follower)
            continue
        try:
            async with asyncio.timeout(settings.heartbeat):
                await subscriber.wakeup.wait()
            batch, pending = [], b""
        except TimeoutError:
            batch, pending = [], codec.HEARTBEAT


def _frames(batch: list[Message], follower: Follower) -> bytes:
    """The batch's frames; an error's `id:` is the client's own position, to resume from."""
    return b"".join(
        codec.sse_frame(message, follower.at)
        if message.kind is Kind.ERROR and follower.at is not None
        else message.frame
        for message in batch
    )


def _ended(batch: list[Message]) -> bool:
    """An error that ends the stream (the build is gone upstream) is its last message."""
    return any(message.ends_stream for message in batch)


def _cut_off(request: web.Request) -> None:
    """Close a client's connection now, dropping what its socket buffer still holds."""
    if request.transport is not None:
        request.transport.abort()
