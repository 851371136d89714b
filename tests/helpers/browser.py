"""The one Chromium of a test session, and what page tests share.

Debian's headless Chromium (never a downloaded one) starts once per session
(`Chromium`); each test connects Playwright to it over the DevTools protocol
and works in a fresh browser context of its own, so tests share no cookies,
storage or connections, and none pays for a browser start.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, ConsoleMessage, Locator, Page

from gateway.guard.http import CSP
from gateway.protocol.codec import error_body
from gateway.protocol.diff import apply
from gateway.protocol.resume import build_tag

CHROMIUM = "/usr/bin/chromium"


# The flags a root, offline, headless Chromium needs here: no sandbox for root, and no
# background calls to Google's hosts, which this machine's closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


WEB = Path(__file__).resolve().parents[2] / "web"

PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
"""What the gateway's pages are served with, `FakeGateway`'s too: no page may need inline code."""

OWN_STREAMS = "delete window.SharedWorker;"
"""An init script: the pages then have no shared worker, each tab its own EventSource (the
fallback), and a page's stream requests are its own, for a test to see."""

TOKEN_KEY = "buildcast.token"
"""Where a page keeps the access token it was opened with (sessionStorage)."""

# Before a page's own scripts: every `securitypolicyviolation` event it sees.
_CSP_EVENTS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


class CspWatch:
    """A page's Content-Security-Policy violations: the reports on its console, and the
    `securitypolicyviolation` events, recorded from before its first script runs."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", self._console)

    @classmethod
    async def start(cls, page: Page) -> CspWatch:
        await page.add_init_script(_CSP_EVENTS)
        return cls(page)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.console.append(message.text)

    async def violations(self) -> list[str]:
        events: list[str] = await self.page.evaluate("window.__cspViolations || []")
        return self.console + events


async def set_visibility(page: Page, state: str) -> None:
    """What the browser does when the tab goes to the background or comes back."""
    await page.evaluate(
        """(state) => {
            const define = (name, value) =>
                Object.defineProperty(document, name, {value, configurable: true});
            define("visibilityState", state);
            define("hidden", state === "hidden");
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


async def new_page(browser: Browser, width: int = 1600, height: int = 900, **knobs: Any) -> Page:
    """A wall's page, of its own context; each knob is set as `window.BUILDCAST_WALL_<KNOB>`
    before the page runs."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    settings = "".join(f"window.BUILDCAST_WALL_{k.upper()} = {v!r};" for k, v in knobs.items())
    if settings:
        await context.add_init_script(settings)
    return await context.new_page()


def wall_url(server: TestServer, builds: Sequence[str] = (), **query: str) -> str:
    pairs = [("build", b) for b in builds] + list(query.items())
    return str(server.make_url("/wall")) + ("?" + urlencode(pairs) if pairs else "")


async def gateway_connections(gateway: TestServer) -> dict[str, int]:
    """The SSE streams (sse) and WebSockets (ws) a real gateway holds open now: its /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(gateway.make_url("/metrics")) as response,
    ):
        text = await response.text()
    found = re.findall(r'^buildcast_connections\{transport="(\w+)"\} (\S+)$', text, re.M)
    return {transport: int(float(value)) for transport, value in found}


def tile(page: Page, build_id: str) -> Locator:
    """A wall's tile of one build."""
    return page.locator(f'.tile[data-build-id="{build_id}"]')


def record_requests(page: Page) -> list[str]:
    """The URL of every request the page makes from now on."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


class FakeGateway:
    """The pages' routes with streams the test controls: real HTTP, the real web/ files.

    It holds a view per build (the first one's is `view`). A stream of one build
    (`/api/v1/builds/{id}/stream`) or of several (`/api/v1/stream?build=A&build=B`) gets
    `retry:`, a snapshot of each build its resume id does not name at its current seq,
    then whatever the test sends. Each message's id is a cursor, as the gateway's: the
    `EPOCH.SEQ.TAG` token of every build, `~`-joined. `connections` records each stream
    request's resume id (query or header); after `refuse()`, stream requests get the
    gateway's error body instead (with `Retry-After` when given), until `accept()`.
    Its pages carry the gateway's Content-Security-Policy.

    `/api/v1/ws` is the WebSocket of the same builds (the pages' shared worker uses it):
    `subscribe` records its `since` in `connections` and gets a snapshot unless `since` is
    the build's current token, `unsubscribe` and `ping` do as the gateway's; `send()`,
    `end_streams()` (a close with 1001, as a restart) and `refuse()` (before the upgrade)
    reach both transports. `open_connections()` counts each transport's open ones.
    """

    def __init__(self, view: dict[str, Any], *others: dict[str, Any]) -> None:
        self.views = {v["buildId"]: v for v in (view, *others)}
        self.build_id: str = view["buildId"]
        self.connections: list[str | None] = []
        self.stream_urls: list[str] = []  # each stream request's path and query
        self.rest_requests = 0
        self.refusal: tuple[int, str, str, int | None] | None = None
        self._queues: list[asyncio.Queue[bytes | None]] = []
        self._sockets: list[asyncio.Queue[tuple[str | None, str] | None]] = []

    @property
    def view(self) -> dict[str, Any]:
        return self.views[self.build_id]

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/builds/{build_id}", self._page),
                web.get("/wall", self._wall),
                web.get("/blank", self._blank),
                web.get("/api/v1/builds/{build_id}", self._rest),
                web.get("/api/v1/builds/{build_id}/stream", self._stream),
                web.get("/api/v1/stream", self._stream),
                web.get("/api/v1/ws", self._socket),
                web.static("/static", WEB),
            ]
        )
        app.on_shutdown.append(self._shut_down)
        return app

    async def _shut_down(self, app: web.Application) -> None:
        """Streams and sockets end with the server: nothing waits for a page that stays."""
        self.end_streams()

    def token(self, build_id: str) -> str:
        return f"fake.{self.views[build_id]['seq']}.{build_tag(build_id)}"

    def cursor(self) -> str:
        return "~".join(self.token(build_id) for build_id in self.views)

    def frame(self, kind: str, payload: dict[str, Any], build_id: str) -> bytes:
        data = orjson.dumps({"type": kind, "buildId": build_id, **payload})
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (self.cursor().encode(), kind.encode(), data)

    @staticmethod
    def not_found_frame(build_id: str) -> bytes:
        return b"event: error\ndata: %s\n\n" % orjson.dumps(not_found(build_id))

    def snapshot_frame(self, build_id: str | None = None) -> bytes:
        view = self.views[build_id or self.build_id]
        return self.frame("snapshot", {"seq": view["seq"], "view": view}, view["buildId"])

    def delta(
        self, changes: dict[str, Any], seq: int | None = None, build_id: str | None = None
    ) -> bytes:
        """Apply `changes` to a build's view and return its frame (seq: the next, or as given)."""
        build_id = build_id or self.build_id
        view = self.views[build_id]
        seq = view["seq"] + 1 if seq is None else seq
        self.views[build_id] = apply(view, seq, changes)
        return self.frame("delta", {"seq": seq, "changes": changes}, build_id)

    def error(self, code: str, message: str, build_id: str | None = None) -> bytes:
        return self.frame("error", {"code": code, "message": message}, build_id or self.build_id)

    @staticmethod
    def ws_message(frame: bytes) -> tuple[str | None, str]:
        """An SSE frame of `frame()` as the WebSocket sends it: its build, and its JSON text
        with that build's own token as `id`."""
        fields = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
        data = orjson.loads(fields["data"])
        build_id = data.get("buildId")
        tag = "." + build_tag(build_id) if build_id else "\0"
        token = next((t for t in fields["id"].split("~") if t.endswith(tag)), None)
        return build_id, orjson.dumps({"id": token, **data}).decode()

    def send(self, *frames: bytes) -> None:
        for queue in self._queues:
            for frame in frames:
                queue.put_nowait(frame)
        messages = [self.ws_message(frame) for frame in frames] if self._sockets else []
        for socket in self._sockets:
            for message in messages:
                socket.put_nowait(message)

    def end_streams(self) -> None:
        for queue in self._queues:
            queue.put_nowait(None)
        for socket in self._sockets:
            socket.put_nowait(None)

    def open_connections(self) -> dict[str, int]:
        """The streams (sse) and WebSockets (ws) open now."""
        return {"sse": len(self._queues), "ws": len(self._sockets)}

    def refuse(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        self.refusal = (status, code, message, retry_after)

    def accept(self) -> None:
        self.refusal = None

    async def _page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB / "build.html", headers=PAGE_HEADERS)

    async def _wall(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB / "wall.html", headers=PAGE_HEADERS)

    async def _blank(self, request: web.Request) -> web.Response:
        """A page with the shared scripts and nothing else: for tests of those scripts."""
        scripts = "".join(
            f'<script src="/static/{name}"></script>'
            for name in ("protocol.js", "common.js", "stream.js", "tabs.js")
        )
        return web.Response(
            text=f"<!doctype html>{scripts}", content_type="text/html", headers=PAGE_HEADERS
        )

    async def _rest(self, request: web.Request) -> web.Response:
        self.rest_requests += 1
        return web.json_response(self.view, dumps=lambda v: orjson.dumps(v).decode())

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resume = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
        self.connections.append(resume)
        self.stream_urls.append(request.path_qs)
        if self.refusal is not None:
            return self._refused(*self.refusal)
        build_ids = request.query.getall("build", []) or [request.match_info["build_id"]]
        as_sent = _one_build(build_ids[0]) if "build_id" in request.match_info else _as_is
        held = set((resume or "").split("~"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queues.append(queue)
        try:
            catch_up = [
                self.snapshot_frame(b) if b in self.views else self.not_found_frame(b)
                for b in build_ids
                if b not in self.views or self.token(b) not in held
            ]
            await response.write(b"retry: 500\n\n" + b"".join(map(as_sent, catch_up)))
            while (frame := await queue.get()) is not None:
                await response.write(as_sent(frame))
        except ConnectionResetError:
            pass
        finally:
            self._queues.remove(queue)
        return response

    @staticmethod
    def _refused(status: int, code: str, message: str, retry_after: int | None) -> web.Response:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return web.Response(
            status=status,
            body=error_body(code, message),
            content_type="application/json",
            headers=headers,
        )

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        self.stream_urls.append(request.path_qs)
        if self.refusal is not None:
            return self._refused(*self.refusal)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        queue: asyncio.Queue[tuple[str | None, str] | None] = asyncio.Queue()
        subscribed: set[str] = set()
        self._sockets.append(queue)
        reader = asyncio.create_task(self._read_ops(ws, queue, subscribed))
        try:
            while (item := await queue.get()) is not None:
                build_id, text = item
                if build_id is None or build_id in subscribed:
                    await ws.send_str(text)
        except ConnectionResetError:
            pass
        finally:
            self._sockets.remove(queue)
            reader.cancel()
            await ws.close(code=1001, message=b"server shutdown")
        return ws

    async def _read_ops(
        self,
        ws: web.WebSocketResponse,
        queue: asyncio.Queue[tuple[str | None, str] | None],
        subscribed: set[str],
    ) -> None:
        async for frame in ws:
            op: dict[str, Any] = orjson.loads(frame.data) if frame.type is WSMsgType.TEXT else {}
            build_id = op.get("buildId")
            if op.get("op") == "ping":
                queue.put_nowait((None, '{"type":"pong"}'))
            elif op.get("op") == "unsubscribe":
                subscribed.discard(build_id)
            elif op.get("op") != "subscribe" or not isinstance(build_id, str):
                continue
            elif build_id not in self.views:  # sent, though never subscribed
                queue.put_nowait((None, orjson.dumps(not_found(build_id)).decode()))
            else:
                since = op.get("since")
                self.connections.append(since)
                subscribed.add(build_id)
                if since != self.token(build_id):
                    queue.put_nowait(self.ws_message(self.snapshot_frame(build_id)))
        queue.put_nowait(None)  # the client left


def _as_is(frame: bytes) -> bytes:
    return frame


def _one_build(build_id: str) -> Callable[[bytes], bytes]:
    """Frames as a build's own stream sends them: the `id:` is that build's token alone."""
    tag = build_tag(build_id).encode()

    def as_sent(frame: bytes) -> bytes:
        head, _, rest = frame.partition(b"\n")
        if not head.startswith(b"id: "):
            return frame
        tokens = head.removeprefix(b"id: ").split(b"~")
        return b"id: " + b"~".join(t for t in tokens if t.endswith(b"." + tag)) + b"\n" + rest

    return as_sent


def not_found(build_id: str) -> dict[str, str]:
    """The gateway's error for a build the upstream does not know, as streams carry it."""
    return {"type": "error", "buildId": build_id, "code": "not_found", "message": "no such build"}


def small_view(build_id: str = "br-fake") -> dict[str, Any]:
    refs = ["a/date=1", "b/date=1"]
    return {
        "buildId": build_id,
        "seq": 5,
        "status": "BuildRequestExecuting",
        "createdAtMs": 1_795_766_400_000,
        "updatedAtMs": 1_795_766_412_345,
        "requestedPartitions": refs,
        "partitions": {
            ref: {
                "status": "PartitionBuilding",
                "updatedAtMs": 1_795_766_410_000,
                "delegatedTo": None,
            }
            for ref in refs
        },
        "events": [
            {
                "eventId": "ev-1",
                "timestampMs": 1_795_766_400_000,
                "eventType": "BuildRequestEvent",
                "message": "Build request received",
            },
        ],
        "stale": False,
        "checkedAtMs": None,
    }


_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Chromium:
    """Chromium started once, headless, its DevTools endpoint on loopback; stopped by its PID."""

    def __init__(self) -> None:
        if shutil.which(CHROMIUM) is None:
            raise RuntimeError(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
        self._profile = tempfile.TemporaryDirectory(prefix="buildcast-chromium-")
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                *FLAGS,
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.endpoint = self._endpoint(timeout=30)

    def _endpoint(self, timeout: float) -> str:
        """The DevTools URL Chromium prints once it listens; its stderr is drained after."""
        assert self.process.stderr is not None
        found: list[str] = []
        ready = threading.Event()

        def read(stream: Any) -> None:
            for line in stream:
                if not found and (match := _LISTENING.search(line)):
                    found.append(match[1])
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or not found:
            self.close()
            raise RuntimeError("Chromium did not open its DevTools endpoint")
        return found[0]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._profile.cleanup()
