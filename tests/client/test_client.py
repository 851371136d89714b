"""The Python client (gateway.client) against real gateways on loopback, and against scripted
streams (httpx.MockTransport) for what a healthy gateway never sends: gaps, pauses, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestServer

from gateway.client import (
    BuildNotFound,
    Client,
    Connectivity,
    GatewayError,
    InvalidBuildId,
    NotAGateway,
    Update,
    backoff,
)
from gateway.guard.tokens import mint
from gateway.protocol import codec
from gateway.protocol.resume import Position, token
from gateway.simulator import Simulator
from tests.helpers.gateways import StartGateway, advanced, eventually, gateway_view
from tests.helpers.proxy import Proxy
from tests.helpers.views import a_view

# --- a TCP hop a test can cut, hold down and point at another gateway


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    started = Proxy()
    yield started
    await started.stop()


# --- following in the background, and what a test asks of it


class Watcher:
    """A follow run in a task: every update it yielded, every connectivity change it told."""

    def __init__(self, client: Client, builds: str | Sequence[str], **options: Any) -> None:
        self.updates: list[Update] = []
        self.connectivity: list[Connectivity] = []
        self._follow = client.follow(builds, on_connection=self.connectivity.append, **options)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for update in self._follow:
            self.updates.append(update)

    def view(self, build_id: str) -> dict[str, Any] | None:
        mine = [u.view for u in self.updates if u.build_id == build_id]
        return mine[-1] if mine else None

    def kinds(self, build_id: str, since: int = 0) -> list[str]:
        return [u.kind for u in self.updates[since:] if u.build_id == build_id]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self._follow.aclose()


async def converged(
    watcher: Watcher,
    session: aiohttp.ClientSession,
    gateway: TestServer,
    builds: Sequence[str],
    what: str = "converged",
) -> None:
    """The client's view of every build is the gateway's `GET /api/v1/builds/{id}`."""
    latest: dict[str, Any] = {}

    async def same() -> bool:
        for build_id in builds:
            latest[build_id] = await gateway_view(session, gateway, build_id)
        return all(watcher.view(b) == latest[b] for b in builds)

    try:
        await eventually(same, what=what)
    except AssertionError:
        mine = {b: (watcher.view(b) or {}).get("seq") for b in builds}
        theirs = {b: latest[b]["seq"] for b in latest}
        raise AssertionError(f"{what}: client at {mine}, gateway at {theirs}") from None


async def finished(
    sim: Simulator, session: aiohttp.ClientSession, gateway: TestServer, build_id: str
) -> None:
    """The build ran to its end, and the gateway has published that."""
    sim.finish(build_id)

    async def published() -> bool:
        view = await gateway_view(session, gateway, build_id)
        return bool(view["status"] == sim.status(build_id))

    await eventually(published, what=f"end of {build_id} published")


# --- resume across a cut, and a restart


@pytest.mark.parametrize("count", [1, 2], ids=["one build", "two builds on one stream"])
async def test_a_cut_connection_resumes_with_the_missed_deltas_and_no_snapshot(
    count: int,
    sim: Simulator,
    start_gateway: StartGateway,
    session: aiohttp.ClientSession,
    proxy: Proxy,
) -> None:
    gateway = await start_gateway(retry_ms=200)
    builds = [sim.create_build(4) for _ in range(count)]
    await proxy.start(gateway)
    async with Client(proxy.url) as client:
        watcher = Watcher(client, builds[0] if count == 1 else builds)
        await converged(watcher, session, gateway, builds, "first view")
        for build_id in builds:
            await advanced(sim, session, gateway, build_id)
        await converged(watcher, session, gateway, builds, "live")
        seqs = {b: (await gateway_view(session, gateway, b))["seq"] for b in builds}
        mark = len(watcher.updates)

        await proxy.stop()
        for build_id in builds:  # changes the client misses; the gateway's history keeps them
            for _ in range(3):
                await advanced(sim, session, gateway, build_id)
        await proxy.start()
        await converged(watcher, session, gateway, builds, "resumed")
        for build_id in builds:
            await finished(sim, session, gateway, build_id)
        await converged(watcher, session, gateway, builds, "ended")
        await watcher.stop()

    for build_id in builds:
        kinds = watcher.kinds(build_id, since=mark)
        assert kinds and set(kinds) == {"delta"}, f"{build_id}: {kinds}"
        seq = [u.seq for u in watcher.updates[mark:] if u.build_id == build_id]
        assert seq == list(range(seqs[build_id] + 1, seqs[build_id] + 1 + len(seq)))
        assert watcher.view(build_id)["status"] == "BuildRequestCompleted"  # type: ignore[index]
    assert [c.reachable for c in watcher.connectivity] == [False, True]


@pytest.mark.parametrize("count", [1, 2], ids=["one build", "two builds on one stream"])
async def test_a_restarted_gateway_gives_a_snapshot_that_says_what_changed_meanwhile(
    count: int,
    sim: Simulator,
    start_gateway: StartGateway,
    session: aiohttp.ClientSession,
    proxy: Proxy,
) -> None:
    first = await start_gateway(retry_ms=200)
    builds = [sim.create_build(3) for _ in range(count)]
    await proxy.start(first)
    async with Client(proxy.url) as client:
        watcher = Watcher(client, builds[0] if count == 1 else builds)
        await converged(watcher, session, first, builds, "first view")
        mark = len(watcher.updates)

        await proxy.stop()  # the gateway dies; a new one (a new history: a new epoch) replaces it
        for build_id in builds:
            sim.advance(build_id, 2)
        second = await start_gateway(retry_ms=200)
        await proxy.start(second)
        await converged(watcher, session, second, builds, "caught up after the restart")
        await watcher.stop()

    for build_id in builds:
        after = [u for u in watcher.updates[mark:] if u.build_id == build_id]
        assert after[0].kind == "snapshot"
        # Its changes are what differs from the view before the restart, not the whole view.
        assert after[0].previous is not None
        assert "events" in after[0].changes and "buildId" not in after[0].changes
        assert after[0].changes["status"] == "BuildRequestExecuting"


async def test_until_ended_stops_once_every_build_ended_or_is_gone(
    sim: Simulator, gateway: TestServer
) -> None:
    done, failing = sim.create_build(2), sim.create_build(["f/x=1"], fail=["f/x=1"])
    sim.finish(done)
    url = str(gateway.make_url("")).rstrip("/")
    async with Client(url) as client:
        follow = client.follow([done, failing, "br-unknown"], until_ended=True)
        reader = asyncio.ensure_future(_collect(follow))
        await asyncio.sleep(0.3)
        sim.finish(failing)
        updates = await asyncio.wait_for(reader, 15)
    last = {u.build_id: u for u in updates}
    assert last[done].status == "BuildRequestCompleted" and last[done].ended
    assert last[failing].status == "BuildRequestFailed"
    assert last["br-unknown"].kind == "gone" and last["br-unknown"].code == "not_found"
    assert last["br-unknown"].view is None


async def _collect(follow: AsyncIterator[Update]) -> list[Update]:
    return [update async for update in follow]


# --- refusals


async def test_refusals_before_the_stream_are_clear_errors_without_retry(
    sim: Simulator, gateway: TestServer, upstream: TestServer
) -> None:
    url = str(gateway.make_url("")).rstrip("/")
    async with Client(url) as client:
        with pytest.raises(BuildNotFound) as found:
            await anext(client.follow("br-unknown"))
        assert found.value.status == 404 and "br-unknown" in str(found.value)
        with pytest.raises(InvalidBuildId):
            client.follow("a b")
        with pytest.raises(GatewayError) as refused:  # 51 builds: more than one stream may name
            await anext(client.follow([f"br-{n}" for n in range(51)]))
        assert refused.value.status == 429 and refused.value.code == "too_many"
        with pytest.raises(BuildNotFound):
            await client.view("br-unknown")

    build_id = sim.create_build(2)
    simulator = str(upstream.make_url("")).rstrip("/")
    async with Client(simulator) as client:  # the upstream itself: a server, not a gateway
        with pytest.raises(NotAGateway, match="not a Buildcast gateway"):
            await anext(client.follow(build_id))
        with pytest.raises(NotAGateway):
            await client.view(build_id)  # it answers that path, with the upstream's JSON


async def test_view_is_the_gateway_view(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(3)
    sim.advance(build_id, 4)
    async with Client(str(gateway.make_url(""))) as client:
        view = await client.view(build_id)
    assert view == await gateway_view(session, gateway, build_id)


# --- scripted streams: what a healthy gateway does not send, or sends rarely

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def snapshot(build_id: str, seq: int, **view: Any) -> dict[str, Any]:
    return {
        "type": "snapshot",
        "buildId": build_id,
        "seq": seq,
        "view": a_view(build_id, seq) | view,
    }


def delta(build_id: str, seq: int, **changes: Any) -> dict[str, Any]:
    return {"type": "delta", "buildId": build_id, "seq": seq, "changes": changes}


def stream(*messages: tuple[str, dict[str, Any]], retry: int = 10) -> httpx.Response:
    """An SSE body of (`id:`, message) pairs, as the gateway frames them."""
    frames = [f"retry: {retry}\n\n"]
    frames += [
        f"id: {event_id}\nevent: {m['type']}\ndata: {codec.dumps(m).decode()}\n\n"
        for event_id, m in messages
    ]
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content="".join(frames).encode()
    )


def refusal(status: int, code: str, message: str = "") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


class Script:
    """A gateway that answers each request with the next scripted response, and records them."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        answer = self.answers.pop(0) if self.answers else refusal(404, "not_found", "script done")
        if isinstance(answer, Exception):
            raise answer
        return answer

    def last_event_ids(self) -> list[str | None]:
        return [r.headers.get("last-event-id") for r in self.requests]


@contextlib.asynccontextmanager
async def scripted(script: Script, **options: Any) -> AsyncIterator[Client]:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
        Client("http://gateway.test", http=http, retry=0.01, **options) as client,
    ):
        yield client


def tok(build_id: str, seq: int) -> str:
    return token(build_id, Position("e1", seq))


async def test_a_gap_resynchronises_from_a_fresh_snapshot() -> None:
    script = Script(
        stream(
            (tok("b", 5), snapshot("b", 5)),
            (tok("b", 6), delta("b", 6, status="BuildRequestPlanning")),
            (tok("b", 8), delta("b", 8, stale=True)),  # seq 7 never came
        ),
        stream((tok("b", 8), snapshot("b", 8, stale=True))),
    )
    async with scripted(script) as client:
        updates: list[Update] = []
        with pytest.raises(BuildNotFound):  # the script's end
            async for update in client.follow("b"):
                updates.append(update)
    assert [u.kind for u in updates] == ["snapshot", "delta", "snapshot"]
    assert updates[-1].view == a_view("b", 8) | {"stale": True}
    assert updates[-1].changes == {
        "status": "BuildRequestExecuting",
        "updatedAtMs": 8,
        "stale": True,
    }
    # No id after the gap: the gateway must answer with a snapshot, not more deltas.
    assert script.last_event_ids() == [None, None, tok("b", 8)]


async def test_a_gap_in_one_build_of_several_resyncs_only_that_build() -> None:
    cursor = f"{tok('a', 3)}~{tok('b', 5)}"
    script = Script(
        stream(
            (tok("a", 3), snapshot("a", 3)),
            (cursor, snapshot("b", 5)),
            (cursor, delta("b", 9)),  # a gap in b
        ),
        stream((f"{tok('a', 3)}~{tok('b', 9)}", snapshot("b", 9))),
    )
    async with scripted(script) as client:
        with pytest.raises(NotAGateway):  # the script's end: 404 on the multi-build route
            async for _ in client.follow(["a", "b"]):
                pass
    assert script.last_event_ids()[:2] == [None, tok("a", 3)]
    assert [r.url.params.get_list("build") for r in script.requests][:2] == [["a", "b"]] * 2


async def test_a_pause_notice_is_an_update_and_the_stream_goes_on() -> None:
    script = Script(
        stream(
            (tok("b", 1), snapshot("b", 1)),
            (
                tok("b", 1),
                {
                    "type": "error",
                    "buildId": "b",
                    "code": "upstream_unavailable",
                    "message": "live updates paused",
                },
            ),
            (tok("b", 1), snapshot("b", 1)),  # live again, nothing missed
            (tok("b", 2), delta("b", 2, status="BuildRequestCompleted")),
        )
    )
    async with scripted(script) as client:
        updates = await _collect(client.follow("b", until_ended=True))
    assert [u.kind for u in updates] == ["snapshot", "paused", "snapshot", "delta"]
    assert updates[1].code == "upstream_unavailable" and updates[1].view == a_view("b", 1)
    assert updates[2].changes == {}
    assert updates[-1].status == "BuildRequestCompleted"
    assert len(script.requests) == 1


async def test_outages_are_retried_and_reported_once_each_way() -> None:
    script = Script(
        httpx.ConnectError("connection refused"),
        refusal(503, "upstream_unavailable", "no view of b yet"),
        httpx.Response(502, text="<html>bad gateway</html>"),  # a proxy's own words
        stream((tok("b", 1), snapshot("b", 1, status="BuildRequestCompleted"))),
    )
    changes: list[Connectivity] = []
    async with scripted(script) as client:
        updates = await _collect(client.follow("b", until_ended=True, on_connection=changes.append))
    assert [u.kind for u in updates] == ["snapshot"]
    assert [c.reachable for c in changes] == [False, True]
    assert "unreachable" in changes[0].detail and "connection refused" in changes[0].detail
    assert len(script.requests) == 4


class _Breaks(httpx.AsyncByteStream):
    """A body that breaks after its first bytes, as a connection reset does."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body
        raise httpx.ReadError("connection reset by peer")


async def test_a_stream_that_breaks_and_reconnects_at_once_is_no_outage() -> None:
    first = stream((tok("b", 1), snapshot("b", 1)))
    script = Script(
        httpx.Response(200, headers=first.headers, stream=_Breaks(first.content)),
        stream((tok("b", 2), delta("b", 2, status="BuildRequestCompleted"))),
    )
    changes: list[Connectivity] = []
    async with scripted(script) as client:
        updates = await _collect(client.follow("b", until_ended=True, on_connection=changes.append))
    assert [u.kind for u in updates] == ["snapshot", "delta"]
    assert script.last_event_ids() == [None, tok("b", 1)]
    assert changes == []  # a replica's death behind a balancer is not worth a line


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, html="<html>a login page</html>"),
        httpx.Response(404, text="404: Not Found"),
        httpx.Response(401, text="who are you"),
        httpx.Response(
            200, headers={"content-type": "text/event-stream"}, text="event: delta\ndata: 42\n\n"
        ),
    ],
    ids=["html", "a 404 in other words", "a 401 in other words", "an SSE stream of other JSON"],
)
async def test_a_server_that_is_not_a_gateway_is_refused_at_once(answer: httpx.Response) -> None:
    script = Script(answer)
    async with scripted(script) as client:
        with pytest.raises(NotAGateway):
            await anext(client.follow("b"))
    assert len(script.requests) == 1


async def test_the_server_retry_sets_the_reconnect_delay() -> None:
    done = snapshot("b", 2, status="BuildRequestCompleted")
    script = Script(stream((tok("b", 1), snapshot("b", 1)), retry=100), stream((tok("b", 2), done)))
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
        Client("http://gateway.test", http=http, retry=30.0) as client,  # until told otherwise
    ):
        await asyncio.wait_for(_collect(client.follow("b", until_ended=True)), 5)
    pause = script.times[1] - script.times[0]
    assert 0.05 <= pause < 1.0
    assert script.last_event_ids() == [None, tok("b", 1)]


def test_backoff_doubles_from_the_server_retry_up_to_a_cap_with_jitter() -> None:
    assert [backoff(n, 0.5, 10, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5, 6, 60)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        10,
        10,
    ]
    assert backoff(3, 0.5, 10, rand=lambda: 0.0) == 1.0  # never under half: no thundering return
    assert backoff(1000, 1, 7) <= 7


async def test_closing_the_client_ends_its_follows(sim: Simulator, gateway: TestServer) -> None:
    build_id = sim.create_build(2)
    async with Client(str(gateway.make_url(""))) as client:
        follow = client.follow(build_id)
        first = await anext(follow)
        assert first.kind == "snapshot" and first.previous is None
    with pytest.raises(StopAsyncIteration):
        await anext(follow)


# --- access tokens

SECRET = "a-secret-of-at-least-32-bytes-long"


async def test_a_token_opens_a_guarded_gateway_and_none_is_a_clear_refusal(
    sim: Simulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(auth_secret=SECRET)
    build_id = sim.create_build(2)
    url = str(gateway.make_url("")).rstrip("/")
    async with Client(url) as client:
        with pytest.raises(GatewayError) as refused:
            await anext(client.follow(build_id))
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    async with Client(url, token=mint(SECRET, [build_id], 60)) as client:
        assert (await client.view(build_id))["buildId"] == build_id
        assert (await anext(client.follow(build_id))).kind == "snapshot"


async def test_a_token_function_renews_an_expired_token_and_the_follow_goes_on_unbroken(
    sim: Simulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(auth_secret=SECRET, token_leeway=0.0)
    build_id = sim.create_build(3)
    handed: list[str] = []

    async def fresh_token() -> str:
        handed.append(mint(SECRET, [build_id], ttl=2 if not handed else 600))
        return handed[-1]

    async with Client(str(gateway.make_url("")), token=fresh_token) as client:
        watcher = Watcher(client, build_id)
        await eventually(lambda: asyncio.sleep(0, len(handed)), lambda n: n >= 2, timeout=15)
        mark = len(watcher.updates)
        sim.finish(build_id)
        await eventually(
            lambda: asyncio.sleep(0, watcher.view(build_id)),
            lambda view: view is not None and view["status"] == "BuildRequestCompleted",
        )
        await watcher.stop()
    assert watcher.kinds(build_id) and watcher.kinds(build_id)[0] == "snapshot"
    assert set(watcher.kinds(build_id, since=mark)) == {"delta"}, "resumed, not restarted"
    assert [c.reachable for c in watcher.connectivity] == [], "a renewal is no outage"
