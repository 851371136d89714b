"""The Prometheus metrics (`GET /metrics`) move as they should, read the way Prometheus reads
them: viewers connect and leave, polls run, the upstream fails, a slow consumer is cut off, a
resume is served, a request is refused, the bus goes down.

Every test scrapes a gateway over real HTTP on loopback and parses the exposition with
prometheus-client's own parser. Counters are compared between two scrapes of one test's
gateway, never read as absolutes where something else may count too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.backends.redis.connection import connect as connect_redis
from gateway.guard.tokens import mint
from gateway.ingest.upstream import ENDPOINTS, OUTCOMES
from gateway.protocol import messages
from gateway.settings import Settings
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.attack import stalled_client
from tests.helpers.gateways import (
    StartGateway,
    Upstream,
    eventually,
    gateway_view,
    raw_url,
    stream_url,
)
from tests.helpers.redis_servers import RedisServer
from tests.helpers.sse import Viewer, events
from tests.helpers.ws import connect

FAMILIES = {
    "buildcast_connections": "gauge",
    "buildcast_watched_builds": "gauge",
    "buildcast_pollers": "gauge",
    "buildcast_upstream_requests": "counter",
    "buildcast_upstream_request_duration_seconds": "histogram",
    "buildcast_published_messages": "counter",
    "buildcast_deliveries": "counter",
    "buildcast_fanout_latency_seconds": "histogram",
    "buildcast_slow_consumers": "counter",
    "buildcast_resumes": "counter",
    "buildcast_view_age_seconds": "gauge",
    "buildcast_rejected_requests": "counter",
    "buildcast_bus_up": "gauge",
}
"""Every family the gateway serves (prometheus-client names a counter without `_total`)."""

REQUESTS = "buildcast_upstream_requests_total"
DURATION = "buildcast_upstream_request_duration_seconds"
PUBLISHED = "buildcast_published_messages_total"
DELIVERIES = "buildcast_deliveries_total"
LATENCY = "buildcast_fanout_latency_seconds"
SLOW = "buildcast_slow_consumers_total"
RESUMES = "buildcast_resumes_total"
REJECTED = "buildcast_rejected_requests_total"
CONNECTIONS = "buildcast_connections"
WATCHED = "buildcast_watched_builds"
POLLERS = "buildcast_pollers"
VIEW_AGE = "buildcast_view_age_seconds"
BUS_UP = "buildcast_bus_up"


@dataclasses.dataclass(frozen=True)
class Scrape:
    """One read of /metrics: every family by name, every sample by name and labels."""

    families: dict[str, Any]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def __call__(self, name: str, **labels: str) -> float:
        """A sample's value; 0 for a labelled series not yet created (a counter at zero)."""
        assert any(name.startswith(family) for family in self.families), f"no family of {name}"
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(session: aiohttp.ClientSession, gateway: TestServer) -> Scrape:
    async with session.get(gateway.make_url("/metrics")) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families.values()
        for sample in family.samples
    }
    return Scrape(families, samples)


def change(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a sample moved from one scrape to the next."""
    return after(name, **labels) - before(name, **labels)


def rejected(metrics: Scrape) -> float:
    """Every refusal, whatever its reason."""
    return sum(value for (name, _), value in metrics.samples.items() if name == REJECTED)


async def current_seq(session: aiohttp.ClientSession, gateway: TestServer, build_id: str) -> int:
    seq: int = (await gateway_view(session, gateway, build_id))["seq"]
    return seq


def scraping(
    session: aiohttp.ClientSession, gateway: TestServer
) -> Callable[[], Awaitable[Scrape]]:
    return lambda: scrape(session, gateway)


def published(metrics: Scrape) -> float:
    return metrics(PUBLISHED, type="snapshot") + metrics(PUBLISHED, type="delta")


async def first_event(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    """The stream's first event, and its still open response (the caller closes it)."""
    response = await session.get(url, **kwargs)
    assert response.status == 200, await response.text()
    return await anext(events(response)), response


# --- the exposition itself


async def test_every_family_is_served_documented_and_typed(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    metrics = await scrape(session, gateway)
    served = {name for name in metrics.families if not name.endswith("_created")}
    assert served == set(FAMILIES), "no family missing, none undocumented here"
    for name, kind in FAMILIES.items():
        family = metrics.families[name]
        assert family.type == kind, name
        assert family.documentation.strip(), f"{name} has no HELP text"
    # Series that exist from the start, so that rate() has its zero.
    for endpoint in ENDPOINTS:
        assert metrics(f"{DURATION}_count", endpoint=endpoint) == 0
        for outcome in OUTCOMES:
            sample = (REQUESTS, frozenset({"endpoint": endpoint, "outcome": outcome}.items()))
            assert metrics.samples[sample] == 0, sample
    for transport in ("sse", "ws"):
        assert metrics.samples[(CONNECTIONS, frozenset({("transport", transport)}))] == 0
        assert metrics.samples[(DELIVERIES, frozenset({("transport", transport)}))] == 0
    for kind in ("snapshot", "delta"):
        assert metrics.samples[(PUBLISHED, frozenset({("type", kind)}))] == 0
    for result in ("deltas", "snapshot"):
        assert metrics.samples[(RESUMES, frozenset({("result", result)}))] == 0
    assert (metrics(WATCHED), metrics(POLLERS), metrics(SLOW)) == (0, 0, 0)
    assert metrics(f"{LATENCY}_count") == 0
    assert metrics(VIEW_AGE) == 0, "nothing polled: nothing old"
    assert metrics(BUS_UP) == 1, "the in-process bus is always up"


# --- connections, watches, pollers


async def test_connections_watches_and_pollers_follow_the_viewers(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(grace=0.2)
    on_sse, on_ws = sim.create_build(2), sim.create_build(2)
    before = await scrape(session, gateway)

    first, stream = await first_event(session, stream_url(gateway, on_sse))
    assert first.event == "snapshot"
    socket_ = await connect(session, gateway)
    await socket_.send(op="subscribe", buildId=on_ws)
    assert (await socket_.next())["type"] == "snapshot"
    second, other_stream = await first_event(session, stream_url(gateway, on_sse))
    assert second.event == "snapshot"

    during = await scrape(session, gateway)
    assert change(before, during, CONNECTIONS, transport="sse") == 2
    assert change(before, during, CONNECTIONS, transport="ws") == 1
    assert change(before, during, WATCHED) == 2, "two builds, however many viewers"
    assert change(before, during, POLLERS) == 2, "one replica: it polls what it watches"

    other_stream.close()
    left = await eventually(
        scraping(session, gateway),
        lambda m: m(CONNECTIONS, transport="sse") == before(CONNECTIONS, transport="sse") + 1,
        what="one SSE stream fewer",
    )
    assert change(before, left, WATCHED) == 2, "the build still has a viewer"

    stream.close()
    await socket_.ws.close()
    after = await eventually(
        scraping(session, gateway),
        lambda m: (
            m(CONNECTIONS, transport="sse") == before(CONNECTIONS, transport="sse")
            and m(CONNECTIONS, transport="ws") == before(CONNECTIONS, transport="ws")
        ),
        what="every connection counted out",
    )
    assert after(WATCHED) >= before(WATCHED)  # within their grace period, or already gone
    done = await eventually(
        scraping(session, gateway),
        lambda m: m(WATCHED) == before(WATCHED) and m(POLLERS) == before(POLLERS),
        what="the builds dropped after their grace period",
    )
    assert done(BUS_UP) == 1


# --- polls, the upstream's answers, what was published


async def test_polls_count_requests_by_endpoint_and_what_they_published(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    build_id = sim.create_build(["p/0", "p/1", "p/2"])
    before = await scrape(session, gateway)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    for _ in range(3):
        seq = await current_seq(session, gateway, build_id)
        sim.advance(build_id)
        await viewer.follow(lambda view, seq=seq: view["seq"] > seq)

    async def settled() -> tuple[Scrape, int]:
        return await scrape(session, gateway), await current_seq(session, gateway, build_id)

    # Each message of this build's sequence was published here once: seq counts them.
    after, seq = await eventually(
        settled,
        lambda found: published(found[0]) - published(before) == found[1],
        what="every message of the build counted once",
    )
    assert change(before, after, PUBLISHED, type="snapshot") == 1
    assert change(before, after, PUBLISHED, type="delta") == seq - 1 >= 3
    assert change(before, after, REQUESTS, endpoint="build", outcome="ok") >= 1
    assert change(before, after, REQUESTS, endpoint="partition_status", outcome="ok") >= 3, (
        "each partition read once at least"
    )
    for endpoint in ENDPOINTS:
        requests = sum(after(REQUESTS, endpoint=endpoint, outcome=o) for o in OUTCOMES)
        assert after(f"{DURATION}_count", endpoint=endpoint) == requests, (
            f"{endpoint}: every request counted is timed, and only those"
        )
        assert after(f"{DURATION}_bucket", endpoint=endpoint, le="+Inf") == requests
        assert after(f"{DURATION}_sum", endpoint=endpoint) >= 0
        for outcome in OUTCOMES:
            if outcome != "ok":
                assert change(before, after, REQUESTS, endpoint=endpoint, outcome=outcome) == 0, (
                    f"no {outcome} from a healthy upstream"
                )

    # The gateway counts a request once answered, the simulator once asked: with one poller
    # of one build, at most one build request is in flight between the two.
    first = await scrape(session, gateway)
    asked = (await control.stats())["endpoints"]["build"]
    second = await scrape(session, gateway)
    counted = [
        sum(m(REQUESTS, endpoint="build", outcome=o) for o in OUTCOMES) for m in (first, second)
    ]
    assert counted[0] <= asked <= counted[1] + 1, (counted, asked)


async def test_each_upstream_failure_is_counted_by_its_outcome(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession, control: Upstream
) -> None:
    gateway = await start_gateway(upstream_timeout=0.3, upstream_deadline=0.5)
    start = await scrape(session, gateway)

    async with session.get(gateway.make_url("/api/v1/builds/br-nowhere")) as response:
        assert response.status == 404
    metrics = await scrape(session, gateway)
    assert change(start, metrics, REQUESTS, endpoint="build", outcome="not_found") == 1, (
        "the first look at an unknown build"
    )

    # A watched build that does not change: only its build is read, so the next request the
    # upstream serves, the one a fault applies to, is the poller's.
    build_id = sim.create_build(2)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    following = asyncio.create_task(viewer.follow(lambda view: False, timeout=60))
    try:
        for outcome, fault in (
            ("error", {"status": 503}),
            ("timeout", {"delay": 2.0}),
            ("invalid", {"body": '{"not": "a build"}'}),
            ("error", {"status": 500}),
        ):
            before = await scrape(session, gateway)
            await control.faults(count=1, **fault)
            await eventually(
                scraping(session, gateway),
                lambda m, outcome=outcome, before=before: (
                    m(REQUESTS, endpoint="build", outcome=outcome)
                    > before(REQUESTS, endpoint="build", outcome=outcome)
                ),
                what=f"a {outcome} counted",
            )
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    assert viewer.view is not None and not viewer.gaps

    # The upstream refuses an id (400): the first look counts it as such.
    refused = sim.create_build(1)
    before = await scrape(session, gateway)
    await control.faults(count=1, status=400)
    async with session.get(gateway.make_url(f"/api/v1/builds/{refused}")) as response:
        assert response.status == 400
    after = await scrape(session, gateway)
    assert change(before, after, REQUESTS, endpoint="build", outcome="bad_request") == 1
    for endpoint in ENDPOINTS:
        requests = sum(after(REQUESTS, endpoint=endpoint, outcome=o) for o in OUTCOMES)
        assert after(f"{DURATION}_count", endpoint=endpoint) == requests, endpoint
    # Requests that timed out were timed too: at least the read timeout each.
    timed_out = change(start, after, REQUESTS, endpoint="build", outcome="timeout")
    assert timed_out >= 1
    spent = change(start, after, f"{DURATION}_sum", endpoint="build")
    assert spent >= 0.3 * timed_out


async def test_an_upstream_that_refuses_connections_counts_as_errors(
    start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = await start_gateway(upstream=f"http://127.0.0.1:{port}")
    before = await scrape(session, gateway)
    async with session.get(gateway.make_url("/api/v1/builds/br-1")) as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "upstream_unavailable"
    after = await scrape(session, gateway)
    assert change(before, after, REQUESTS, endpoint="build", outcome="error") >= 1
    assert after(f"{DURATION}_count", endpoint="build") == sum(
        after(REQUESTS, endpoint="build", outcome=o) for o in OUTCOMES
    )


async def test_view_age_grows_while_the_upstream_fails_and_falls_back_once_it_answers(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    build_id = sim.create_build(2)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    await control.faults(status=503)
    await viewer.follow(lambda view: view["stale"])
    assert viewer.view is not None
    last_answer_ms = viewer.view["checkedAtMs"]  # when the upstream last answered
    await asyncio.sleep(0.5)
    asked = time.time()
    stale = await scrape(session, gateway)
    # No answer since `last_answer_ms`: the age is at least the time from then to the scrape.
    assert stale(VIEW_AGE) >= asked - last_answer_ms / 1000 - 0.001
    assert stale(VIEW_AGE) >= 0.5
    await control.clear_faults()
    await viewer.follow(lambda view: not view["stale"])
    fresh = await eventually(
        scraping(session, gateway),
        lambda m: m(VIEW_AGE) < stale(VIEW_AGE),
        what="the view age back down",
    )
    assert fresh(VIEW_AGE) >= 0


# --- fan-out: deliveries by transport, latency


async def test_a_change_is_delivered_on_each_transport_and_its_latency_observed(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(["p/0", "p/1"])
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    following = asyncio.create_task(viewer.follow(lambda view: False, timeout=60))
    socket_ = await connect(session, gateway)
    await socket_.send(op="subscribe", buildId=build_id)
    await socket_.until(lambda s: build_id in s.views)
    # The fan-out counts what it offers from now on: the first view came before either.
    seq = await current_seq(session, gateway, build_id)
    await eventually(
        lambda: asyncio.sleep(0, seq),
        lambda _: viewer.view is not None and viewer.view["seq"] == seq,
        what="the SSE viewer current",
    )
    await socket_.until(lambda s: s.views[build_id]["seq"] == seq)
    before = await scrape(session, gateway)
    try:
        sim.advance(build_id, 2)
        await socket_.until(lambda s: s.views[build_id]["seq"] > seq)
        await eventually(
            lambda: asyncio.sleep(0, viewer.view),
            lambda view: view is not None and view["seq"] > seq,
            what="the change at the SSE viewer",
        )

        async def settled() -> tuple[Scrape, int]:
            return await scrape(session, gateway), await current_seq(session, gateway, build_id)

        after, now = await eventually(
            settled,
            lambda found: (
                published(found[0]) - published(before) == found[1] - seq
                and change(before, found[0], f"{LATENCY}_count") == found[1] - seq
            ),
            what="every message published since counted and timed",
        )
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await socket_.ws.close()
    sent = now - seq
    assert sent >= 1
    for transport in ("sse", "ws"):  # one subscriber each: each message offered once to each
        assert change(before, after, DELIVERIES, transport=transport) == sent, transport
    assert change(before, after, f"{LATENCY}_count") == sent
    assert after(f"{LATENCY}_bucket", le="+Inf") == after(f"{LATENCY}_count")
    assert after(f"{LATENCY}_sum") >= before(f"{LATENCY}_sum")


async def stall_one_client(gateway: TestServer, build_id: str, count: int, size: int) -> None:
    """A client stops reading while `count` deltas of `size` bytes are published for it; it
    is cut off (its subscription gone) before this returns."""
    state = gateway.app[STATE]
    client = stalled_client(int(gateway.port or 0), f"/api/v1/builds/{build_id}/stream")
    try:
        await eventually(
            lambda: asyncio.sleep(0, state.fanout.viewers(build_id)),
            lambda viewers: viewers == 1,
            what="the client attached",
        )
        latest = await state.bus.latest(build_id)
        assert latest is not None
        seq, view = latest.seq, state.watches.pollers()[0].view
        assert view is not None
        for _ in range(count):
            seq += 1
            changes = {"message": "x" * size}
            view = {**view, **changes, "seq": seq}
            assert await state.bus.publish(
                messages.delta(build_id, latest.epoch, seq, changes), view
            )
            await asyncio.sleep(0.01)
        await eventually(
            lambda: asyncio.sleep(0, state.fanout.viewers(build_id)),
            lambda viewers: viewers == 0,
            what="the stalled client cut off",
        )
    finally:
        client.close()


async def test_a_consumer_whose_queue_fills_is_cut_off_and_counted(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(poll_active=600.0, subscriber_buffer=4)
    build_id = sim.create_build(2)
    await gateway_view(session, gateway, build_id)  # polled once; no more polls in this test
    before = await scrape(session, gateway)
    await stall_one_client(gateway, build_id, count=64, size=65536)
    after = await scrape(session, gateway)
    assert change(before, after, SLOW) == 1
    assert after(CONNECTIONS, transport="sse") == before(CONNECTIONS, transport="sse")


async def test_a_consumer_whose_writes_stall_is_cut_off_and_counted(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(poll_active=600.0, subscriber_buffer=100_000, write_timeout=0.3)
    build_id = sim.create_build(2)
    await gateway_view(session, gateway, build_id)
    before = await scrape(session, gateway)
    # Its queue never fills: what cuts it off is a write that cannot finish in time.
    await stall_one_client(gateway, build_id, count=64, size=65536)
    after = await scrape(session, gateway)
    assert after(CONNECTIONS, transport="sse") == before(CONNECTIONS, transport="sse")
    assert change(before, after, SLOW) == 1, "cut off for a stalled write: a slow consumer too"


async def test_the_stale_mark_does_not_count_the_outage_as_fanout_latency(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession, control: Upstream
) -> None:
    gateway = await start_gateway(upstream_timeout=0.5, upstream_deadline=0.6)
    build_id = sim.create_build(2)
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    before = await scrape(session, gateway)
    await control.faults(delay=5.0)  # every poll now waits out its 0.5 s read timeout
    await viewer.follow(lambda view: view["stale"])
    await control.clear_faults()
    after = await eventually(
        scraping(session, gateway),
        lambda m: (
            m(REQUESTS, endpoint="build", outcome="timeout")
            > before(REQUESTS, endpoint="build", outcome="timeout")
        ),
    )
    observed = change(before, after, f"{LATENCY}_count")
    quick = change(before, after, f"{LATENCY}_bucket", le="0.25")
    # A local write takes milliseconds; the timed-out poll alone took 0.5 s.
    assert quick == observed, f"{observed - quick} of {observed} observed as slower than 0.25 s"


# --- resumes


async def test_resumes_are_counted_as_deltas_or_as_a_snapshot(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(history=3)
    build_id = sim.create_build(["p/0", "p/1", "p/2"])
    viewer = Viewer(session, stream_url(gateway, build_id))
    await viewer.follow(lambda view: True)
    assert viewer.last_id is not None
    held = viewer.last_id
    base = await scrape(session, gateway)

    async def first_after(cursor: str) -> str:
        event, response = await first_event(
            session, stream_url(gateway, build_id), headers={"Last-Event-ID": cursor}
        )
        response.close()
        return str(event.event)

    async def resumes(result: str) -> float:  # counted before the stream's first event
        return change(base, await scrape(session, gateway), RESUMES, result=result)

    await advanced(sim, session, gateway, build_id)
    assert await first_after(held) == "delta", "within the history: the missed delta"
    assert (await resumes("deltas"), await resumes("snapshot")) == (1, 0)

    epoch, seq, tag = held.split(".")
    assert await first_after(f"feedface.{seq}.{tag}") == "snapshot", "an epoch it never had"
    assert (await resumes("deltas"), await resumes("snapshot")) == (1, 1)

    for _ in range(4):  # more than the 3 messages of history it keeps
        await advanced(sim, session, gateway, build_id)
    assert await first_after(held) == "snapshot", "too far back: a snapshot"
    assert (await resumes("deltas"), await resumes("snapshot")) == (1, 2)

    # A first connection, or a token of another build, is no resume.
    event, response = await first_event(session, stream_url(gateway, build_id))
    response.close()
    assert event.event == "snapshot"
    assert await first_after(f"{epoch}.{seq}.00000000") == "snapshot"
    assert (await resumes("deltas"), await resumes("snapshot")) == (1, 2)

    # On a WebSocket, `since` is the resume.
    current = await current_seq(session, gateway, build_id)
    socket_ = await connect(session, gateway)
    await socket_.send(op="subscribe", buildId=build_id, since=f"{epoch}.{current - 1}.{tag}")
    assert (await socket_.ws.receive_json(timeout=10))["type"] == "delta"
    await socket_.send(op="subscribe", buildId=build_id, since=held)  # a resubscribe, too old
    assert (await socket_.ws.receive_json(timeout=10))["type"] == "snapshot"
    await socket_.ws.close()
    assert (await resumes("deltas"), await resumes("snapshot")) == (2, 3)


async def advanced(
    sim: Simulator, session: aiohttp.ClientSession, gateway: TestServer, build_id: str
) -> None:
    """One step of the build, published by the gateway."""
    before = await current_seq(session, gateway, build_id)
    sim.advance(build_id)
    await eventually(
        lambda: gateway_view(session, gateway, build_id),
        lambda view: view["seq"] > before,
        what=f"a step of {build_id} published",
    )


# --- refusals


async def test_refused_requests_are_counted_by_their_code(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    secret = "a-secret-of-at-least-32-bytes-long"
    gateway = await start_gateway(auth_secret=secret)
    build_id = sim.create_build(1)
    token = mint(secret, [build_id], 600)
    bearer = {"Authorization": f"Bearer {token}"}
    everything = {"Authorization": f"Bearer {mint(secret, ['*'], 600)}"}
    many = "&".join(f"build=br-{n}" for n in range(51))
    cases = [
        ("/api/v1/builds/a%20b", everything, 400, "invalid_build_id"),
        ("/api/v1/builds/br-nowhere", everything, 404, "not_found"),
        (f"/api/v1/stream?{many}", everything, 429, "too_many"),
        (f"/api/v1/builds/{build_id}", {}, 401, "unauthorized"),
        ("/api/v1/status", {"Authorization": "Bearer forged"}, 401, "unauthorized"),
        ("/api/v1/builds/br-elsewhere", bearer, 403, "forbidden"),
    ]
    for path, headers, status, code in cases:
        before = await scrape(session, gateway)
        async with session.get(raw_url(gateway, path), headers=headers) as response:
            assert response.status == status, path
            assert (await response.json())["error"]["code"] == code
        after = await scrape(session, gateway)
        assert change(before, after, REJECTED, reason=code) == 1, path
        assert rejected(after) - rejected(before) == 1, f"{path}: counted once, under one reason"
    before = await scrape(session, gateway)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}"), headers=bearer) as ok:
        assert ok.status == 200
    after = await scrape(session, gateway)
    assert {k: v for k, v in after.samples.items() if k[0] == REJECTED} == {
        k: v for k, v in before.samples.items() if k[0] == REJECTED
    }, "an answered request is no refusal"
    assert after.families["buildcast_rejected_requests"].documentation


# --- the bus


@pytest.mark.integration
async def test_bus_up_follows_redis(
    aiohttp_server: Any,
    settings: Settings,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    shared = dataclasses.replace(settings, redis=redis_server.url, lease_ttl=1.0)
    gateway: TestServer = await aiohttp_server(
        create_app(shared, await connect_redis(redis_server.url))
    )
    await eventually(scraping(session, gateway), lambda m: m(BUS_UP) == 1, what="bus up")
    redis_server.stop()
    await eventually(scraping(session, gateway), lambda m: m(BUS_UP) == 0, what="bus down")
    redis_server.restart()
    await eventually(scraping(session, gateway), lambda m: m(BUS_UP) == 1, what="bus up again")


@pytest.mark.integration
async def test_two_replicas_one_poller_each_delivering_to_its_own_viewers(
    aiohttp_server: Any,
    settings: Settings,
    redis_server: RedisServer,
    sim: Simulator,
    session: aiohttp.ClientSession,
) -> None:
    shared = dataclasses.replace(settings, redis=redis_server.url, lease_ttl=1.0)
    replicas: list[TestServer] = [
        await aiohttp_server(create_app(shared, await connect_redis(redis_server.url)))
        for _ in range(2)
    ]
    build_id = sim.create_build(["p/0", "p/1"])
    viewers = [Viewer(session, stream_url(replica, build_id)) for replica in replicas]
    for viewer in viewers:
        await viewer.follow(lambda view: True)
    follows = [asyncio.create_task(v.follow(lambda view: False, timeout=60)) for v in viewers]
    try:
        seq = await current_seq(session, replicas[0], build_id)
        await eventually(
            lambda: asyncio.sleep(0, viewers),
            lambda vs: all(v.view is not None and v.view["seq"] == seq for v in vs),
            what="both viewers current",
        )
        before = [await scrape(session, replica) for replica in replicas]
        sim.advance(build_id, 2)
        await eventually(
            lambda: asyncio.sleep(0, viewers),
            lambda vs: all(v.view is not None and v.view["seq"] > seq for v in vs),
            what="the change at both viewers",
        )
        after = [await scrape(session, replica) for replica in replicas]
    finally:
        for follow in follows:
            follow.cancel()
        await asyncio.gather(*follows, return_exceptions=True)
    assert [m(WATCHED) for m in after] == [1, 1], "each replica watches it for its viewer"
    assert sorted(m(POLLERS) for m in after) == [0, 1], "one poller for the deployment"
    owner = 0 if after[0](POLLERS) else 1
    assert published(after[owner]) > published(before[owner])
    assert published(after[1 - owner]) == published(before[1 - owner]), "only the owner publishes"
    for replica in (0, 1):  # each hears the change once and hands it to its own viewer
        assert change(before[replica], after[replica], DELIVERIES, transport="sse") >= 1
        assert change(before[replica], after[replica], f"{LATENCY}_count") >= 1, (
            "the read time travels with the message through Redis"
        )
        assert after[replica](BUS_UP) == 1
