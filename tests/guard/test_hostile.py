"""Everything hostile a client can send, tried on a real `buildcast serve`: one row each.

A simulator and a gateway with `--auth-secret` run as processes on loopback (the
hardening of malformed HTTP lives in the real runner, `gateway.cli._listen`, which
aiohttp's TestServer does not use). Each row names what a user or an attacker sends
and the answer expected, in a few words:

- `STATUS CODE`: an HTTP answer and its JSON error code (`400 invalid_build_id`),
  `view` for a build's JSON view, `page` for HTML, or the first SSE event
  (`200 snapshot`);
- `KIND CODE, then pong`: WebSocket replies to a frame, then to a ping (the socket
  stayed open); `close N`: the server closed the socket with code N;
- `closed`: the server dropped a connection that never finished its request.

Every row also checks that the answer echoes none of the hostile input, that every
HTTP answer carries the security headers, and that the gateway logs a malformed
request in one line at most, without a traceback. The floods count what reached
the upstream in the simulator's `/_sim/stats`. The last test reads the gateway's
whole stderr: no traceback, no raw CR, LF or bidi control from anyone's text.

The rows and what each got are written to tests/artifacts/hostile.json.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from yarl import URL

from gateway.guard.tokens import mint
from gateway.protocol.rules import is_build_id
from tests.helpers.attack import (
    HeldOpen,
    RawAnswer,
    client_hello,
    exchange,
    ws_frame,
    ws_open,
    ws_read,
)
from tests.helpers.gateways import ARTIFACTS
from tests.helpers.procs import Proc, Procs
from tests.helpers.sse import events

SECRET = "hostile-rows-secret-" + "0123456789abcdef" * 3  # 68 bytes: HS512 wants 64
ARTIFACT = ARTIFACTS / "hostile.json"

HEADER_TIMEOUT = 10.0  # Settings.header_timeout: not an option, so the real one
NEW_BUILDS_PER_SECOND = 20  # Settings.new_builds_per_second (also its burst)
SOCKET_BUILDS = 50  # a socket's cap, refused subscriptions included
FRAME_BURST = 50  # Settings.ws_frame_burst
FRAMES_PER_SECOND = 20  # Settings.ws_frames_per_second

MALFORMED = {"error": {"code": "bad_request", "message": "malformed HTTP request"}}
REJECTED = b"rejected a malformed request from"
FORGED = "2026-01-01 00:00:00,000 CRITICAL gateway: forged by the upstream"
"""A log line an upstream's partition ref tries to start, after a CR LF."""

TARGET, OTHER = "hostile-target", "hostile-other"
ANY = "a valid token for every build"
"""`bearer=ANY`: a fresh token whose claim is `*`."""


# --- the gateway under attack


class Target:
    """The gateway and its simulator, and what the rows observed."""

    def __init__(self, gateway: Proc, simulator: Proc) -> None:
        self.gateway = gateway
        self.simulator = simulator
        url = URL(gateway.url)
        assert url.host is not None and url.port is not None
        self.host, self.port = url.host, url.port
        self.started = time.monotonic()
        self.held: dict[str, HeldOpen] = {}
        self.rows: list[dict[str, Any]] = []
        self.log: dict[str, Any] = {}
        self.findings: list[dict[str, Any]] = []  # what the tests beside the table observed

    def url(self, path: str) -> URL:
        """`path` on the gateway exactly as written: percent-escapes and dot segments kept."""
        return URL(f"{self.gateway.url}{path}", encoded=True)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """The simulator's control API (`/_sim/...`)."""
        response = httpx.request(method, f"{self.simulator.url}{path}", json=body, timeout=10)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def upstream_requests(self, prefix: str) -> int:
        """Requests the upstream served for builds whose id starts with `prefix`."""
        builds: dict[str, int] = self.control("GET", "/_sim/stats")["builds"]
        return sum(count for build_id, count in builds.items() if build_id.startswith(prefix))

    def log_size(self) -> int:
        return len(self.stderr())

    def stderr(self) -> bytes:
        return self.gateway.stderr_path.read_bytes()

    async def log_line(self, since: int, needle: bytes, timeout: float = 5.0) -> bytes:
        """The first line written after `since` that holds `needle` (waits for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.stderr()[since:].splitlines():
                    if needle in line:
                        return line
                await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with Procs(tmp_path_factory.mktemp("hostile")) as procs:
        simulator = procs.simulate("--keep-active", "0")
        gateway = procs.serve(simulator.url, "--auth-secret", SECRET)
        target = Target(gateway, simulator)
        for build_id in (TARGET, OTHER):
            target.control("POST", "/_sim/builds", {"id": build_id, "partitions": 2})
        # The two slow clients start now and are read by the last rows: their 10 s of
        # waiting overlaps with everything else.
        target.held = {
            "silent": HeldOpen(target.host, target.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),
            "dribble": HeldOpen(
                target.host, target.port, b"GET /healthz HTTP/1.1\r\n", drip=b"X-Slow: " + b"a" * 30
            ),
        }
        for client in target.held.values():
            client.start()
        try:
            yield target
        finally:
            _write_artifact(target)
    print(procs.report())


def _write_artifact(target: Target) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    recorded = {
        "gateway": "buildcast serve --auth-secret S, in front of buildcast simulate, on 127.0.0.1",
        "rows": target.rows,
        "log": target.log,
        "findings": target.findings,
    }
    ARTIFACT.write_text(json.dumps(recorded, indent=2, ensure_ascii=True) + "\n")


# --- what a row sends and what it observed


@dataclass
class Answer:
    """What a row got: its answer in words, every byte received, and facts for the record."""

    summary: str
    received: bytes = b""
    sent: list[bytes] = field(default_factory=list)  # hostile inputs, never to come back
    facts: dict[str, Any] = field(default_factory=dict)


Probe = Callable[[Target], Awaitable[Answer]]


@dataclass(frozen=True)
class Row:
    name: str
    sends: str
    expect: str
    probe: Probe
    hostile: tuple[bytes, ...] = ()  # inputs the answer must not echo (besides headers sent)
    malformed: bool = False  # refused by the HTTP parser: one log line at most

    def param(self) -> Any:
        return pytest.param(self, id=self.name)


def param(row: Row | Any) -> Any:
    return row.param() if isinstance(row, Row) else row


def token(*patterns: str, ttl: float = 3600) -> str:
    return mint(SECRET, list(patterns) or ["*"], ttl)


def forged(claims: dict[str, Any], algorithm: str = "HS256", key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def claims(exp: int | None = 3600, **changes: Any) -> dict[str, Any]:
    """A token's claims: every build, `exp` seconds from now (None: no exp), and `changes`."""
    found: dict[str, Any] = {"builds": ["*"], **changes}
    if exp is not None:
        found["exp"] = int(time.time()) + exp
    return found


def unsigned(payload: dict[str, Any]) -> str:
    """`alg: none`: a token anyone can write."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def _security_headers(path: str, response: aiohttp.ClientResponse) -> None:
    headers = response.headers
    assert headers["Server"] == "buildcast", "no version to look exploits up by"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    if response.content_type == "text/html":
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    elif response.content_type == "text/event-stream":
        assert headers["Cache-Control"] == "no-cache"
    elif path.startswith("/api/"):
        assert headers["Cache-Control"] == "no-store"


async def http(
    target: Target,
    path: str,
    *,
    bearer: str | None = ANY,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One GET; its answer in words: status and error code, `view`, `page` or first event."""
    sent = dict(headers or {})
    if bearer == ANY:
        bearer = token()
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    hostile = [value.encode() for value in sent.values() if len(value) >= 8]
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(target.url(path), headers=sent) as response,
    ):
        _security_headers(path, response)
        head = f"HTTP/1.1 {response.status}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in response.headers.items()
        )
        if response.content_type == "text/event-stream":
            async with asyncio.timeout(5):
                first = await anext(aiter(events(response)))
            received = f"id: {first.id}\nevent: {first.event}\ndata: {json.dumps(first.data)}"
            return Answer(f"{response.status} {first.event}", (head + received).encode(), hostile)
        body = await response.read()
    if response.content_type == "text/html":
        what = "page"
    else:
        data = json.loads(body)
        what = data["error"]["code"] if "error" in data else "view"
    return Answer(f"{response.status} {what}", head.encode() + body, hostile)


def get(path: str, **kwargs: Any) -> Probe:
    return lambda target: http(target, path, **kwargs)


def with_token(path: str, make: Callable[[], str], **kwargs: Any) -> Probe:
    """A GET with the token `make()` mints when the row runs (tokens expire)."""
    return lambda target: http(target, path, bearer=make(), **kwargs)


def raw(data: bytes) -> Probe:
    """Bytes straight onto the socket; the answer must be the protocol's own 400."""

    async def probe(target: Target) -> Answer:
        answer: RawAnswer = await asyncio.to_thread(exchange, target.host, target.port, data)
        assert answer.headers.get("server") == "buildcast", answer.raw[:300]
        assert answer.headers.get("x-content-type-options") == "nosniff"
        if answer.status == 400:
            assert answer.json() == MALFORMED, "the protocol's error, quoting nothing back"
        code = answer.json()["error"]["code"] if answer.body.startswith(b"{") else "-"
        facts = {"headers": sorted(answer.headers)}
        return Answer(f"{answer.status} {code}", answer.raw, facts=facts)

    return probe


# --- WebSocket


class Wire:
    """One WebSocket as a test drives it: every byte received kept for the echo check."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received = b""

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        """The next message, or `{"type": "close", "code": N}` once the server closed."""
        async with asyncio.timeout(timeout):
            frame = await self.ws.receive()
        if frame.type is aiohttp.WSMsgType.TEXT:
            self.received += frame.data.encode()
            message: dict[str, Any] = json.loads(frame.data)
            return message
        assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), frame
        return {"type": "close", "code": self.ws.close_code}


def said(message: dict[str, Any]) -> str:
    if message["type"] == "error":
        return f"error {message['code']}"
    if message["type"] == "close":
        return f"close {message['code']}"
    return str(message["type"])


@contextlib.asynccontextmanager
async def websocket(target: Target, query: str = "") -> AsyncIterator[Wire]:
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {} if query else {"Authorization": f"Bearer {token()}"}
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(target.url(f"/api/v1/ws{query}"), headers=headers) as ws,
    ):
        yield Wire(ws)


def frame_then_ping(frame: dict[str, Any] | str | bytes) -> Probe:
    """A frame, then a ping: the answer to each, in order (`pong` means it stayed open)."""

    async def probe(target: Target) -> Answer:
        async with websocket(target) as wire:
            await wire.send(frame)
            first = await wire.next()
            if first["type"] == "close":
                return Answer(said(first), wire.received)
            await wire.send({"op": "ping"})
            second = await wire.next()
        return Answer(f"{said(first)}, then {said(second)}", wire.received)

    return probe


def subscribe_since(make: Callable[[Target], Awaitable[str]]) -> Probe:
    """Subscribe to the target build with `since: make(target)`: the build's first message."""

    async def probe(target: Target) -> Answer:
        given = await make(target)
        async with websocket(target) as wire:
            await wire.send({"op": "subscribe", "buildId": TARGET, "since": given})
            first = await wire.next()
        return Answer(said(first), wire.received, [given.encode()])

    return probe


async def first_id(build_id: str, target: Target) -> str:
    """The id of the first message of `build_id`'s stream: a real resume token."""
    path = f"/api/v1/builds/{build_id}/stream"
    timeout = aiohttp.ClientTimeout(total=10)
    headers = {"Authorization": f"Bearer {token()}"}
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(target.url(path), headers=headers) as response,
    ):
        first = await anext(aiter(events(response)))
    assert first.id is not None
    return first.id


async def resume(target: Target, make: Callable[[Target], Awaitable[str]]) -> Answer:
    """The target's stream, resumed with `Last-Event-ID: make(target)`."""
    last = await make(target)
    path = f"/api/v1/builds/{TARGET}/stream"
    return await http(target, path, headers={"Last-Event-ID": last})


def resumed(make: Callable[[Target], Awaitable[str]]) -> Probe:
    return lambda target: resume(target, make)


async def foreign(target: Target) -> str:
    return await first_id(OTHER, target)


async def from_the_future(target: Target) -> str:
    epoch, _, tag = (await first_id(TARGET, target)).split(".")
    return f"{epoch}.999999999999999999.{tag}"


async def long_cursor(target: Target) -> str:
    """300 tokens of builds that do not exist, `~`-joined: about 8 KB, under aiohttp's 8190."""
    return "~".join(f"{secrets.token_hex(4)}.{n}.{secrets.token_hex(4)}" for n in range(300))


async def garbage(target: Target) -> str:
    return "../../etc/passwd;<script>HOSTILE</script>"


async def dot_dot(target: Target) -> Answer:
    answer = await http(target, "/api/v1/builds/..")
    asked = target.control("GET", "/_sim/stats")["builds"].get("..")
    answer.facts["upstream_requests_for_dot_dot"] = asked
    assert asked == 1, "the id went upstream as one segment, not as a walk up the path"
    return answer


# --- the floods: bounded in count and time, each checked against the upstream's count


class Pacer:
    """Client-side token bucket: frames at `rate` a second after a `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._at = burst, time.monotonic()

    async def wait(self) -> None:
        while True:
            at = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (at - self._at) * self._rate)
            self._at = at
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


async def random_ids_over_http(target: Target) -> Answer:
    await asyncio.sleep(1.1)  # this address's allowance of new builds is full again
    ids = [f"flood-http-{secrets.token_hex(5)}" for _ in range(200)]
    answers: Counter[str] = Counter()
    retry_after: set[str | None] = set()
    headers = {"Authorization": f"Bearer {token()}"}
    gate = asyncio.Semaphore(20)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def ask(build_id: str) -> None:
            async with (
                gate,
                session.get(target.url(f"/api/v1/builds/{build_id}"), headers=headers) as response,
            ):
                answers[f"{response.status} {(await response.json())['error']['code']}"] += 1
                if response.status == 429:
                    retry_after.add(response.headers.get("Retry-After"))

        started = time.monotonic()
        async with asyncio.timeout(30):
            await asyncio.gather(*(ask(build_id) for build_id in ids))
        elapsed = time.monotonic() - started
    upstream = target.upstream_requests("flood-http-")
    bound = NEW_BUILDS_PER_SECOND * (1 + elapsed)
    facts = {
        "ids": len(ids),
        "answers": dict(answers),
        "seconds": round(elapsed, 2),
        "upstream_requests": upstream,
        "bound": f"20 + 20/s x {elapsed:.2f} s = {bound:.0f}",
        "retry_after": sorted(r or "" for r in retry_after),
    }
    assert upstream <= bound + 1, facts
    assert retry_after and all(r and r.isdigit() and int(r) >= 1 for r in retry_after), facts
    return Answer(" + ".join(sorted(answers)), facts=facts)


async def one_unknown_id_over_and_over(target: Target) -> Answer:
    build_id = f"ghost-{secrets.token_hex(5)}"
    answers: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token()}"}
        for _ in range(30):
            async with session.get(
                target.url(f"/api/v1/builds/{build_id}"), headers=headers
            ) as response:
                answers[f"{response.status} {(await response.json())['error']['code']}"] += 1
    upstream = target.upstream_requests(build_id)
    facts = {"answers": dict(answers), "upstream_requests": upstream}
    assert upstream == 1, facts
    return Answer(" + ".join(f"{n} x {a}" for a, n in sorted(answers.items())), facts=facts)


async def random_subscribes_on_one_socket(target: Target) -> Answer:
    await asyncio.sleep(1.1)  # this address's allowance of new builds is full again
    ids = [f"flood-ws-{secrets.token_hex(5)}" for _ in range(200)]
    codes: Counter[str] = Counter()
    # Under both the frame limit and the address's new builds a second: only the cap acts.
    pacer = Pacer(rate=NEW_BUILDS_PER_SECOND - 1, burst=NEW_BUILDS_PER_SECOND)
    started = time.monotonic()
    async with websocket(target) as wire:
        async with asyncio.timeout(40):
            for build_id in ids:
                await pacer.wait()
                await wire.send({"op": "subscribe", "buildId": build_id})
                reply = await wire.next()
                assert reply.get("buildId") == build_id, reply
                codes[said(reply)] += 1
            await pacer.wait()
            await wire.send({"op": "ping"})
            last = await wire.next()
    upstream = target.upstream_requests("flood-ws-")
    facts = {
        "subscribes": len(ids),
        "replies": dict(codes),
        "seconds": round(time.monotonic() - started, 2),
        "upstream_requests": upstream,
        "bound": SOCKET_BUILDS,
    }
    assert upstream <= SOCKET_BUILDS, facts
    assert codes["error not_found"] == upstream, "each request upstream is one not_found"
    replies = "+".join(sorted(code.removeprefix("error ") for code in codes))
    return Answer(f"error {replies}, then {said(last)}", wire.received, facts=facts)


def ping_flood(target: Target) -> Answer:
    """Pings one by one (1,000 at most) until the server stops taking them, then what came
    back. On a raw socket: an asyncio client whose write fails on the server's close
    gives up before reading the close frame (it reports 1006)."""
    headers = {"Authorization": f"Bearer {token()}"}
    sock = ws_open(target.host, target.port, "/api/v1/ws", headers)
    ping = ws_frame(b'{"op":"ping"}')
    sent = 0
    started = time.monotonic()
    with sock:
        with contextlib.suppress(OSError):  # the server closed: the flood stops here
            while sent < 1000:
                sock.sendall(ping)
                sent += 1
                time.sleep(0.0005)
        elapsed = time.monotonic() - started
        frames, ending = ws_read(sock)
    pongs = sum(opcode == 0x1 and json.loads(data) == {"type": "pong"} for opcode, data in frames)
    closes = [int.from_bytes(data[:2], "big") for opcode, data in frames if opcode == 0x8]
    facts = {"pings_sent": sent, "pongs": pongs, "ending": ending, "seconds": round(elapsed, 3)}
    assert pongs <= FRAME_BURST + FRAMES_PER_SECOND * elapsed + 1, facts
    received = b"".join(data for _, data in frames)
    return Answer(f"close {closes[0]}" if closes else ending, received, facts=facts)


async def one_megabyte_frame(target: Target) -> Answer:
    async with websocket(target) as wire:
        await wire.send("HOSTILE" + "x" * (1 << 20))
        return Answer(said(await wire.next()), wire.received)


async def query_token_websocket(target: Target) -> Answer:
    async with websocket(target, f"?token={token()}") as wire:
        await wire.send({"op": "ping"})
        return Answer(f"101 {said(await wire.next())}", wire.received)


def upgrade(**headers: str) -> dict[str, str]:
    """The headers of a WebSocket handshake, plus `headers`."""
    key = base64.b64encode(os.urandom(16)).decode()
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key,
        **headers,
    }


# --- slow clients, read last: they were started with the gateway


def held_open(name: str) -> Probe:
    async def probe(target: Target) -> Answer:
        client = target.held[name]
        await asyncio.to_thread(client.join, 30)
        closed = client.closed_after
        facts = {"closed_after_s": None if closed is None else round(closed, 2)}
        facts["dripped_bytes"] = client.dripped
        assert closed is not None and HEADER_TIMEOUT - 1 <= closed <= HEADER_TIMEOUT + 3, facts
        summary = "closed" if not client.received else f"closed after {client.received[:40]!r}"
        return Answer(summary, client.received, facts=facts)

    return probe


# --- text from the upstream, into the gateway's log


async def upstream_text_in_logs(target: Target) -> Answer:
    """A build whose partition ref holds CR LF, a bidi override, NEL and a line separator.

    The simulator's fault answers the first look with that build, then the partition's
    status read with the same body, which is no partition status: the gateway logs
    that the partition was not read, naming the ref."""
    ref = f"evil\r\n{FORGED}\u202e\x85\u2028txt"
    build = {
        "build_request_id": "log-probe",
        "status": "BuildRequestExecuting",
        "requested_partitions": [ref],
        "created_at": 1795766400000000000,
        "updated_at": 1795766400000000000,
        "events": [],
    }
    since = target.log_size()
    target.control("POST", "/_sim/faults", {"body": json.dumps(build), "count": 2})
    try:
        answer = await http(target, "/api/v1/builds/log-probe")
        line = await target.log_line(since, b"not read")
    finally:
        target.control("DELETE", "/_sim/faults")
    text = line.decode()
    answer.facts["log_line"] = text
    assert "evil\\x0d\\x0a" + FORGED + "\\u202e\\x85\\u2028txt" in text, text
    return answer


# --- the table: row constructors for the common shapes, then the rows

BUILD = f"/api/v1/builds/{TARGET}"
STREAM = f"{BUILD}/stream"
BIDI = "%E2%80%AE"  # U+202E RIGHT-TO-LEFT OVERRIDE, percent-encoded
RLO = "\u202e".encode()
UNAUTHORIZED = "401 unauthorized"
INVALID_ID = "400 invalid_build_id"
BAD_FRAME = "error bad_request, then pong"
HOSTILE = b"HOSTILE"  # a marker in hostile input: no answer may hold it
CURSOR_10KB = "HOSTILE" * 1500
EVIL_ORIGIN = "https://evil.example/<script>HOSTILE</script>"


def id_row(name: str, build_id: str, expect: str, *hostile: bytes, sends: str = "") -> Row:
    """GET the view of `build_id` (as written on the wire) with a token for every build."""
    path = f"/api/v1/builds/{build_id}"
    return Row(name, sends or f"GET {path}", expect, get(path), hostile)


def token_row(name: str, sends: str, make: Callable[[], str], expect: str = UNAUTHORIZED) -> Row:
    """GET the target's view with the token `make()` mints when the row runs."""
    return Row(name, sends, expect, with_token(BUILD, make))


def raw_row(name: str, sends: str, data: bytes, *hostile: bytes) -> Row:
    """Bytes the HTTP parser refuses: the runner's 400, one log line at most."""
    return Row(name, sends, "400 bad_request", raw(data), (HOSTILE, *hostile), malformed=True)


def frame_row(name: str, frame: Any, expect: str = BAD_FRAME, sends: str = "") -> Row:
    """A WebSocket frame, then a ping."""
    shown = sends or (repr(frame) if isinstance(frame, bytes) else json.dumps(frame))
    return Row(name, shown, expect, frame_then_ping(frame), (HOSTILE,))


def request(head: str, *lines: bytes | str) -> bytes:
    """An HTTP/1.1 request: its first line, `Host`, then `lines` as headers."""
    encoded = [line if isinstance(line, bytes) else line.encode() for line in lines]
    return b"\r\n".join([head.encode(), b"Host: x", *encoded]) + b"\r\n\r\n"


ROWS = [
    # Text from the upstream reaches the log only escaped (first: no other poll takes the fault).
    Row(
        "upstream-ref-with-crlf-and-bidi",
        "an upstream build whose partition ref holds CR LF + a forged line, U+202E, NEL, U+2028",
        "200 view",
        upstream_text_in_logs,
    ),
    # --- build ids: 400 before anything else is asked, upstream included
    id_row("id-bidi-override", f"br-{BIDI}exe.txt", INVALID_ID, RLO, b"exe.txt"),
    id_row("id-zero-width-space", "br-%E2%80%8B7f3a", INVALID_ID, "\u200b".encode(), b"7f3a"),
    id_row("id-nul", "br-%00x", INVALID_ID, b"\x00"),
    id_row("id-del", "br-%7Fx", INVALID_ID, b"\x7f"),
    id_row("id-c1-nel", "br-%C2%85x", INVALID_ID, "\x85".encode()),
    id_row("id-c1-csi", "br-%C2%9B31m", INVALID_ID, "\x9b".encode()),
    id_row("id-201-chars", "a" * 201, INVALID_ID, b"a" * 201, sends="GET /api/v1/builds/a*201"),
    id_row("id-200-chars", "a" * 200, "404 not_found", sends="GET /api/v1/builds/a*200 (allowed)"),
    Row(
        "id-dot-dot",
        "GET /api/v1/builds/.. (a raw dot segment: the upstream must be asked for build '..')",
        "404 not_found",
        dot_dot,
    ),
    id_row("id-encoded-slash", "a%2F..%2Fhealthz", INVALID_ID, b"healthz"),
    id_row("id-4kib", "b" * 4096, INVALID_ID, b"b" * 201, sends="GET /api/v1/builds/b*4096"),
    id_row("id-not-utf8", "%FF%FE%C3", "404 not_found", b"\xff", b"\xfe", "\ufffd".encode()),
    Row(
        "id-bidi-without-token",
        "the bidi id with no token: 401 comes before 400",
        UNAUTHORIZED,
        get(f"/api/v1/builds/br-{BIDI}x", bearer=None),
        (RLO,),
    ),
    Row(
        "id-bidi-outside-claim",
        "the bidi id with a token for nightly-*: 400 comes before 403",
        INVALID_ID,
        with_token(f"/api/v1/builds/br-{BIDI}x", lambda: token("nightly-*")),
        (RLO,),
    ),
    Row(
        "id-bidi-in-multi-stream",
        f"GET /api/v1/stream?build={TARGET}&build={BIDI}x",
        INVALID_ID,
        get(f"/api/v1/stream?build={TARGET}&build={BIDI}x"),
        (RLO,),
    ),
    Row(
        "ids-51-in-multi-stream",
        "GET /api/v1/stream with 51 different builds",
        "429 too_many",
        get("/api/v1/stream?" + "&".join(f"build=wall-{n}" for n in range(51))),
    ),
    Row(
        "id-bidi-page",
        f"GET /builds/{BIDI}x (the page: its script checks the id)",
        "200 page",
        get(f"/builds/{BIDI}x", bearer=None),
        (RLO,),
    ),
    # --- access tokens: 401 for anything but an HS256 token that names builds and expires
    Row("token-none", f"GET {BUILD} without a token", UNAUTHORIZED, get(BUILD, bearer=None)),
    Row(
        "token-garbage",
        "Authorization: Bearer x.<HOSTILE>",
        UNAUTHORIZED,
        get(BUILD, bearer="x.<HOSTILE>"),
    ),
    token_row("token-alg-none", "alg none, no signature", lambda: unsigned(claims())),
    token_row(
        "token-wrong-secret",
        "HS256 signed with another secret",
        lambda: forged(claims(), key="another-secret-of-at-least-32-bytes"),
    ),
    token_row(
        "token-hs512", "HS512 with the gateway's own secret", lambda: forged(claims(), "HS512")
    ),
    token_row(
        "token-expired", "exp 60 s ago (beyond the 5 s leeway)", lambda: forged(claims(exp=-60))
    ),
    token_row(
        "token-within-leeway",
        "exp 2 s ago (within the 5 s leeway)",
        lambda: forged(claims(exp=-2)),
        "200 view",
    ),
    token_row("token-no-exp", "no exp", lambda: forged(claims(exp=None))),
    token_row("token-builds-string", 'builds: "*"', lambda: forged(claims(builds="*"))),
    token_row("token-builds-empty", "builds: []", lambda: forged(claims(builds=[]))),
    token_row(
        "token-101-patterns",
        "builds: 101 patterns",
        lambda: forged(claims(builds=[f"b{n}-*" for n in range(101)])),
    ),
    token_row(
        "token-pattern-whitespace",
        f'builds: ["{TARGET} *"]',
        lambda: forged(claims(builds=[f"{TARGET} *"])),
    ),
    token_row("token-sub-not-string", "sub: 42", lambda: forged(claims(sub=42))),
    token_row(
        "token-5kib", "a well-signed token of 5 KiB", lambda: forged(claims(sub="HOSTILE" * 730))
    ),
    Row(
        "token-in-rest-query",
        f"GET {BUILD}?token=<valid> (query tokens are for streams only)",
        UNAUTHORIZED,
        lambda t: http(t, f"{BUILD}?token={token()}", bearer=None),
    ),
    Row(
        "token-in-stream-query",
        f"GET {STREAM}?token=<valid>",
        "200 snapshot",
        lambda t: http(t, f"{STREAM}?token={token()}", bearer=None),
    ),
    Row(
        "token-in-cookie",
        "Cookie: buildcast_token=<valid>",
        "200 view",
        lambda t: http(t, BUILD, bearer=None, headers={"Cookie": f"buildcast_token={token()}"}),
    ),
    token_row(
        "token-outside-claim", "a token for nightly-*", lambda: token("nightly-*"), "403 forbidden"
    ),
    Row(
        "token-unknown-build",
        "GET /api/v1/builds/hostile-nowhere with a token for hostile-*",
        "404 not_found",
        with_token("/api/v1/builds/hostile-nowhere", lambda: token("hostile-*")),
    ),
    Row(
        "token-websocket-none",
        "a WebSocket handshake without a token",
        UNAUTHORIZED,
        get("/api/v1/ws", bearer=None, headers=upgrade()),
    ),
    Row(
        "token-websocket-query",
        "a WebSocket handshake with ?token=<valid>, then a ping",
        "101 pong",
        query_token_websocket,
    ),
    Row(
        "websocket-foreign-origin",
        f"a WebSocket handshake from Origin: {EVIL_ORIGIN}",
        "403 forbidden",
        get("/api/v1/ws", headers=upgrade(Origin=EVIL_ORIGIN)),
        (HOSTILE,),
    ),
    # --- resume tokens: a snapshot, never an error, never a gap
    Row(
        "resume-garbage",
        "Last-Event-ID: ../../etc/passwd;<script>HOSTILE</script>",
        "200 snapshot",
        resumed(garbage),
    ),
    Row(
        "resume-foreign",
        "Last-Event-ID: another build's real token",
        "200 snapshot",
        resumed(foreign),
    ),
    Row(
        "resume-future",
        "Last-Event-ID: this build's epoch and tag, seq 999999999999999999",
        "200 snapshot",
        resumed(from_the_future),
    ),
    Row(
        "resume-8kb-cursor",
        "Last-Event-ID: 300 tokens ~-joined (8 KB, under the 8190 limit)",
        "200 snapshot",
        resumed(long_cursor),
    ),
    Row(
        "resume-query-garbage",
        f"GET {STREAM}?lastEventId=HOSTILE~~..~",
        "200 snapshot",
        get(f"{STREAM}?lastEventId=HOSTILE~~..~"),
        (HOSTILE,),
    ),
    raw_row(
        "resume-10kb-cursor",
        "Last-Event-ID of 10 KB (over aiohttp's 8190-byte limit: the parser refuses it)",
        request(f"GET {STREAM} HTTP/1.1", f"Last-Event-ID: {CURSOR_10KB}"),
    ),
    Row(
        "resume-ws-since-garbage",
        "subscribe with since: ../../etc/passwd;<script>HOSTILE...",
        "snapshot",
        subscribe_since(garbage),
    ),
    Row(
        "resume-ws-since-foreign",
        "subscribe with since: another build's real token",
        "snapshot",
        subscribe_since(foreign),
    ),
    # --- malformed HTTP: the runner answers, quoting nothing, in one log line at most
    raw_row(
        "http-long-request-line",
        "a request line of 9 KB",
        request("GET /HOSTILE" + "a" * 9000 + " HTTP/1.1"),
    ),
    raw_row(
        "http-long-header",
        "a header of 9 KB",
        request("GET /healthz HTTP/1.1", "X-A: HOSTILE" + "a" * 9000),
    ),
    raw_row(
        "http-control-char-in-header",
        "X-A: HOSTILE\\x01x",
        request("GET /healthz HTTP/1.1", b"X-A: HOSTILE\x01x"),
    ),
    raw_row(
        "http-bare-cr-in-header",
        "X-A: HOSTILE\\rInjected: 1 (a bare CR)",
        request("GET /healthz HTTP/1.1", b"X-A: HOSTILE\rInjected: 1"),
        b"Injected",
    ),
    raw_row(
        "http-200-headers",
        "200 headers",
        request("GET /healthz HTTP/1.1", *(f"X-HOSTILE-{n}: v" for n in range(200))),
    ),
    raw_row("http-tls-client-hello", "a TLS ClientHello on the HTTP port", client_hello()),
    raw_row("http-not-http", "HOSTILE HELLO\\r\\n\\r\\n", b"HOSTILE HELLO\r\n\r\n"),
    raw_row(
        "http-nul-in-path",
        "GET /api/v1/builds/HOSTILE\\x00b (a raw NUL)",
        request("GET /api/v1/builds/HOSTILE\x00b HTTP/1.1"),
    ),
    raw_row(
        "http-raw-bidi-in-path",
        "GET /api/v1/builds/HOSTILE<U+202E>b (raw UTF-8)",
        request("GET /api/v1/builds/HOSTILE\u202eb HTTP/1.1"),
        RLO,
    ),
    raw_row(
        "http-smuggling",
        "Content-Length: 5 and Transfer-Encoding: chunked (HOSTILE body)",
        request("POST /healthz HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked")
        + b"7\r\nHOSTILE\r\n0\r\n\r\n",
    ),
    # --- WebSocket frames: bad ones answered, the socket kept; floods and giants closed
    frame_row("ws-binary-frame", b"HOSTILE\x00\x01"),
    frame_row(
        "ws-5kb-frame",
        '{"op":"ping","pad":"HOSTILE' + "x" * 5000 + '"}',
        sends="a 5 KB text frame (over the 4 KiB limit)",
    ),
    Row("ws-1mb-frame", "a 1 MB text frame", "close 1009", one_megabyte_frame),
    frame_row("ws-not-json", "{HOSTILE", sends="{HOSTILE"),
    frame_row("ws-json-not-object", ["HOSTILE"]),
    frame_row("ws-unknown-op", {"op": "HOSTILE"}),
    frame_row("ws-subscribe-without-build", {"op": "subscribe"}),
    frame_row("ws-subscribe-number", {"op": "subscribe", "buildId": 42}),
    frame_row(
        "ws-since-not-string", {"op": "subscribe", "buildId": TARGET, "since": {"HOSTILE": 1}}
    ),
    Row(
        "ws-subscribe-bidi-id",
        "subscribe to br-<U+202E>x (the reply names the frame's own buildId, as documented)",
        BAD_FRAME,
        frame_then_ping({"op": "subscribe", "buildId": "br-\u202ex"}),
    ),
    Row(
        "ws-ping-flood",
        "pings one by one until the server stops taking them",
        "close 1008",
        lambda target: asyncio.to_thread(ping_flood, target),
    ),
    # --- floods, bounded in count and time; the upstream's count is the check
    Row(
        "flood-same-unknown-id",
        "the same unknown id 30 times",
        "30 x 404 not_found",
        one_unknown_id_over_and_over,
    ),
    Row(
        "flood-random-ids-http",
        "200 random ids over HTTP from one address, 20 at a time",
        "404 not_found + 429 too_many",
        random_ids_over_http,
    ),
    Row(
        "flood-random-subscribes",
        "200 subscribes to random ids on one socket, 19 frames/s",
        "error not_found+too_many, then pong",
        random_subscribes_on_one_socket,
    ),
    # --- slow clients, started with the gateway: their 10 s overlap the rows above
    Row(
        "http-partial-headers",
        "a request line and one header, then silence",
        "closed",
        held_open("silent"),
    ),
    Row(
        "http-dribbled-headers",
        "a header dribbled one byte a second",
        "closed",
        held_open("dribble"),
    ),
]


@pytest.mark.parametrize("row", [param(row) for row in ROWS])
async def test_hostile_row(row: Row, target: Target) -> None:
    since = target.log_size()
    started = time.monotonic()
    answer = await row.probe(target)
    seconds = time.monotonic() - started
    logged = target.stderr()[since:]
    rejected = logged.count(REJECTED)
    echoed = [hostile for hostile in (*row.hostile, *answer.sent) if hostile in answer.received]
    target.rows.append(
        {
            "row": row.name,
            "sends": row.sends,
            "expect": row.expect,
            "observed": answer.summary,
            "seconds": round(seconds, 2),
            **({"facts": answer.facts} if answer.facts else {}),
            **({"log_lines": rejected} if row.malformed else {}),
            **({"echoes": [e.decode(errors="replace")[:80] for e in echoed]} if echoed else {}),
        }
    )
    assert answer.summary == row.expect, answer.received[:500]
    assert not echoed, f"the answer echoes {echoed[0][:80]!r}: {answer.received[:500]!r}"
    assert b"Traceback" not in logged, logged.decode(errors="replace")[-3000:]
    if row.malformed:
        assert rejected <= 1, logged.decode(errors="replace")


UNSAFE_IN_LOG = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]"
)


def test_the_log_has_no_traceback_and_no_raw_attacker_text(target: Target) -> None:
    """Read after the rows: what the whole run left in the gateway's stderr."""
    log = target.stderr().decode()
    lines = log.splitlines()  # str.splitlines: also at NEL, U+2028 and the other breaks
    gone = [line for line in lines if "stopped polling" in line]
    uptime = time.monotonic() - target.started
    target.log.update(
        {
            "lines": len(lines),
            "tracebacks": log.count("Traceback"),
            "rejected_malformed": sum(REJECTED.decode() in line for line in lines),
            "gone_lines": len(gone),
            "gone_bound": f"10 + 1/s x {uptime:.0f} s",
            "held_back": [line.split("(and ", 1)[1] for line in gone if "(and " in line],
        }
    )
    assert "Traceback" not in log, log[-3000:]
    assert not UNSAFE_IN_LOG.search(log), [line for line in lines if UNSAFE_IN_LOG.search(line)]
    assert log.count("\n") == len(lines), "no line break but LF"
    assert not any(line.startswith(FORGED[:20]) for line in lines), "a forged line"
    malformed = sum(1 for row in target.rows if "log_lines" in row)
    assert target.log["rejected_malformed"] <= malformed
    assert len(gone) <= 10 + uptime + 1, "lines about builds gone upstream are throttled"


def test_no_invalid_build_id_ever_reached_the_upstream(target: Target) -> None:
    asked: dict[str, int] = target.control("GET", "/_sim/stats")["builds"]
    target.log["upstream_builds_asked"] = len(asked)
    assert asked, "the rows asked the upstream for some builds"
    assert [build_id for build_id in asked if not is_build_id(build_id)] == []


def test_malformed_answers_carry_every_answers_headers(target: Target) -> None:
    answer = exchange(target.host, target.port, request("GET /" + "a" * 9000 + " HTTP/1.1"))
    assert answer.json() == MALFORMED
    target.findings.append(
        {"test": "malformed answers' headers", "observed": sorted(answer.headers)}
    )
    assert answer.headers.get("referrer-policy") == "no-referrer", sorted(answer.headers)


def test_not_http_is_one_line_at_debug_level_too(procs: Procs, target: Target) -> None:
    simulator = procs.simulate("--keep-active", "0")
    gateway = procs.serve(simulator.url, "--log-level", "DEBUG")
    url = URL(gateway.url)
    assert url.host is not None and url.port is not None
    for data in (client_hello(), b"HOSTILE HELLO\r\n\r\n"):
        assert exchange(url.host, url.port, data).json() == MALFORMED
    log = gateway.stderr_path.read_text()
    rejected = [line for line in log.splitlines() if "aiohttp.server" in line]
    target.findings.append(
        {
            "test": "not HTTP at --log-level DEBUG",
            "tracebacks": log.count("Traceback"),
            "lines": rejected,
        }
    )
    assert "Traceback" not in log, log[-2000:]
    assert len(rejected) == 2, rejected
