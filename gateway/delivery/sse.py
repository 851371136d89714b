"""Server-Sent Events: one build per stream, or several on one connection.

`/api/v1/builds/{id}/stream` follows one build; `/api/v1/stream?build=A&build=B`
follows several (a wall screen) on one connection, each message tagged with
its build by its JSON's `buildId`. Either way the `id:` of each message is a
cursor (`gateway.protocol.resume.cursor`): the position of every build of the stream,
which is just the build's token when there is one. A reconnect with
`Last-Event-ID` (or `?lastEventId=`) resumes every build at once.

A connection is one coroutine: catch up, then sleep while the fan-out writes
each new message of a single-build stream straight to the socket, and wake
only to write what the fan-out had to queue (several messages in one write):
a multi-build stream's frames (their cursor is the connection's own), a gap
to repair, a socket that fell behind. A write that cannot finish in
`write_timeout` means a stalled client: it is cut off and resumes by itself.
Heartbeat comments come from one timer for all streams (`gateway.delivery.heartbeat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from aiohttp import web
from aiohttp.http import HttpVersion11

from gateway.delivery.expiry import EXPIRED, expire_at
from gateway.delivery.fanout import Direct, Subscriber, Wakeup, reset
from gateway.delivery.follow import Follower
from gateway.delivery.http_errors import check_build_id, check_build_ids
from gateway.errors import BuildGone, BusUnavailable
from gateway.guard.http import access
from gateway.ops.access import Visit, visit
from gateway.protocol import codec, endings, messages
from gateway.protocol.messages import Kind, Message
from gateway.protocol.resume import Position, cursor, parse_cursor
from gateway.protocol.rules import Code
from gateway.state import GatewayState

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event through, do not buffer
}


async def build_stream(request: web.Request, state: GatewayState) -> web.StreamResponse:
    who = access(request)
    build_id = check_build_id(request.match_info["build_id"])
    who.check(build_id)
    since = parse_cursor([build_id], _last_event_id(request))
    async with state.watches.watching(build_id, who.client):
        return await _serve(request, state, [build_id], since, [])


async def multi_stream(request: web.Request, state: GatewayState) -> web.StreamResponse:
    """Several builds on one connection; a build unknown upstream gets its `error` only."""
    who = access(request)
    build_ids = check_build_ids(request.query.getall("build", []), state.settings.stream_builds)
    for build_id in build_ids:
        who.check(build_id)  # every one, before any is watched
    since = parse_cursor(build_ids, _last_event_id(request))
    async with contextlib.AsyncExitStack() as held:
        outcomes = await asyncio.gather(
            *(held.enter_async_context(state.watches.watching(b, who.client)) for b in build_ids),
            return_exceptions=True,
        )
        gone: list[Message] = []
        for build_id, outcome in zip(build_ids, outcomes, strict=True):
            if isinstance(outcome, BuildGone):
                gone.append(messages.error(build_id, Position("0", 0), outcome.code, str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome  # the upstream or the bus is down: 503 before the stream
        live = [b for b in build_ids if not any(m.build_id == b for m in gone)]
        return await _serve(request, state, live, since, gone)


def _last_event_id(request: web.Request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.query.get("lastEventId")


class _Direct(Direct):
    """A single-build stream's socket: the message's own frame, chunked if the response is."""

    __slots__ = ("_chunked",)

    def __init__(self, transport: asyncio.BaseTransport, chunked: bool) -> None:
        super().__init__(transport)
        self._chunked = chunked

    def wire(self, message: Message) -> bytes:
        return message.sse_chunk if self._chunked else message.frame


class _Ids:
    """The `id:` of each frame: the stream's cursor after that message."""

    def __init__(self, build_ids: list[str], single: bool) -> None:
        self._order = build_ids
        self._single = single
        self._at: dict[str, Position] = {}

    def start(self, build_id: str, at: Position) -> None:
        """The client resumes `build_id` at `at`: the cursor names it from the first frame."""
        self._at[build_id] = at

    def resume(self, follower: Follower) -> None:
        """Where the follower is before its next batch (the fan-out may have moved it)."""
        if follower.at is not None:
            self._at[follower.build_id] = follower.at

    def frames(self, batch: list[Message]) -> bytes:
        out = []
        for message in batch:
            if message.kind is not Kind.ERROR:
                self._at[message.build_id] = message.position
                if self._single:  # its own token: the frame encoded once for every viewer
                    out.append(message.frame)
                    continue
            out.append(message.sse_event(cursor(self._order, self._at)))
        return b"".join(out)


async def _serve(
    request: web.Request,
    state: GatewayState,
    build_ids: list[str],
    since: dict[str, Position],
    first: list[Message],
) -> web.StreamResponse:
    settings = state.settings
    response = web.StreamResponse(headers=HEADERS)
    transport = request.transport
    if transport is None:  # the client left before its stream began
        return response
    chunked = request.version >= HttpVersion11
    if chunked:
        response.enable_chunked_encoding()
    found = visit(request)
    found.builds, found.stream = (*build_ids, *(m.build_id for m in first)), True
    wakeup = Wakeup()
    feeds: dict[str, Subscriber] = {
        build_id: Subscriber(
            Follower(state.bus, build_id),
            settings.subscriber_buffer,
            functools.partial(reset, transport),
            wakeup,
        )
        for build_id in build_ids
    }
    state.streams.add(wakeup, functools.partial(_end, feeds))  # a 503 once shutting down
    expiry = expire_at(access(request), lambda: _expire(feeds, found))
    tally = state.metrics.tally
    tally.sse += 1
    direct = None
    try:
        for feed in feeds.values():
            await state.fanout.attach(feed)
        single = len(build_ids) == 1 and not first
        ids = _Ids(build_ids, single)
        caught_up: list[Message] = []
        for build_id, feed in feeds.items():
            at = since.get(build_id)
            missed = await feed.follower.catch_up(at)
            if feed.follower.resumed is not None:
                state.metrics.resumes.labels(feed.follower.resumed).inc()
            if at is not None and (
                not missed or missed[0].position == Position(at.epoch, at.seq + 1)
            ):
                ids.start(build_id, at)  # resumed: it is where it was until its news is sent
            caught_up += missed
        await response.prepare(request)
        direct = _Direct(transport, chunked) if single else None
        try:
            async with asyncio.timeout(settings.write_timeout):
                found.sent += await _write_first(
                    response, codec.sse_retry(settings.retry_ms), ids.frames(caught_up + first)
                )
            state.heartbeats.add(transport, _HEARTBEATS[chunked])
            ending = await _send(
                request, response, feeds, wakeup, ids, caught_up + first, state, direct, found
            )
        except TimeoutError:  # stalled before its catch-up was written: it resumes by itself
            ending = _stalled(request, state)
        except ConnectionResetError:
            ending = endings.CLIENT_LEFT
        except Exception:  # a bug: the stream is open, so no error page; the client reconnects
            log.exception("stream of %s failed", ", ".join(build_ids))
            _cut_off(request)
            ending = endings.BUG.name
        found.ended = found.ended or ending
        if state.streams.closing:
            response.force_close()  # the client must reconnect elsewhere, not on this connection
    finally:
        tally.sse -= 1
        state.streams.discard(wakeup)
        if expiry is not None:
            expiry.cancel()
        state.heartbeats.discard(transport)
        for feed in feeds.values():
            await state.fanout.detach(feed)
        if direct is not None:
            found.sent += direct.sent
    return response


def _end(feeds: dict[str, Subscriber]) -> None:
    """The replica shuts down: the stream ends, and its client reconnects to another."""
    for feed in feeds.values():
        feed.closed = True
        feed.direct = None
        feed.wakeup.set()


def _expire(feeds: dict[str, Subscriber], found: Visit) -> None:
    """The token expired: each build's stream ends with `unauthorized`, the client resumes."""
    found.ended = endings.TOKEN_EXPIRED.name
    for build_id, feed in feeds.items():
        at = feed.follower.at or Position("0", 0)
        feed.offer(messages.error(build_id, at, Code.UNAUTHORIZED, EXPIRED), [])


async def _write_first(response: web.StreamResponse, retry: bytes, frames: bytes) -> int:
    """The `retry:` line and the catch-up in one write; a large build's snapshot apart, as
    the bytes every viewer shares (copying it per stream would cost megabytes each)."""
    if len(frames) < SHARED_FRAME:
        await response.write(retry + frames)
    else:
        await response.write(retry)
        await response.write(frames)
    return len(retry) + len(frames)


SHARED_FRAME = 64 * 1024
"""Catch-ups this large are written as they are rather than copied into one write."""

_HEARTBEATS = {True: codec.http_chunk(codec.HEARTBEAT), False: codec.HEARTBEAT}
"""The comment as a chunked response needs it, and as it is; the same bytes for every stream."""


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    feeds: dict[str, Subscriber],
    wakeup: Wakeup,
    ids: _Ids,
    batch: list[Message],
    state: GatewayState,
    direct: Direct | None,
    found: Visit,
) -> str:
    """Write what the fan-out queues until the client leaves or lags too far, every build is
    gone, or we shut down; return why it ended. While nothing is queued, a single-build
    stream lets the fan-out write to its socket directly; the coroutine then sleeps until
    something must queue."""
    write_timeout = state.settings.write_timeout
    while True:
        for message in batch:
            if message.ends_stream and (feed := feeds.pop(message.build_id, None)):
                await state.fanout.detach(feed)
        if not feeds:
            return endings.BUILDS_ENDED
        if any(f.overflowed for f in feeds.values()):
            return endings.TOO_SLOW.name
        if any(f.closed for f in feeds.values()):
            return endings.SHUTDOWN.name
        queued = [feed for feed in feeds.values() if feed.pending]
        if not queued:
            for feed in feeds.values():
                feed.direct = direct
            wakeup.clear()
            await wakeup.wait()
            batch = []
            continue
        batch = []
        for feed in queued:
            ids.resume(feed.follower)
            try:
                batch += await feed.follower.admit(feed.take())
            except BusUnavailable:
                return endings.BUS_LOST.name  # a gap we cannot repair now: the client resumes
        if batch:
            frames = ids.frames(batch)
            try:
                async with asyncio.timeout(write_timeout):
                    await response.write(frames)
            except TimeoutError:
                return _stalled(request, state)
            found.sent += len(frames)


def _stalled(request: web.Request, state: GatewayState) -> str:
    """A write that could not finish in time: a client that does not read, cut off (and
    counted with those whose queue overflowed)."""
    state.metrics.tally.slow_consumers += 1
    _cut_off(request)
    return endings.TOO_SLOW.name


def _cut_off(request: web.Request) -> None:
    """Close a client's connection now, dropping what its socket buffer still holds."""
    if request.transport is not None:
        reset(request.transport)
