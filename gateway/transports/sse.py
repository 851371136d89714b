"""Server-Sent Events: one build per stream, or several on one connection.

`/api/v1/builds/{id}/stream` follows one build; `/api/v1/stream?build=A&build=B`
follows several (a wall screen) on one connection, each message tagged with
its build by its JSON's `buildId`. Either way the `id:` of each message is a
cursor (`gateway.resume.cursor`): the position of every build of the stream,
which is just the build's token when there is one. A reconnect with
`Last-Event-ID` (or `?lastEventId=`) resumes every build at once.

A connection is one coroutine: catch up, then write whatever the fan-out has
queued for any of its builds (several messages in one write), or a heartbeat
comment when nothing came for `heartbeat` seconds. A write that cannot finish in
`write_timeout` means a stalled client: it is cut off and resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web

from gateway import codec, messages
from gateway.errors import BusUnavailable, UpstreamBadRequest, UpstreamNotFound
from gateway.fanout import Subscriber
from gateway.follow import Follower
from gateway.http_errors import check_build_id, check_build_ids
from gateway.messages import Kind, Message
from gateway.resume import Position, cursor, parse_cursor
from gateway.state import GatewayState

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event through, do not buffer
}


async def build_stream(request: web.Request, state: GatewayState) -> web.StreamResponse:
    build_id = check_build_id(request.match_info["build_id"])
    since = parse_cursor([build_id], _last_event_id(request))
    async with state.watches.watching(build_id):
        return await _serve(request, state, [build_id], since, [])


async def multi_stream(request: web.Request, state: GatewayState) -> web.StreamResponse:
    """Several builds on one connection; a build unknown upstream gets its `error` only."""
    build_ids = check_build_ids(request.query.getall("build", []), state.settings.stream_builds)
    since = parse_cursor(build_ids, _last_event_id(request))
    async with contextlib.AsyncExitStack() as held:
        outcomes = await asyncio.gather(
            *(held.enter_async_context(state.watches.watching(b)) for b in build_ids),
            return_exceptions=True,
        )
        gone: list[Message] = []
        for build_id, outcome in zip(build_ids, outcomes, strict=True):
            if isinstance(outcome, UpstreamNotFound | UpstreamBadRequest):
                code = messages.gone_code(outcome)
                gone.append(messages.error(build_id, Position("0", 0), code, str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome  # the upstream or the bus is down: 503 before the stream
        live = [b for b in build_ids if not any(m.build_id == b for m in gone)]
        return await _serve(request, state, live, since, gone)


def _last_event_id(request: web.Request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.query.get("lastEventId")


@dataclass(eq=False, slots=True)
class _Feed:
    """One build of a connection: its queue in the fan-out and its path through the sequence."""

    subscriber: Subscriber
    follower: Follower


class _Ids:
    """The `id:` of each frame: the stream's cursor after that message."""

    def __init__(self, build_ids: list[str], single: bool) -> None:
        self._order = build_ids
        self._single = single
        self._at: dict[str, Position] = {}

    def frames(self, batch: list[Message]) -> bytes:
        out = []
        for message in batch:
            if message.kind is not Kind.ERROR:
                self._at[message.build_id] = message.position
                if self._single:  # its own token: the frame encoded once for every viewer
                    out.append(message.frame)
                    continue
            out.append(codec.sse_event(cursor(self._order, self._at), message))
        return b"".join(out)


async def _serve(
    request: web.Request,
    state: GatewayState,
    build_ids: list[str],
    since: dict[str, Position],
    first: list[Message],
) -> web.StreamResponse:
    settings = state.settings
    wakeup = asyncio.Event()
    feeds = {
        build_id: _Feed(
            Subscriber(build_id, settings.subscriber_buffer, lambda: _cut_off(request), wakeup),
            Follower(state.bus, build_id),
        )
        for build_id in build_ids
    }
    response = web.StreamResponse(headers=HEADERS)
    try:
        for feed in feeds.values():
            await state.fanout.attach(feed.subscriber)
        caught_up: list[Message] = []
        for build_id, feed in feeds.items():
            caught_up += await feed.follower.catch_up(since.get(build_id))
        ids = _Ids(build_ids, single=len(build_ids) == 1 and not first)
        await response.prepare(request)
        try:
            await _send(request, response, feeds, wakeup, ids, caught_up + first, state)
        except ConnectionResetError:
            pass
        except Exception:  # a bug: the stream is open, so no error page; the client reconnects
            log.exception("stream of %s failed", ", ".join(build_ids))
            _cut_off(request)
    finally:
        for feed in feeds.values():
            await state.fanout.detach(feed.subscriber)
    return response


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    feeds: dict[str, _Feed],
    wakeup: asyncio.Event,
    ids: _Ids,
    batch: list[Message],
    state: GatewayState,
) -> None:
    """Write until the client leaves or lags too far, every build is gone, or we shut down."""
    settings = state.settings
    pending = codec.sse_retry(settings.retry_ms) + ids.frames(batch)
    while True:
        if pending:
            try:
                async with asyncio.timeout(settings.write_timeout):
                    await response.write(pending)
            except TimeoutError:
                _cut_off(request)
                return
        for message in batch:
            if message.ends_stream and (feed := feeds.pop(message.build_id, None)):
                await state.fanout.detach(feed.subscriber)
        if not feeds or any(f.subscriber.overflowed or f.subscriber.closed for f in feeds.values()):
            return
        wakeup.clear()
        if any(feed.subscriber.pending for feed in feeds.values()):
            batch = []
            for feed in feeds.values():
                if feed.subscriber.pending:
                    try:
                        batch += await feed.follower.admit(feed.subscriber.take())
                    except BusUnavailable:
                        return  # a gap we cannot repair now: the client resumes with its id
            pending = ids.frames(batch)
            continue
        batch = []
        try:
            async with asyncio.timeout(settings.heartbeat):
                await wakeup.wait()
            pending = b""
        except TimeoutError:
            pending = codec.HEARTBEAT


def _cut_off(request: web.Request) -> None:
    """Close a client's connection now, dropping what its socket buffer still holds."""
    if request.transport is not None:
        request.transport.abort()
