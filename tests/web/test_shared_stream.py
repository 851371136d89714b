"""One connection per browser: the tabs of one browser profile share one WebSocket.

Build pages and walls reach the gateway through the SharedWorker of web/shared.js
(web/tabs.js): however many tabs, hidden or not, the gateway holds one connection, and
every tab shows its build's latest seq as it moves. Without SharedWorker, each tab has
its own EventSource, as before. One browser context is one profile.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, expect

from gateway.guard.tokens import mint
from gateway.simulator import Simulator
from tests.helpers.browser import (
    OWN_STREAMS,
    FakeGateway,
    gateway_connections,
    set_visibility,
    small_view,
    tile,
    wall_url,
)
from tests.helpers.gateways import StartGateway, eventually, gateway_view
from tests.helpers.proxy import Proxy
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: generous, the machine is small and shared with other tests
SECRET = "a-secret-for-the-page-tests-of-32-bytes"


async def open_tab(context: BrowserContext, url: str) -> Page:
    tab = await context.new_page()
    await tab.goto(url)
    return tab


async def live_tabs(
    context: BrowserContext, gateway: TestServer, build_id: str, n: int
) -> list[Page]:
    """`n` tabs of the build's page, each live."""
    url = str(gateway.make_url(f"/builds/{build_id}"))
    tabs = [await open_tab(context, url) for _ in range(n)]
    for tab in tabs:
        await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    return tabs


async def shows(tab: Page, seq: int) -> None:
    """The tab's DOM shows the build at `seq`, entirely."""
    await expect(tab.locator("body")).to_have_attribute("data-rendered-seq", str(seq), timeout=WAIT)


async def moved(
    sim: Simulator, session: aiohttp.ClientSession, gateway: TestServer, build_id: str
) -> int:
    """Advances a build upstream; its seq once the gateway has the change."""
    before = await gateway_view(session, gateway, build_id)
    sim.advance(build_id, 2)
    after = await eventually(
        lambda: gateway_view(session, gateway, build_id),
        lambda v: (
            v["seq"] > before["seq"]
            and v["status"] == sim.build_json(build_id)["status"]
            and len(v["events"]) == len(sim.build_json(build_id)["events"])
        ),
        what=f"the gateway to see {build_id} move",
    )
    seq: int = after["seq"]
    return seq


async def resubscribed(fake: FakeGateway) -> int:
    return len(fake.connections)


async def open_sockets(fake: FakeGateway) -> int:
    return fake.open_connections()["ws"]


async def viewers(session: aiohttp.ClientSession, gateway: TestServer, build_id: str) -> int:
    async with session.get(gateway.make_url("/api/v1/watched")) as response:
        builds = (await response.json())["builds"]
    return sum(b["viewers"] for b in builds if b["buildId"] == build_id)


async def test_tabs_share_one_connection_and_all_stay_current(
    sim: Simulator, gateway: TestServer, context: BrowserContext, session: aiohttp.ClientSession
) -> None:
    one, other = sim.create_build(3), sim.create_build(2)
    first = await open_tab(context, str(gateway.make_url(f"/builds/{one}")))
    await expect(first.locator("#conn")).to_have_text("live", timeout=WAIT)
    second = await open_tab(context, str(gateway.make_url(f"/builds/{one}")))
    third = await open_tab(context, str(gateway.make_url(f"/builds/{other}")))
    wall = await open_tab(context, wall_url(gateway, [one, other]))
    for tab in (second, third):
        await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(wall.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT)

    # Four tabs, three of them following `one`: one connection, one viewer of each build.
    await eventually(lambda: gateway_connections(gateway), lambda c: c == {"sse": 0, "ws": 1})
    assert await viewers(session, gateway, one) == 1
    assert await viewers(session, gateway, other) == 1

    # A hidden tab keeps following: it holds no connection of its own.
    await set_visibility(second, "hidden")
    seq = await moved(sim, session, gateway, one)
    seq_other = await moved(sim, session, gateway, other)
    for tab in (first, second):
        await shows(tab, seq)
    await shows(third, seq_other)
    status = sim.build_json(one)["status"]
    await expect(tile(wall, one)).to_contain_text(status, timeout=WAIT)
    await expect(second.locator("body")).to_have_attribute("data-stream", "open")

    # The tab that started the worker goes: the others stay current, on the same connection.
    await first.close()
    seq = await moved(sim, session, gateway, one)
    await shows(second, seq)
    seq_other = await moved(sim, session, gateway, other)
    await shows(third, seq_other)
    await expect(tile(wall, other)).to_contain_text(sim.build_json(other)["status"], timeout=WAIT)
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}

    # A tab opened now gets the build's view from the worker: still one viewer of it.
    late = await open_tab(context, str(gateway.make_url(f"/builds/{one}")))
    await shows(late, seq)
    await expect(late.locator("body")).to_have_attribute("data-snapshots", "1")
    assert await viewers(session, gateway, one) == 1

    # Every tab gone: the worker lets go of its builds and closes the connection.
    for tab in (second, third, wall, late):
        await tab.close()
    await eventually(lambda: gateway_connections(gateway), lambda c: c == {"sse": 0, "ws": 0})


async def test_seven_tabs_load_and_stay_live_on_one_connection(
    sim: Simulator, gateway: TestServer, context: BrowserContext
) -> None:
    """Each tab with a stream of its own filled the browser's six connections per host: a
    seventh tab could not even load. Shared, they hold one."""
    url = str(gateway.make_url(f"/builds/{sim.create_build(2)}"))
    tabs = [await open_tab(context, url) for _ in range(7)]
    for tab in tabs:
        await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}


async def test_past_the_cap_of_one_socket_the_worker_opens_another(
    sim: Simulator, gateway: TestServer, context: BrowserContext, session: aiohttp.ClientSession
) -> None:
    # Two walls of 30 builds each: 60 builds, more than one socket may follow (50).
    builds = [sim.create_build(1) for _ in range(60)]
    halves = (builds[:30], builds[30:])
    walls = [await open_tab(context, wall_url(gateway, half)) for half in halves]
    for wall, half in zip(walls, halves, strict=True):
        for build_id in half:
            await expect(tile(wall, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await eventually(lambda: gateway_connections(gateway), lambda c: c == {"sse": 0, "ws": 2})
    # Every build is live, those of the second socket too.
    for wall, build_id in ((walls[0], builds[0]), (walls[1], builds[-1])):
        await moved(sim, session, gateway, build_id)
        status = sim.build_json(build_id)["status"]
        await expect(tile(wall, build_id)).to_contain_text(status, timeout=WAIT)


async def test_a_dropped_connection_resumes_every_tab_without_a_gap(
    sim: Simulator,
    start_gateway: StartGateway,
    context: BrowserContext,
    session: aiohttp.ClientSession,
) -> None:
    gateway = await start_gateway(grace=30.0)  # the builds stay watched while the socket is cut
    proxy = await Proxy().start(gateway)
    one, other = sim.create_build(3), sim.create_build(2)
    try:
        tabs = [
            await open_tab(context, f"{proxy.url}/builds/{one}"),
            await open_tab(context, f"{proxy.url}/builds/{one}"),
            await open_tab(context, f"{proxy.url}/builds/{other}"),
        ]
        for tab in tabs:
            await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)

        await proxy.stop()  # the connection is cut, and nothing answers for a while
        for tab in tabs:
            await expect(tab.locator("#conn")).to_have_text("reconnecting…", timeout=WAIT)
        seq = await moved(sim, session, gateway, one)  # what happens meanwhile is not lost
        seq_other = await moved(sim, session, gateway, other)
        await proxy.start()

        for tab in tabs[:2]:
            await shows(tab, seq)
        await shows(tabs[2], seq_other)
        for tab in tabs:
            body = tab.locator("body")
            await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
            await expect(body).to_have_attribute("data-snapshots", "1")  # resumed: deltas only
            await expect(body).to_have_attribute("data-resyncs", "0")
        assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}
        for tab in tabs[:2]:
            assert await tab.evaluate("buildcast.view()") == await gateway_view(
                session, gateway, one
            )
    finally:
        await proxy.stop()


async def test_the_gateway_closing_the_socket_resumes_from_each_builds_token(
    start_fake: StartFake, context: BrowserContext
) -> None:
    fake, server = await start_fake(small_view(), small_view("br-other"))
    tabs = [
        await open_tab(context, str(server.make_url("/builds/br-fake"))),
        await open_tab(context, str(server.make_url("/builds/br-other"))),
    ]
    for tab in tabs:
        await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    assert fake.connections == [None, None], "each build subscribed once, from scratch"
    fake.send(fake.delta({"status": "BuildRequestPlanning"}))
    await shows(tabs[0], 6)

    fake.end_streams()  # closed with 1001: a gateway going away
    await eventually(lambda: resubscribed(fake), lambda n: n == 4, what="the resubscribes")
    assert set(fake.connections[2:]) == {fake.token("br-fake"), fake.token("br-other")}
    assert fake.open_connections() == {"sse": 0, "ws": 1}
    fake.send(fake.delta({"status": "BuildRequestExecuting"}))
    fake.send(fake.delta({"status": "BuildRequestPlanning"}, build_id="br-other"))
    await shows(tabs[0], 7)
    await shows(tabs[1], 6)
    for tab in tabs:
        await expect(tab.locator("body")).to_have_attribute("data-snapshots", "1")
    await expect(tabs[0].locator("#status")).to_have_text("BuildRequestExecuting")


async def test_a_tab_that_joins_gets_the_workers_view_without_asking_the_gateway(
    start_fake: StartFake, context: BrowserContext
) -> None:
    fake, server = await start_fake(small_view())
    first = await open_tab(context, str(server.make_url("/builds/br-fake")))
    await expect(first.locator("#conn")).to_have_text("live", timeout=WAIT)
    fake.send(fake.delta({"status": "BuildRequestPlanning"}))
    await shows(first, 6)
    joined = await open_tab(context, str(server.make_url("/builds/br-fake")))
    await shows(joined, 6)
    await expect(joined.locator("#status")).to_have_text("BuildRequestPlanning")
    assert fake.connections == [None], "one subscription, whatever the number of tabs"
    assert fake.stream_urls == ["/api/v1/ws"]
    fake.send(fake.delta({"status": "BuildRequestExecuting"}))
    for tab in (first, joined):
        await shows(tab, 7)


async def test_a_build_that_ends_ends_in_every_tab_of_it_only(
    start_fake: StartFake, context: BrowserContext
) -> None:
    fake, server = await start_fake(small_view(), small_view("br-other"))
    gone = [await open_tab(context, str(server.make_url("/builds/br-fake"))) for _ in range(2)]
    kept = await open_tab(context, str(server.make_url("/builds/br-other")))
    for tab in (*gone, kept):
        await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    fake.send(fake.error("not_found", "no build request br-fake upstream"))
    for tab in gone:
        await expect(tab.locator("#conn")).to_have_text("not found", timeout=WAIT)
        await expect(tab.locator("body")).to_have_attribute("data-stream", "closed")
    fake.send(fake.delta({"status": "BuildRequestCompleted"}, build_id="br-other"))
    await expect(kept.locator("#status")).to_have_text("BuildRequestCompleted", timeout=WAIT)
    await expect(kept.locator("#conn")).to_have_text("live")


async def test_without_shared_worker_each_tab_has_its_own_stream(
    sim: Simulator, gateway: TestServer, browser: Browser, session: aiohttp.ClientSession
) -> None:
    context = await browser.new_context()
    await context.add_init_script(OWN_STREAMS)
    try:
        build_id = sim.create_build(3)
        tabs = await live_tabs(context, gateway, build_id, 3)
        await eventually(lambda: gateway_connections(gateway), lambda c: c == {"sse": 3, "ws": 0})
        seq = await moved(sim, session, gateway, build_id)
        for tab in tabs:
            await shows(tab, seq)
    finally:
        await context.close()


async def test_the_socket_carries_the_tabs_token_and_a_refusal_is_not_retried(
    start_fake: StartFake, context: BrowserContext
) -> None:
    fake, server = await start_fake(small_view())
    tab = await open_tab(context, str(server.make_url("/builds/br-fake")) + "?token=t0k.en")
    await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    assert fake.stream_urls == ["/api/v1/ws?token=t0k.en"]
    await tab.close()
    await eventually(lambda: open_sockets(fake), lambda n: n == 0, what="the socket to close")

    fake.refuse(401, "unauthorized", "the token expired: get a new one")
    tab = await open_tab(context, str(server.make_url("/builds/br-fake")) + "?token=old")
    await expect(tab.locator("#notice")).to_contain_text("the token expired", timeout=WAIT)
    await expect(tab.locator("#conn")).to_have_text("no access")
    await tab.wait_for_timeout(2500)  # longer than a retry: nothing more is asked
    # The socket refused, and the same URL asked again by fetch() to learn why: no retry.
    assert fake.stream_urls[1:] == ["/api/v1/ws?token=old"] * 2


async def test_a_guarded_gateway_takes_the_shared_socket_with_the_token_of_a_link(
    sim: Simulator, start_gateway: StartGateway, context: BrowserContext
) -> None:
    guarded = await start_gateway(auth_secret=SECRET)
    build_id = sim.create_build(2)
    secret = mint(SECRET, ["br-*"], 600, "page-test")
    tab = await open_tab(context, str(guarded.make_url(f"/builds/{build_id}")) + f"?token={secret}")
    wall = await open_tab(context, wall_url(guarded, [build_id], token=secret))
    await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(tile(wall, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    assert await gateway_connections(guarded) == {"sse": 0, "ws": 1}

    stranger = await open_tab(context, str(guarded.make_url(f"/builds/{build_id}")))
    await expect(stranger.locator("#conn")).to_have_text("no access", timeout=WAIT)
    await expect(stranger.locator("#notice")).to_contain_text("this gateway needs an access token")
    await expect(tab.locator("#conn")).to_have_text("live")  # the others are not refused


async def test_a_worker_that_stops_is_started_again_by_its_tabs(
    sim: Simulator, gateway: TestServer, browser: Browser, session: aiohttp.ClientSession
) -> None:
    context = await browser.new_context()
    await context.add_init_script("window.BUILDCAST_TAB_BEAT_MS = 500;")
    try:
        build_id = sim.create_build(3)
        tabs = await live_tabs(context, gateway, build_id, 2)
        cdp = await browser.new_browser_cdp_session()
        found = await cdp.send("Target.getTargets")
        workers = [
            t["targetId"]
            for t in found["targetInfos"]
            if t["type"] == "shared_worker" and t["url"].startswith(str(gateway.make_url("/")))
        ]
        assert len(workers) == 1, found
        await cdp.send("Target.closeTarget", {"targetId": workers[0]})
        await cdp.detach()

        for tab in tabs:  # a new worker, a new socket: each tab gets the view afresh
            body = tab.locator("body")
            await expect(body).to_have_attribute("data-snapshots", "2", timeout=WAIT)
        seq = await moved(sim, session, gateway, build_id)
        for tab in tabs:
            await shows(tab, seq)
        assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}
    finally:
        await context.close()


# A page of the shared scripts only: openStream() as build.js and wall.js call it.
FOLLOW = """(shared) => {
    if (!shared) delete window.SharedWorker;
    window.log = [];
    window.stream = openStream({ stats: {}, on: {
        snapshot: (id, m) => log.push(`snapshot ${id} ${m.seq}`),
        delta: (id, m) => log.push(`delta ${id} ${m.seq}`),
    } });
    stream.follow(["br-a"]);
}"""


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "own"])
async def test_a_page_may_follow_several_builds_either_way(
    start_fake: StartFake, page: Page, shared: bool
) -> None:
    fake, server = await start_fake(small_view("br-a"), small_view("br-b"))
    await page.goto(str(server.make_url("/blank")))
    await page.evaluate(FOLLOW, shared)
    await page.wait_for_function("() => log.includes('snapshot br-a 5')", timeout=WAIT)
    await page.evaluate("stream.follow(['br-a', 'br-b'])")
    await page.wait_for_function("() => log.includes('snapshot br-b 5')", timeout=WAIT)
    fake.send(fake.delta({"status": "BuildRequestPlanning"}, build_id="br-a"))
    fake.send(fake.delta({"status": "BuildRequestPlanning"}, build_id="br-b"))
    await page.wait_for_function(
        "() => log.includes('delta br-a 6') && log.includes('delta br-b 6')", timeout=WAIT
    )
    assert await page.evaluate("stream.shared") is shared
    if shared:
        assert fake.stream_urls == ["/api/v1/ws"]
        assert fake.connections == [None, None]
    else:  # the build's own stream, then the multi-build one, from where br-a was
        own, multi = fake.stream_urls
        assert own == "/api/v1/builds/br-a/stream"
        assert multi.startswith("/api/v1/stream?build=br-a&build=br-b&lastEventId="), multi
    snapshots = await page.evaluate("log.filter((l) => l.startsWith('snapshot br-a'))")
    assert snapshots == ["snapshot br-a 5"], "following more builds re-sent the page's own"
