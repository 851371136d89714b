"""A Python client of the gateway, for services that react to builds (a deploy job, a bot).

It does what the protocol (`docs/protocol.md`) asks of every client, so a caller only reads updates:
it applies deltas in order to a view per build; it reconnects by itself with the
last `id:` as `Last-Event-ID` (after the server's `retry:`, doubled per failed
attempt, capped, with jitter so that clients cut off together do not come back
together); and it resynchronises a build from a fresh snapshot when it sees a
gap in that build's `seq`.

    async with Client("http://127.0.0.1:8080") as client:
        async for update in client.follow("br-7f3a"):        # or ["br-7f3a", "br-6c01"]
            print(update.build_id, update.kind, update.status, update.changes)

Every `follow()` has its own connection, cursor and views: nothing is shared
between two follows, nothing lives at module level. The server never imports
this module; it imports only `gateway.protocol` of the server's code. Its
errors are drawn in `gateway.client.errors`.

`follow()` never gives up on a gateway that is down, restarting or answering
5xx: it retries until the caller stops it (`asyncio.timeout` bounds a wait) and
reports each outage and recovery to `on_connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from gateway.aio import Closing
from gateway.client.errors import (
    ClientError,
    InvalidBuildId,
    NotAGateway,
    Unavailable,
    final,
    said,
)
from gateway.client.updates import Connectivity, OnConnection, Update, backoff
from gateway.protocol import codec
from gateway.protocol.diff import apply, diff
from gateway.protocol.resume import parse_token
from gateway.protocol.rules import BUILD_ID_RULE, PAUSED, Code, is_build_id
from gateway.protocol.view import Changes, View, is_changes, is_view

log = logging.getLogger(__name__)

Token = str | Callable[[], str | Awaitable[str]]
"""An access token, or a function that gives the current one (asked on every connection)."""

_RETRYABLE_4XX = frozenset({408, 425})
"""4xx answers that a later try may not get; so is a 429 that says when (`Retry-After`):
a 429 without it is a limit the request itself breaks (more builds than a stream holds)."""


class Client(Closing):
    """One gateway. Use as `async with`; closing it ends every follow it started."""

    def __init__(
        self,
        gateway: str,
        *,
        http: httpx.AsyncClient | None = None,
        retry: float = 1.0,
        max_backoff: float = 10.0,
        read_timeout: float = 45.0,
        token: Token | None = None,
    ) -> None:
        """`http`: an httpx client to use (and not close), e.g. with a test transport.
        `retry`: the reconnect delay until the server sends its own. `read_timeout` exceeds
        the server's 15 s heartbeat, so it only fires on a connection that silently died.
        `token`: the access token a gateway with access control asks for; or a function
        that gives the current one, asked on every connection: when a token expires, the
        follow gets a new one from it and resumes where it was."""
        parts = urlsplit(gateway)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{gateway!r} is not an http(s) URL")
        self.gateway = gateway.rstrip("/")
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=read_timeout), follow_redirects=True
        )
        self._retry = retry
        self._max_backoff = max_backoff
        self._token = token
        self._follows: list[Follow] = []

    async def aclose(self) -> None:
        follows, self._follows = self._follows, []
        for follow in follows:
            # RuntimeError: another task is inside that follow right now; it ends with the
            # closed connection instead.
            with contextlib.suppress(RuntimeError):
                await follow.aclose()
        if self._own_http:
            await self._http.aclose()

    async def view(self, build_id: str) -> View:
        """The build's current view (`GET /api/v1/builds/{id}`), one request, no retry."""
        url = f"{self.gateway}/api/v1/builds/{_path(build_id)}"
        try:
            response = await self._http.get(url, headers=await self._authorization())
        except httpx.TransportError as exc:
            raise Unavailable(f"gateway {self.gateway} {_unreachable(exc)}") from exc
        if response.status_code != 200:
            raise _refusal(response, url, build_id)
        try:
            view = codec.loads(response.content)
        except ValueError:
            view = None
        if not is_view(view):
            raise NotAGateway(f"{url} did not answer with a build view")
        return view

    def follow(
        self,
        build_ids: str | Sequence[str],
        *,
        until_ended: bool = False,
        on_connection: OnConnection | None = None,
    ) -> Follow:
        """The updates of one build (a str) or several on one connection (a sequence).

        Runs until the caller stops (break, `aclose()`, a timeout), or with `until_ended`
        until every build has ended or is gone. A one-build follow raises BuildNotFound,
        InvalidBuildId or GatewayError when the build cannot be followed; a multi-build
        follow yields a `gone` update for that build and goes on with the others.
        """
        single = isinstance(build_ids, str)
        builds = [build_ids] if isinstance(build_ids, str) else list(dict.fromkeys(build_ids))
        if not builds:
            raise ValueError("follow at least one build")
        for build_id in builds:
            _path(build_id)  # raises InvalidBuildId
        state = _Stream(self.gateway, builds, single, self._retry, renewable=callable(self._token))
        follow = Follow(self._run(state, until_ended, on_connection or _ignore), self._follows)
        self._follows.append(follow)
        return follow

    async def _authorization(self) -> dict[str, str]:
        given = self._token() if callable(self._token) else self._token
        token = await given if inspect.isawaitable(given) else given
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _run(
        self, state: _Stream, until_ended: bool, on_connection: OnConnection
    ) -> AsyncGenerator[Update, None]:
        failures = 0
        down = False
        while state.following:
            problem: str | None = None
            opened = False
            try:
                headers = state.headers() | await self._authorization()
                async with aconnect_sse(
                    self._http, "GET", state.url(), params=state.params(), headers=headers
                ) as source:
                    response = source.response
                    if response.status_code != 200 or not _is_event_stream(response):
                        await response.aread()
                        refusal = _refusal(response, state.url(), state.only())
                        renew = state.renewable and response.status_code == 401
                        if not (isinstance(refusal, Unavailable) or renew):
                            raise refusal
                        problem = str(refusal)  # a token being renewed: try the next one
                    else:
                        opened, failures = True, 0
                        if down:
                            down = False
                            on_connection(Connectivity(True, ""))
                        async with contextlib.aclosing(source.aiter_sse()) as events:
                            async for event in events:
                                for update in state.take(event):
                                    yield update
                                    if until_ended and update.ended:
                                        state.stop(update.build_id)
                                if not state.following or state.resyncing:
                                    break
            except httpx.TransportError as exc:
                # A stream that broke after it opened (a replica died, a slow reader was cut
                # off) is no outage yet: only a failed reconnect is.
                if opened:
                    log.debug("stream from %s broke: %s", self.gateway, exc)
                else:
                    problem = _unreachable(exc)
            if problem is not None:
                failures += 1
                log.debug("gateway %s: %s (attempt %d)", self.gateway, problem, failures)
                if not down:
                    down = True
                    on_connection(Connectivity(False, problem))
                await asyncio.sleep(backoff(failures, state.retry, self._max_backoff))
            elif state.resyncing:
                state.resyncing = False  # at once: the server is fine, our view is not
            elif state.following:
                await asyncio.sleep(backoff(1, state.retry, self._max_backoff))


class Follow(Closing):
    """The updates of one `Client.follow()`: an async iterator; `aclose()` ends it and its
    connection (so does leaving `async with`, or closing the client)."""

    def __init__(self, updates: AsyncGenerator[Update, None], owner: list[Follow]) -> None:
        self._updates = updates
        self._owner = owner

    def __aiter__(self) -> Follow:
        return self

    async def __anext__(self) -> Update:
        try:
            return await self._updates.__anext__()
        except BaseException:  # it ended (done, raised or cancelled): the client forgets it
            with contextlib.suppress(ValueError):
                self._owner.remove(self)
            raise

    async def aclose(self) -> None:
        with contextlib.suppress(ValueError):
            self._owner.remove(self)
        await self._updates.aclose()


# --- one follow's state: what it follows, where it is, what each build looks like


@dataclass(eq=False)
class _Stream:
    gateway: str
    following: list[str]
    single: bool
    retry: float  # seconds; the server's `retry:` replaces it
    views: dict[str, View] = field(default_factory=dict)
    cursor: str | None = None  # the last `id:`: a token per build, `~`-joined
    resyncing: bool = False
    renewable: bool = False  # the token comes from a function: an expired one is renewed

    def url(self) -> str:
        if self.single:
            return f"{self.gateway}/api/v1/builds/{_path(self.following[0])}/stream"
        return f"{self.gateway}/api/v1/stream"

    def params(self) -> list[tuple[str, str]]:
        return [] if self.single else [("build", build_id) for build_id in self.following]

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.cursor} if self.cursor else {}

    def only(self) -> str | None:
        return self.following[0] if self.single else None

    def stop(self, build_id: str) -> None:
        with contextlib.suppress(ValueError):
            self.following.remove(build_id)

    def take(self, event: ServerSentEvent) -> list[Update]:
        if event.retry is not None and event.retry >= 0:
            self.retry = event.retry / 1000
        if event.event not in ("snapshot", "delta", "error"):
            return []  # the `retry:` block, or a kind a later gateway may add
        try:
            data = codec.loads(event.data)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("buildId"), str):
            raise NotAGateway(f"{self.url()} sent a {event.event} that is not Buildcast's JSON")
        build_id: str = data["buildId"]
        if build_id not in self.following:
            self._advance(event)
            return []
        update: Update | None
        if event.event == "snapshot":
            update = self._snapshot(build_id, data, event)
        elif event.event == "delta":
            update = self._delta(build_id, data, event)
        else:
            update = self._error(build_id, data, event)
        if update is not None:
            self._advance(event)
        return [] if update is None else [update]

    def _advance(self, event: ServerSentEvent) -> None:
        if event.id:
            self.cursor = event.id

    def _snapshot(self, build_id: str, data: dict[str, Any], event: ServerSentEvent) -> Update:
        view = data.get("view")
        if not is_view(view) or not isinstance(data.get("seq"), int):
            raise NotAGateway(f"{self.url()} sent a malformed snapshot of {build_id}")
        previous = self.views.get(build_id)
        changes: Changes | None = None if previous is None else diff(previous, view)
        self.views[build_id] = view
        changes = view if changes is None else changes
        return Update(build_id, "snapshot", view, changes, previous, data, event.id or None)

    def _delta(self, build_id: str, data: dict[str, Any], event: ServerSentEvent) -> Update | None:
        seq, changes = data.get("seq"), data.get("changes")
        if not isinstance(seq, int) or not is_changes(changes):
            raise NotAGateway(f"{self.url()} sent a malformed delta of {build_id}")
        previous = self.views.get(build_id)
        if previous is None or seq != previous["seq"] + 1:
            self._resync(build_id)
            return None
        view = apply(previous, seq, changes)
        self.views[build_id] = view
        return Update(build_id, "delta", view, changes, previous, data, event.id or None)

    def _error(self, build_id: str, data: dict[str, Any], event: ServerSentEvent) -> Update | None:
        code, text = str(data.get("code")), str(data.get("message", ""))
        view = self.views.get(build_id)
        if code == PAUSED:
            return Update(build_id, "paused", view, {}, view, data, event.id or None)
        if code == Code.UNAUTHORIZED:  # the token expired: it ends the whole connection
            if not self.renewable:
                raise final(code, said(code, text), None, build_id)
            self.resyncing = True  # reconnect at once, with a new token, from the cursor
            return None
        self.stop(build_id)
        self.views.pop(build_id, None)
        if self.single:
            raise final(code, f"{build_id}: {said(code, text)}", None, build_id)
        return Update(build_id, "gone", view, {}, view, data, event.id or None)

    def _resync(self, build_id: str) -> None:
        """A gap in `build_id`'s seq: reconnect with a cursor that no longer names it, so it
        starts over with a snapshot while the other builds of the stream resume."""
        log.debug("a gap in %s: resynchronising from a snapshot", build_id)
        kept = [t for t in (self.cursor or "").split("~") if t and not parse_token(build_id, t)]
        self.cursor = "~".join(kept) or None
        self.resyncing = True


# --- small pieces
# --- small pieces


def _ignore(change: Connectivity) -> None:
    pass


def _path(build_id: str) -> str:
    """The build id as one path segment; InvalidBuildId for one the gateway would refuse."""
    if not is_build_id(build_id):
        raise InvalidBuildId(
            f"{build_id!r} is not a build id: {BUILD_ID_RULE.removeprefix('a build id is ')}",
            code=Code.INVALID_BUILD_ID,
            build_id=build_id,
        )
    return quote(build_id, safe="")


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def _unreachable(exc: httpx.TransportError) -> str:
    return f"unreachable ({str(exc) or type(exc).__name__})"


def _refusal(response: httpx.Response, url: str, build_id: str | None) -> ClientError:
    """What a non-stream answer means: Unavailable (retry) or a final error.

    A 5xx is retried even without a Buildcast body: a proxy in front of a restarting
    gateway answers 502 in its own words. A 4xx must carry the protocol's error body;
    without one, the URL points at some other server.
    """
    status = response.status_code
    code, text = _error_body(response)
    retry_later = status == 429 and "Retry-After" in response.headers
    if status >= 500 or status in _RETRYABLE_4XX or retry_later:
        words = f" {said(code, text)}" if code else ""
        return Unavailable(f"answered HTTP {status}{words}")
    if status == 200:
        kind = response.headers.get("content-type", "no content type")
        return NotAGateway(f"{url} is not a Buildcast gateway: it answered {kind}, not SSE")
    if code is None:
        return NotAGateway(f"{url} is not a Buildcast gateway: it answered HTTP {status}")
    if build_id is None and code == Code.NOT_FOUND:  # the multi-build route itself is missing
        return NotAGateway(f"{url} is not a Buildcast gateway: {said(code, text)}")
    who = f"{build_id}: " if build_id else ""
    return final(code, f"{who}{said(code, text)}", status, build_id)


def _error_body(response: httpx.Response) -> tuple[str | None, str]:
    """The protocol's `{"error": {"code": ..., "message": ...}}`, or (None, "")."""
    try:
        body = codec.loads(response.content)
    except ValueError:
        return None, ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None, ""
    return error["code"], str(error.get("message", ""))
