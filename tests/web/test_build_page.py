"""The live build page in real headless Chromium (Debian's), driven by Playwright.

Most tests run the page against a real gateway in front of the simulator. A few need
the stream to say things a healthy gateway does not say on cue (a seq gap, a pause
notice): they run it against `FakeGateway`, which serves the same page and static
files over real HTTP and streams exactly what the test tells it to.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, expect

from gateway.simulator import HOSTILE_LOG_LINE, Simulator
from tests.helpers.browser import OWN_STREAMS, gateway_connections, set_visibility, small_view
from tests.helpers.gateways import ARTIFACTS, Upstream, eventually, gateway_view, raw_url
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms: generous, the machine is small and shared with other tests
HIDDEN_CLOSE = "window.BUILDCAST_HIDDEN_CLOSE_MS = 300;"


# --- the page against a real gateway and the simulator


async def test_the_page_follows_a_build_live_and_shows_logs_as_text(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    refs = ["reviews/date=2026-11-27", "podcasts/date=2026-11-27"]
    build_id = sim.create_build(refs, hostile=True, log_lines=4)
    requests: list[str] = []
    dialogs: list[str] = []  # alert(1) from the hostile log line, were it ever run
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    status = page.locator("#status")
    await expect(status).to_have_text("BuildRequestReceived", timeout=WAIT)
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#partition-count")).to_have_text("2")
    await expect(page.locator("#counts")).to_contain_text("0 / 2 available")
    await expect(page.locator("#created-ago")).to_contain_text("just now")
    await expect(page.locator("#elapsed-label")).to_have_text("Running for")

    sim.advance(build_id, 5)  # planning, executing, the first job running
    await expect(status).to_have_text("BuildRequestExecuting", timeout=WAIT)
    job = page.locator("#jobs details[data-job-run]").first
    await expect(job.locator("summary")).to_contain_text("//jobs:ingest_reviews", timeout=WAIT)
    await job.locator("summary").click()
    logs = job.locator(".run-log")
    await expect(logs).to_contain_text(HOSTILE_LOG_LINE)
    await expect(job).to_contain_text("jr-")  # the run id
    await expect(job.locator(".targets")).to_have_text(refs[0])
    assert await page.locator("#jobs img, #timeline img").count() == 0, "a log line became HTML"

    sim.finish(build_id)
    await expect(status).to_have_text("BuildRequestCompleted", timeout=WAIT)
    await expect(job).to_have_attribute("open", "")  # still expanded after many updates
    card = page.locator(f'.partition[data-ref="{refs[0]}"]')
    await expect(card).to_contain_text("PartitionAvailable")
    await expect(card.locator(".badge")).to_have_class("badge success")
    await expect(page.locator("#counts")).to_contain_text("2 / 2 available")
    await expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "2")
    await expect(page.locator("#elapsed-label")).to_have_text("Took")
    await expect(page.locator("body")).to_have_attribute("data-snapshots", "1")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "build-page-completed.png"), full_page=True)
    assert not dialogs, f"page text ran as script: {dialogs}"
    assert not errors, f"the page threw: {errors}"
    # The page asks the API nothing itself: the browser's shared worker follows the build on
    # its one socket, and polls nothing either.
    api_calls = [url for url in requests if "/api/" in url]
    assert api_calls == [], f"nothing but the shared socket: {api_calls}"
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}
    others = [url for url in requests if "/api/" not in url and not url.startswith("data:")]
    assert all("/static/" in url or url.endswith(f"/builds/{build_id}") for url in others), others


async def test_a_delegated_partition_links_to_the_other_build(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    refs = ["a/date=1", "b/date=1"]
    build_id = sim.create_build(refs, delegate=[refs[1]])
    sim.advance(build_id, 6)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    card = page.locator(f'.partition[data-ref="{refs[1]}"]')
    link = card.locator("a")
    await expect(link).to_be_visible(timeout=WAIT)
    await expect(card).to_contain_text("PartitionDelegated")
    await expect(card.locator(".deleg")).to_contain_text("Delegated to")
    other = await link.inner_text()
    assert other != build_id and other in sim.build_ids()
    assert await link.get_attribute("href") == f"/builds/{other}"
    await link.click()
    await expect(page.locator("#build-id")).to_have_text(other, timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("BuildRequestReceived", timeout=WAIT)


@pytest.mark.parametrize(
    ("build_id", "says", "label"),
    [("br-missing", "not found", "not found"), ("a%20b", "not a valid", "invalid id")],
)
async def test_unknown_and_invalid_ids_say_so(
    gateway: TestServer, page: Page, build_id: str, says: str, label: str
) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(str(raw_url(gateway, f"/builds/{build_id}")))
    await expect(page.locator("#notice")).to_contain_text(says, timeout=WAIT)
    await expect(page.locator("#conn")).to_have_text(label)
    await expect(page.locator("body")).to_have_attribute("data-stream", "closed")
    await page.wait_for_timeout(2500)  # longer than a retry: nothing more is asked
    # The page asks nothing itself: the browser's shared worker does, on its socket, which
    # it closes once no tab wants a build (a retry would keep it open).
    assert [url for url in requests if "/api/" in url] == []
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 0}


async def test_a_hidden_tab_closes_its_stream_and_resumes_without_a_gap(
    sim: Simulator, gateway: TestServer, context: BrowserContext, session: aiohttp.ClientSession
) -> None:
    await context.add_init_script(HIDDEN_CLOSE + OWN_STREAMS)  # a stream of the tab's own
    page = await context.new_page()
    streams: list[str] = []
    page.on(
        "request",
        lambda r: (
            streams.append(r.url) if r.url.endswith("/stream") or "/stream?" in r.url else None
        ),
    )
    build_id = sim.create_build(3, log_lines=2)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await page.evaluate("window.sameDocument = true")

    async def viewers() -> int:
        async with session.get(gateway.make_url("/api/v1/watched")) as response:
            builds = (await response.json())["builds"]
        return sum(b["viewers"] for b in builds if b["buildId"] == build_id)

    assert await viewers() == 1
    await set_visibility(page, "hidden")
    body = page.locator("body")
    await expect(body).to_have_attribute("data-stream", "closed", timeout=WAIT)
    await eventually(viewers, lambda n: n == 0)  # the gateway saw the stream go

    sim.advance(build_id, 6)  # while hidden: planning, executing, jobs started
    view = await eventually(
        lambda: gateway_view(session, gateway, build_id),
        lambda v: (
            v["status"] == "BuildRequestExecuting"
            and len(v["events"]) == len(sim.build_json(build_id)["events"])
        ),
    )
    await expect(page.locator("#status")).to_have_text("BuildRequestReceived")  # not yet told

    await set_visibility(page, "visible")
    await expect(body).to_have_attribute("data-seq", str(view["seq"]), timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("BuildRequestExecuting")
    await expect(page.locator("#conn")).to_have_text("live")
    assert await page.evaluate("buildcast.view()") == view
    assert await body.get_attribute("data-snapshots") == "1", "resumed with a fresh snapshot"
    assert await body.get_attribute("data-resyncs") == "0"
    assert await page.evaluate("window.sameDocument") is True, "the page reloaded"
    assert len(streams) == 2, streams
    assert "lastEventId=" in streams[1] and "lastEventId=" not in streams[0]


async def test_hidden_tabs_give_their_connections_to_a_new_tab(
    sim: Simulator, gateway: TestServer, context: BrowserContext
) -> None:
    """A browser holds six HTTP/1.1 connections per host: six live tabs take them all, and
    a seventh cannot even load until hidden tabs close their streams. (Where the tabs share
    one connection, test_shared_stream.py, seven load at once.)"""
    await context.add_init_script(HIDDEN_CLOSE + OWN_STREAMS)
    url = str(gateway.make_url(f"/builds/{sim.create_build(2)}"))
    tabs = []
    for _ in range(6):
        tab = await context.new_page()
        await tab.goto(url)
        await expect(tab.locator("#conn")).to_have_text("live", timeout=WAIT)
        tabs.append(tab)
    seventh = await context.new_page()
    opening = asyncio.create_task(seventh.goto(url))
    await asyncio.sleep(1.5)
    assert not opening.done(), "six streams did not fill the browser's connections"

    for tab in tabs[:2]:
        await set_visibility(tab, "hidden")
    await opening
    await expect(seventh.locator("#conn")).to_have_text("live", timeout=WAIT)
    for tab in tabs[:2]:
        await expect(tab.locator("body")).to_have_attribute("data-stream", "closed")


async def test_a_stale_upstream_shows_and_clears(
    sim: Simulator, gateway: TestServer, page: Page, control: Upstream
) -> None:
    build_id = sim.create_build(2)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await control.faults(status=503)
    await expect(page.locator("#conn")).to_have_text("upstream stale", timeout=WAIT)
    await expect(page.locator("#notice")).to_contain_text("last known state")
    await expect(page.locator("#conn-age")).to_contain_text("data from")
    await control.clear_faults()
    sim.advance(build_id)
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#notice")).to_be_hidden()
    await expect(page.locator("#status")).to_have_text("BuildRequestPlanning")


async def test_a_gateway_that_goes_away_is_said(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await gateway.close()
    await expect(page.locator("#conn")).to_have_text("gateway unreachable", timeout=15_000)
    await expect(page.locator("#notice")).to_contain_text("cannot be reached")
    await expect(page.locator("#status")).to_have_text("BuildRequestReceived")  # last state kept


@pytest.mark.parametrize(
    ("name", "width", "height"), [("desktop", 1280, 1000), ("phone", 360, 740), ("4k", 3840, 2160)]
)
async def test_the_page_fits_a_phone_and_uses_a_4k_screen(
    sim: Simulator, gateway: TestServer, browser: Browser, name: str, width: int, height: int
) -> None:
    if name == "desktop":  # docs/images/build-page.png: a failed build, a delegated partition
        refs = [
            f"{kind}/date=2026-11-27/region={region}"
            for region in ("eu", "us")
            for kind in ("reviews", "podcasts", "episodes", "ratings", "listens", "charts")
        ]
        build_id = sim.create_build(refs, fail=[refs[3]], delegate=[refs[7]], log_lines=4)
        sim.finish(build_id)
    else:  # a running build of many partitions
        build_id = sim.create_build(60, log_lines=3, hostile=True)
        sim.advance(build_id, 12)
    count = len(sim.build_json(build_id)["requested_partitions"])
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator(".partition")).to_have_count(count, timeout=WAIT)
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    runs = page.locator("#jobs details[data-job-run]")
    if name == "desktop":  # the failed run comes first, open
        await expect(runs.first).to_have_attribute("data-status", "JobFailed")
        await expect(runs.first.locator(".run-log")).to_contain_text("error:")
    else:
        await runs.last.locator("summary").click()
    await page.mouse.move(0, 0)
    overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 0, f"{overflow}px wider than a {width}px screen"
    columns = await page.evaluate(
        "getComputedStyle(document.getElementById('partitions'))"
        ".gridTemplateColumns.split(' ').length"
    )
    if name == "phone":
        assert columns == 1
    elif name == "4k":
        assert columns >= 6
        side_by_side = await page.evaluate(
            "document.querySelector('#timeline-box').getBoundingClientRect().left"
            " > document.querySelector('#partitions').getBoundingClientRect().right"
        )
        assert side_by_side, "a 4K screen shows the timeline beside the grid"
    if name == "desktop":  # the delegated partition's card still names the build that made it
        card = page.locator(f'.partition[data-ref="{refs[7]}"]')
        await expect(card).to_contain_text("PartitionAvailable")
        await expect(card.locator(".deleg")).to_contain_text("Built by")
    await page.evaluate("scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = "build-page.png" if name == "desktop" else f"build-page-{name}.png"
    await page.screenshot(path=str(ARTIFACTS / shot))
    await context.close()


async def test_home_lists_watched_builds_and_opens_one_by_id(
    sim: Simulator, gateway: TestServer, browser: Browser
) -> None:
    watched, other = sim.create_build(2), sim.create_build(2)
    context = await browser.new_context()
    build_page, home = await context.new_page(), await context.new_page()
    await build_page.goto(str(gateway.make_url(f"/builds/{watched}")))
    await expect(build_page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await home.goto(str(gateway.make_url("/")))
    row = home.locator("#watched tr", has_text=watched)
    await expect(row).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await home.fill("#build-id", other)
    await home.click("button[type=submit]")
    await expect(home.locator("#build-id")).to_have_text(other, timeout=WAIT)
    await context.close()


# --- the page against a stream the test writes


async def test_a_seq_gap_resynchronises_with_a_fresh_snapshot(
    start_fake: StartFake, page: Page
) -> None:
    fake, server = await start_fake(small_view())
    await page.goto(str(server.make_url("/builds/br-fake")))
    body = page.locator("body")
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    fake.send(fake.delta({"status": "BuildRequestPlanning"}))
    await expect(body).to_have_attribute("data-seq", "6", timeout=WAIT)
    fake.send(fake.delta({"status": "BuildRequestCompleted"}, seq=8))  # seq 7 went missing
    await expect(body).to_have_attribute("data-resyncs", "1", timeout=WAIT)
    await expect(body).to_have_attribute("data-snapshots", "2", timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("BuildRequestCompleted")
    await expect(body).to_have_attribute("data-seq", "8")
    assert fake.connections == [None, None], "a resync asks for a snapshot: no resume id"
    assert fake.rest_requests == 0


async def test_a_pause_notice_keeps_the_stream_and_an_error_ends_it(
    start_fake: StartFake, page: Page
) -> None:
    fake, server = await start_fake(small_view())
    await page.goto(str(server.make_url("/builds/br-fake")))
    conn = page.locator("#conn")
    await expect(conn).to_have_text("live", timeout=WAIT)
    fake.send(fake.error("upstream_unavailable", "the bus is unreachable"))
    await expect(conn).to_have_text("updates paused", timeout=WAIT)
    await expect(page.locator("#notice")).to_contain_text("the bus is unreachable")
    await expect(page.locator("body")).to_have_attribute("data-stream", "open")
    fake.send(
        fake.delta(
            {
                "partitions": {
                    "a/date=1": {
                        "status": "PartitionAvailable",
                        "updatedAtMs": 1_795_766_413_000,
                        "delegatedTo": None,
                    }
                }
            }
        )
    )
    await expect(conn).to_have_text("live", timeout=WAIT)
    await expect(page.locator('.partition[data-ref="a/date=1"]')).to_contain_text(
        "PartitionAvailable"
    )
    await expect(page.locator("#notice")).to_be_hidden()

    fake.send(fake.error("not_found", "no build request br-fake upstream"))
    await expect(conn).to_have_text("not found", timeout=WAIT)
    await expect(page.locator("#notice")).to_contain_text("not found")
    await expect(page.locator("body")).to_have_attribute("data-stream", "closed")
    fake.end_streams()
    await page.wait_for_timeout(1500)  # three times `retry:`: nothing reconnects
    assert len(fake.connections) == 1


async def test_stale_data_shows_its_age_from_when_the_upstream_last_answered(
    start_fake: StartFake, page: Page
) -> None:
    now = int(time.time() * 1000)
    view = small_view()
    view.update(stale=True, checkedAtMs=now - 3 * 60_000 - 5_000, updatedAtMs=now - 2 * 3_600_000)
    fake, server = await start_fake(view)
    await page.goto(str(server.make_url("/builds/br-fake")))
    await expect(page.locator("#conn")).to_have_text("upstream stale", timeout=WAIT)
    await expect(page.locator("#conn-age")).to_have_text("data from 3 min ago")
    await expect(page.locator("#notice")).to_contain_text("last known state")

    # Never answered since this gateway started: the page's own guess, the last change.
    fake.send(fake.delta({"checkedAtMs": None}))
    await expect(page.locator("#conn-age")).to_have_text("data from 2 h ago", timeout=WAIT)
    fake.send(fake.delta({"stale": False}))
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#conn-age")).to_have_text("")
