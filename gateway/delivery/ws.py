"""WebSocket: several builds per socket, subscribed and unsubscribed as the client goes.

Client frames are JSON text: `{"op": "subscribe", "buildId": ..., "since": TOKEN?}`,
`{"op": "unsubscribe", "buildId": ...}`, `{"op": "ping"}`. The server sends
the protocol's messages, each with an `id` field: the resume token to pass as
`since` after a reconnect. A bad frame (not JSON, binary, too large, an unknown
op, a bad build id) gets an `error` with code `bad_request`, and the socket stays
open; more subscriptions than the cap get `too_many`.

The handler's coroutine reads frames and changes subscriptions. A writer task
runs only while there is something queued (replies, a catch-up, a gap, a
socket that fell behind): it sends that and ends. Otherwise the fan-out writes
each message's frame, encoded once for every socket (`Message.ws_wire`), to
the socket directly, so an idle socket costs no task of its own. aiohttp pings the
peer every `heartbeat` seconds and closes a socket whose peer stopped
answering. Close codes, and whether to reconnect: `gateway.protocol.endings`.

A browser Origin that is not allowed is refused with 403 before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from gateway.delivery.expiry import expire_at, expired
from gateway.delivery.fanout import Direct, Subscriber, Wakeup, reset
from gateway.delivery.follow import Follower
from gateway.delivery.http_errors import check_build_id
from gateway.errors import BuildcastError, BuildGone, BusUnavailable, Forbidden, TooMany
from gateway.guard.http import Access, access
from gateway.guard.limits import Bucket
from gateway.ingest.watch import Holding
from gateway.ops.access import visit
from gateway.protocol import codec, endings
from gateway.protocol.endings import Ending
from gateway.protocol.messages import Kind, Message
from gateway.protocol.resume import Position, parse_token, token
from gateway.protocol.rules import MAX_FRAME, Code
from gateway.state import GatewayState

log = logging.getLogger(__name__)


class Refused(Exception):
    """A client frame that cannot be carried out: answered with an error, socket kept."""

    def __init__(self, code: Code, text: str, build_id: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.build_id = build_id


@dataclass(eq=False, slots=True)
class _Feed:
    """One subscribed build: its hold on the watch and its place in the fan-out."""

    subscriber: Subscriber
    held: Holding  # the build's watch, entered
    first: list[Message] = field(default_factory=list)  # the catch-up, sent before live ones


class _Direct(Direct):
    """A socket's transport: each message's frame, encoded once for every socket."""

    __slots__ = ("_ws",)

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport) -> None:
        super().__init__(transport)
        self._ws = ws

    def open(self) -> bool:
        return not self._ws.closed and super().open()  # nothing may follow a close frame

    def wire(self, message: Message) -> bytes:
        return message.ws_wire


class _Kick(Wakeup):
    """A socket's wake-up: it starts the socket's writer, which runs only while there is work."""

    __slots__ = ("_socket",)

    def __init__(self, socket: _Socket) -> None:
        super().__init__()
        self._socket = socket

    def set(self) -> None:
        self._socket.kick()


class _Socket:
    __slots__ = (
        "_direct",
        "_ending",
        "_expiry",
        "_feeds",
        "_followed",
        "_frames",
        "_kick",
        "_refused",
        "_replies",
        "_state",
        "_transport",
        "_who",
        "_writer",
        "_ws",
        "sent",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        state: GatewayState,
        transport: asyncio.Transport,
        who: Access,
    ) -> None:
        settings = state.settings
        self._ws = ws
        self._state = state
        self._transport = transport
        self._who = who
        self._direct = _Direct(ws, transport)
        self._feeds: dict[str, _Feed] = {}
        self._followed: dict[str, None] = {}  # every build it subscribed to, for the access log
        self.sent = 0  # bytes its writer sent (the fan-out's direct writes count apart)
        self._refused = 0  # subscribes that failed: they count toward the cap too
        self._replies: list[bytes] = []  # pongs and errors, sent by the writer in order
        self._frames = Bucket(settings.ws_frames_per_second, settings.ws_frame_burst)
        self._kick = _Kick(self)
        self._ending: Ending | None = None
        # Runs while something is queued; None while the fan-out writes directly.
        self._writer: asyncio.Task[None] | None = None
        self._expiry = expire_at(who, self._expire)

    async def on_frame(self, frame: Any) -> None:
        if not self._frames.take():
            self._end(endings.FLOOD)
            return
        try:
            await self._carry_out(self._parse(frame))
        except Refused as exc:
            body = {"type": "error", "buildId": exc.build_id, "code": exc.code, "message": str(exc)}
            self._reply(body)

    def _parse(self, frame: Any) -> dict[str, Any]:
        if frame.type is not WSMsgType.TEXT:
            raise Refused(
                Code.BAD_REQUEST, "frames are JSON text; binary frames are not understood"
            )
        if len(frame.data) > MAX_FRAME:
            raise Refused(Code.BAD_REQUEST, f"a frame holds at most {MAX_FRAME} bytes")
        try:
            op = codec.loads(frame.data)
        except ValueError:
            raise Refused(Code.BAD_REQUEST, "a frame is one JSON object") from None
        if not isinstance(op, dict):
            raise Refused(Code.BAD_REQUEST, "a frame is one JSON object")
        return op

    async def _carry_out(self, op: dict[str, Any]) -> None:
        kind = op.get("op")
        if kind == "ping":
            self._reply({"type": "pong"})
            return
        if kind not in ("subscribe", "unsubscribe"):
            raise Refused(Code.BAD_REQUEST, "op is one of subscribe, unsubscribe, ping")
        raw = op.get("buildId")
        if not isinstance(raw, str):
            raise Refused(Code.BAD_REQUEST, "buildId is a string")
        try:
            build_id = check_build_id(raw)
        except BuildcastError as exc:
            raise Refused(Code.BAD_REQUEST, str(exc), raw[:200]) from None
        if kind == "unsubscribe":
            await self._unsubscribe(build_id)
            return
        since = op.get("since")
        if since is not None and not isinstance(since, str):
            raise Refused(Code.BAD_REQUEST, "since is a resume token (a string)", build_id)
        await self._subscribe(build_id, parse_token(build_id, since))

    async def _subscribe(self, build_id: str, since: Position | None) -> None:
        if build_id in self._feeds:
            await self._unsubscribe(build_id)  # a resubscribe restarts from `since`
        limit = self._state.settings.stream_builds
        if len(self._feeds) + self._refused >= limit:
            raise Refused(
                Code.TOO_MANY,
                f"a socket follows at most {limit} builds, refused subscriptions included",
                build_id,
            )
        state = self._state
        held = state.watches.watching(build_id, self._who.client)
        try:
            self._who.check(build_id)
            await held.__aenter__()
        except BuildcastError as exc:
            self._refused += 1  # a flood of random ids on one socket ends at the cap
            code = exc.code if isinstance(exc, BuildGone | Forbidden | TooMany) else None
            raise Refused(code or Code.UPSTREAM_UNAVAILABLE, str(exc), build_id) from None
        follower = Follower(state.bus, build_id)
        subscriber = Subscriber(
            follower, state.settings.subscriber_buffer, self._too_slow, self._kick, ws=True
        )
        feed = _Feed(subscriber, held)
        self._feeds[build_id] = feed
        self._followed[build_id] = None
        await state.fanout.attach(subscriber)
        try:
            feed.first = await follower.catch_up(since)
        except BusUnavailable as exc:
            await self._unsubscribe(build_id)
            raise Refused(Code.UPSTREAM_UNAVAILABLE, str(exc), build_id) from None
        if follower.resumed is not None:
            state.metrics.resumes.labels(follower.resumed).inc()
        self.kick()

    async def _unsubscribe(self, build_id: str) -> None:
        feed = self._feeds.pop(build_id, None)
        if feed is not None:
            await self._state.fanout.detach(feed.subscriber)
            await feed.held.__aexit__(None, None, None)

    def _reply(self, body: dict[str, Any]) -> None:
        if len(self._replies) >= self._state.settings.ws_queued_replies:
            self._end(endings.FLOOD)  # asking faster than it reads its answers
            return
        self._replies.append(codec.dumps(body))
        self.kick()

    def _too_slow(self) -> None:
        self._end(endings.TOO_SLOW)

    def _expire(self) -> None:
        """The token expired: each build's stream ends with `unauthorized`, then the socket."""
        for build_id in self._feeds:
            self._replies.append(codec.dumps(expired(build_id)))
        self._end(endings.TOKEN_EXPIRED)

    def shut_down(self) -> None:
        """The replica stops: close with 1001 once what is queued is sent."""
        self._end(endings.SHUTDOWN)

    def _end(self, ending: Ending) -> None:
        self._ending = self._ending or ending
        self.kick()

    def ended(self) -> str:
        """Why the socket ended, for the access log: the server's reason, else the client's."""
        return endings.CLIENT_LEFT if self._ending is None else self._ending.name

    def followed(self) -> tuple[str, ...]:
        return tuple(self._followed)

    def kick(self) -> None:
        """Something to write: start the writer unless it runs (or has closed the socket)."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="ws writer")

    async def _write(self) -> None:
        try:
            await self._drain()
        except Exception:  # a bug: tell the client to come back, keep the traceback for us
            log.exception("websocket writer failed")
            await _close(self._ws, endings.BUG)

    async def _drain(self) -> None:
        """Send replies and queued messages until none is left, then hand the socket back to
        the fan-out and end; or close the socket when it must."""
        write_timeout = self._state.settings.write_timeout
        while True:
            frames = self._replies
            self._replies = []
            for build_id, feed in list(self._feeds.items()):
                batch, feed.first = feed.first, []
                if feed.subscriber.pending:
                    try:
                        batch += await feed.subscriber.follower.admit(feed.subscriber.take())
                    except BusUnavailable:
                        self._ending = endings.BUS_LOST
                frames += [self._frame(feed, m) for m in batch]
                if any(m.ends_stream for m in batch):
                    await self._unsubscribe(build_id)
            if any(feed.subscriber.closed for feed in self._feeds.values()):
                self._ending = endings.SHUTDOWN
            try:
                async with asyncio.timeout(write_timeout):
                    for frame in frames:
                        await self._ws.send_frame(frame, WSMsgType.TEXT)
                        self.sent += len(frame)
            except TimeoutError:
                self._ending = endings.TOO_SLOW
                self._state.metrics.tally.slow_consumers += 1  # as a full queue is
            if self._ending is not None:
                await self._close(self._ending)
                return
            if not frames and not self._replies and not self._queued():
                for feed in self._feeds.values():
                    feed.subscriber.direct = self._direct
                self._writer = None
                return

    def _queued(self) -> bool:
        return any(feed.first or feed.subscriber.pending for feed in self._feeds.values())

    @staticmethod
    def _frame(feed: _Feed, message: Message) -> bytes:
        if message.kind is Kind.ERROR and (at := feed.subscriber.follower.at) is not None:
            return message.ws_text(token(message.build_id, at))
        return message.ws_frame

    async def _close(self, ending: Ending) -> None:
        if ending is endings.TOO_SLOW:
            # It does not read: a close handshake would wait behind the unsent data, and
            # the kernel would keep the socket and its buffer long after. Reset it.
            reset(self._transport)
            return
        await _close(self._ws, ending)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if (writer := self._writer) is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for build_id in list(self._feeds):
            await self._unsubscribe(build_id)
        self.sent += self._direct.sent


def check_origin(request: web.Request, allowed: tuple[str, ...]) -> None:
    """No Origin (a service, a CLI) is fine; a browser's must be ours or allowed.

    Ours is this Host under http or https: behind a TLS proxy the request arrives as
    http, and a page cannot choose another page's Origin, so the scheme adds nothing.
    """
    origin = request.headers.get("Origin")
    if origin is None or origin in allowed:
        return
    if origin in (f"http://{request.host}", f"https://{request.host}"):
        return
    raise Forbidden("this page's Origin may not open a WebSocket here (see --allow-origin)")


async def _close(ws: web.WebSocketResponse, ending: Ending) -> None:
    await ws.close(code=ending.code, message=ending.reason.encode())


async def handle(request: web.Request, state: GatewayState) -> web.StreamResponse:
    check_origin(request, state.settings.allowed_origins)
    transport = request.transport
    if transport is None:  # the client left before the upgrade: nobody reads an answer
        return web.Response(status=400)
    ws = web.WebSocketResponse(
        heartbeat=state.settings.heartbeat,
        max_msg_size=64 * MAX_FRAME,  # beyond this aiohttp closes with 1009; below, we answer
        compress=False,  # frames are encoded once for every subscriber, not per socket
    )
    socket = _Socket(ws, state, transport, access(request))
    found = visit(request)
    found.stream = True
    try:
        state.streams.add(ws, socket.shut_down)  # a 503 before the upgrade once shutting down
        await ws.prepare(request)
        state.metrics.tally.ws += 1
        try:
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await socket.on_frame(frame)
                if ws.closed:  # the writer closed it
                    break
            found.ended = socket.ended()
        except Exception:
            log.exception("websocket failed")
            found.ended = endings.BUG.name
            await _close(ws, endings.BUG)
        finally:
            state.metrics.tally.ws -= 1
    finally:
        await socket.close()
        state.streams.discard(ws)
        found.builds, found.sent = socket.followed(), socket.sent
    return ws
