"""The wall display (/wall) in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from gateway.app import create_app
from gateway.settings import Settings
from gateway.simulator import Simulator
from tests.helpers.browser import (
    gateway_connections,
    new_page,
    record_requests,
    small_view,
    tile,
    wall_url,
)
from tests.helpers.gateways import ARTIFACTS, StartGateway, Upstream
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: generous, the machine is small and other suites run beside this one


def per_build_streams(urls: list[str]) -> list[str]:
    return [url for url in urls if "/api/v1/builds/" in url]


async def watch(session: aiohttp.ClientSession, gateway: TestServer, build_id: str) -> None:
    """Makes the gateway watch a build (for its grace period), as a page opening it would."""
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        assert response.status == 200, await response.text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_named_builds_update_live_over_one_stream(
    sim: Simulator, gateway: TestServer, browser: Browser
) -> None:
    failing_ref = "reviews/date=2026-11-27/region=eu"
    plain = sim.create_build(4)
    failing = sim.create_build(
        [failing_ref, "podcasts/date=2026-11-27/region=eu", "charts/date=2026-11-27/region=eu"],
        fail=[failing_ref],
    )
    quick = sim.create_build(2)
    page = await new_page(browser)
    requests = record_requests(page)  # the page's own: none to the API, the worker asks
    await page.goto(wall_url(gateway, [plain, failing, quick, "br-missing"]))

    for build_id in (plain, failing, quick):
        await expect(tile(page, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
        await expect(tile(page, build_id).locator(".tile-id")).to_have_text(build_id)
    await expect(tile(page, "br-missing")).to_contain_text("not found", timeout=WAIT)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT)
    await expect(page.locator("#conn")).to_contain_text("live")

    sim.advance(plain, 2)
    await expect(tile(page, plain)).to_contain_text("BuildRequestExecuting", timeout=WAIT)
    await expect(tile(page, plain).locator(".tile-elapsed")).to_contain_text("running")
    before = await tile(page, plain).locator(".tile-elapsed").inner_text()
    await expect(tile(page, plain).locator(".tile-elapsed")).not_to_have_text(before, timeout=WAIT)

    sim.finish(failing)
    failed = tile(page, failing)
    await expect(failed).to_contain_text("BuildRequestFailed", timeout=WAIT)
    await expect(failed).to_have_class("tile tone-error")
    await expect(failed.locator(".tile-failing")).to_contain_text(failing_ref)
    await expect(failed.locator(".tile-counts")).to_have_text("2/3 available · 1 failed")
    await expect(failed.locator(".tile-elapsed")).to_contain_text("took")

    sim.finish(quick)
    await expect(tile(page, quick)).to_contain_text("BuildRequestCompleted", timeout=WAIT)
    await expect(tile(page, quick).locator(".tile-counts")).to_have_text("2/2 available")
    bar = tile(page, quick).locator(".tile-bar")
    await expect(bar).to_have_attribute("aria-valuenow", "2")

    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}, "one for every tile"
    assert not per_build_streams(requests), per_build_streams(requests)
    await page.context.close()


async def test_watched_mode_follows_the_gateway_and_makes_room(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession, browser: Browser
) -> None:
    gateway = await start_gateway(grace=30.0)  # a build stays watched 30 s after its last viewer
    first, second = sim.create_build(3), sim.create_build(3)
    for build_id in (first, second):
        await watch(session, gateway, build_id)
    page = await new_page(browser, watched_ms=500)
    requests = record_requests(page)
    await page.goto(wall_url(gateway, keep="3s"))

    for build_id in (first, second):
        await expect(tile(page, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await expect(page.locator(".tile")).to_have_count(2)
    await expect(page.locator("#wall-title")).to_have_text("watched builds: 2")
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}

    # A build that starts being watched gets a tile, on the same connection; the others go
    # on without a second snapshot.
    third = sim.create_build(2)
    await watch(session, gateway, third)
    await expect(tile(page, third)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    sim.advance(first, 2)
    await expect(tile(page, first)).to_contain_text("BuildRequestExecuting", timeout=WAIT)
    snapshots = await page.evaluate("window.BuildcastWall.stats.snapshots")
    assert snapshots == {first: 1, second: 1, third: 1}, snapshots
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}

    # An ended build stays `keep` (3 s here), then makes room, and is not brought back while
    # the gateway still lists it.
    sim.finish(second)
    await expect(tile(page, second)).to_contain_text("BuildRequestCompleted", timeout=WAIT)
    await expect(tile(page, second)).to_have_count(0, timeout=WAIT)
    await expect(page.locator(".tile")).to_have_count(2)
    async with session.get(gateway.make_url("/api/v1/watched")) as response:
        listed = [b["buildId"] for b in (await response.json())["builds"]]
    assert second in listed, "still watched: the wall chose to drop it"
    await asyncio.sleep(1.5)  # three refreshes of the watched list
    await expect(tile(page, second)).to_have_count(0)
    assert not per_build_streams(requests), per_build_streams(requests)
    await page.context.close()


async def test_the_wall_recovers_when_the_gateway_restarts(
    sim: Simulator, settings: Settings, browser: Browser
) -> None:
    port = free_port()
    server = TestServer(create_app(settings), port=port)
    await server.start_server()
    running, finishing = sim.create_build(3), sim.create_build(2)
    page = await new_page(browser, max_backoff_ms=2000)
    conn = page.locator("#conn")
    try:
        await page.goto(wall_url(server, [running, finishing]))
        await expect(tile(page, running)).to_contain_text("BuildRequestReceived", timeout=WAIT)
        await expect(conn).to_have_attribute("data-state", "live", timeout=WAIT)

        await server.close()
        await expect(conn).to_have_attribute("data-state", "down", timeout=WAIT)
        await expect(conn).to_contain_text("disconnected")
        await expect(conn).to_contain_text("last message")
        await expect(page.locator("body")).to_have_class("wall stale")
        sim.advance(running, 2)  # what happens while the gateway is away shows once it is back
        sim.finish(finishing)

        server = TestServer(create_app(settings), port=port)
        await server.start_server()
        await expect(conn).to_have_attribute("data-state", "live", timeout=WAIT)
        await expect(tile(page, running)).to_contain_text("BuildRequestExecuting", timeout=WAIT)
        await expect(tile(page, finishing)).to_contain_text("BuildRequestCompleted", timeout=WAIT)
        await expect(page.locator("body")).to_have_class("wall")
    finally:
        await page.context.close()
        await server.close()


async def test_a_tile_says_when_its_build_cannot_be_read_upstream(
    sim: Simulator, gateway: TestServer, control: Upstream, browser: Browser
) -> None:
    build_id = sim.create_build(2)
    page = await new_page(browser)
    await page.goto(wall_url(gateway, [build_id]))
    flag = tile(page, build_id).locator(".tile-flag")
    await expect(tile(page, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await expect(flag).to_be_hidden()

    await control.faults(status=503)  # the gateway keeps the last good view, marked stale
    # ...and says when the upstream last answered: the flag gives the data's age.
    await expect(flag).to_have_text(re.compile(r"^stale · (just now|\d+ s ago)$"), timeout=WAIT)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await control.clear_faults()
    sim.advance(build_id, 2)
    await expect(flag).to_be_hidden(timeout=WAIT)
    await expect(tile(page, build_id)).to_contain_text("BuildRequestExecuting", timeout=WAIT)
    await page.context.close()


def _refs(number: int, count: int) -> list[str]:
    datasets = ["reviews", "podcasts", "episodes", "ratings", "listens", "charts"]
    return [f"{datasets[i % 6]}/date=2026-11-{number + 1:02d}/region=eu-{i}" for i in range(count)]


async def _fits(page: Page) -> None:
    scroll = await page.evaluate("[document.scrollingElement.scrollHeight, innerHeight]")
    assert scroll[0] <= scroll[1], f"the page scrolls: {scroll}"
    overflowing = await page.evaluate(
        """() => [...document.querySelectorAll('.tile')].filter((t) => {
             const r = t.getBoundingClientRect();
             return t.scrollHeight > t.clientHeight + 1 || t.scrollWidth > t.clientWidth + 1
               || r.bottom > innerHeight || r.right > innerWidth;
           }).map((t) => t.dataset.buildId)"""
    )
    assert overflowing == [], f"tiles whose content does not fit: {overflowing}"


async def test_24_builds_fit_one_screen_in_full_hd_and_4k(
    sim: Simulator, gateway: TestServer, browser: Browser
) -> None:
    builds = []
    for number in range(24):
        refs = _refs(number, 3 + number % 7)
        build_id = sim.create_build(refs, fail=refs[:2] if number % 5 == 3 else ())
        if number % 3 == 0:
            sim.finish(build_id)
        else:
            sim.advance(build_id, number % 9)
        builds.append(build_id)
    page = await new_page(browser, width=1920, height=1080)
    await page.goto(wall_url(gateway, builds))
    await expect(page.locator('.tile[data-phase="live"]')).to_have_count(24, timeout=WAIT)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT)
    await _fits(page)
    shape = await page.evaluate(
        "['--cols', '--rows'].map((v) => Number(getComputedStyle(grid).getPropertyValue(v)))"
    )
    assert shape[0] * shape[1] >= 24 and shape[0] > shape[1], f"columns and rows: {shape}"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "wall.png"))  # the one in docs/images, refreshed

    await page.set_viewport_size({"width": 3840, "height": 2160})
    await page.wait_for_function(  # a function: the page's CSP forbids eval() of an expression
        "() => parseFloat(getComputedStyle(grid).getPropertyValue('--tile-fs')) > 30"
    )
    await _fits(page)
    font = (
        await tile(page, builds[0])
        .locator(".status-word")
        .evaluate("(n) => parseFloat(getComputedStyle(n).fontSize)")
    )
    assert font >= 60, f"the status is readable across a room in 4K: {font}px"
    await page.context.close()


async def test_hostile_text_and_bad_ids_show_as_text(
    sim: Simulator, gateway: TestServer, browser: Browser
) -> None:
    hostile_id = "<b>br-evil<i>"  # a valid build id (no '/' nor space) that is also HTML
    hostile_ref = '<img src=x onerror="window.__pwned=1">'
    build_id = sim.create_build([hostile_ref, "ok/date=1"], build_id=hostile_id, fail=[hostile_ref])
    sim.finish(build_id)
    page = await new_page(browser)
    requests = record_requests(page)
    await page.goto(wall_url(gateway, [hostile_id, "not valid"]))

    hostile = page.locator(".tile").filter(has=page.locator(".tile-id", has_text=hostile_id))
    await expect(hostile).to_contain_text("BuildRequestFailed", timeout=WAIT)
    await expect(hostile.locator(".tile-id")).to_have_text(hostile_id)
    await expect(hostile.locator(".tile-failing")).to_contain_text(hostile_ref)
    invalid = page.locator(".tile").filter(has=page.locator(".tile-id", has_text="not valid"))
    await expect(invalid).to_contain_text("not a valid build id")
    assert await page.locator("#grid img, #grid b, #grid i").count() == 0, "text became HTML"
    assert await page.evaluate("window.__pwned") is None
    assert not [url for url in requests if "/api/" in url], "asked by the shared worker"
    assert await gateway_connections(gateway) == {"sse": 0, "ws": 1}
    await page.context.close()


async def test_a_stale_tile_gives_the_age_of_its_data(
    start_fake: StartFake, browser: Browser
) -> None:
    now = int(time.time() * 1000)
    view = small_view()
    view.update(stale=True, checkedAtMs=now - 5 * 60_000 - 5_000)
    fake, server = await start_fake(view)
    page = await new_page(browser)
    await page.goto(wall_url(server, ["br-fake"]))
    flag = tile(page, "br-fake").locator(".tile-flag")
    await expect(flag).to_have_text("stale · 5 min ago", timeout=WAIT)
    # Never answered since the gateway started: no age to give.
    fake.send(fake.delta({"checkedAtMs": None}))
    await expect(flag).to_have_text("stale", timeout=WAIT)
    fake.send(fake.delta({"stale": False}))
    await expect(flag).to_be_hidden(timeout=WAIT)
    await expect(tile(page, "br-fake")).to_contain_text("BuildRequestExecuting")
    await page.context.close()


async def viewing(session: aiohttp.ClientSession, gateway: TestServer, build_id: str) -> Any:
    """An open stream of the build: someone views it (until the response is closed)."""
    stream = await session.get(gateway.make_url(f"/api/v1/builds/{build_id}/stream"))
    assert stream.status == 200, await stream.text()
    await stream.content.readline()
    return stream


async def test_a_plain_wall_shows_builds_watched_lately_failures_first(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, browser: Browser
) -> None:
    # Watched lately, nobody views them now: one failed, one completed (watched later), one
    # whose id is HTML.
    failed_lately = sim.create_build(["d/1", "d/2"], build_id="br-d-failed", fail=["d/2"])
    hostile = sim.create_build(1, build_id="<b>br-evil<i>")
    done_lately = sim.create_build(2, build_id="br-c-done")
    for build_id in (failed_lately, hostile, done_lately):
        sim.finish(build_id)
        await watch(session, gateway, build_id)
    # Viewed now: two live tiles, the second of which is to fail.
    running = sim.create_build(2, build_id="br-a-running")
    failing = sim.create_build(["b/1", "b/2"], build_id="br-b-failing", fail=["b/1"])
    streams_open = [await viewing(session, gateway, b) for b in (running, failing)]
    await asyncio.sleep(1.5)  # the grace period (1 s) of the builds nobody views now is over

    page = await new_page(browser, watched_ms=500)
    await page.goto(wall_url(gateway))
    for build_id in (running, failing):
        await expect(tile(page, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    strip = page.locator(".wall-recent")
    await expect(strip).to_be_visible(timeout=WAIT)
    items = strip.locator(".recent-build")
    # Only the builds no tile shows; the failed one first, though watched before the others.
    await expect(items).to_have_count(3, timeout=WAIT)
    await expect(items.nth(0)).to_have_attribute("data-build-id", failed_lately)
    await expect(items.nth(0)).to_contain_text("Failed")
    await expect(items.nth(0)).to_contain_text("1/2 available · 1 failed")
    await expect(items.nth(0)).to_have_class(re.compile(r"\btone-error\b"))
    await expect(items.nth(1)).to_have_attribute("data-build-id", done_lately)
    await expect(items.nth(1)).to_contain_text("Completed")
    await expect(strip.locator(".recent-head")).to_have_text("Watched lately (24 h): 3 · 1 failed")
    link = items.nth(0).locator("a")
    await expect(link).to_have_attribute("href", f"/builds/{failed_lately}")
    await expect(items.nth(2).locator(".recent-id")).to_have_text(hostile)
    assert await page.locator(".wall-recent b, .wall-recent i").count() == 0, "text became HTML"
    assert await page.locator(".tile").count() == 2

    # A failing tile moves first in the grid.
    await expect(page.locator(".tile").first).to_have_attribute("data-build-id", running)
    sim.finish(failing)
    await expect(tile(page, failing)).to_contain_text("BuildRequestFailed", timeout=WAIT)
    await expect(page.locator(".tile").first).to_have_attribute(
        "data-build-id", failing, timeout=WAIT
    )
    await page.screenshot(path=str(ARTIFACTS / "wall-recent.png"))  # in docs/images
    # The recent builds are never followed: the wall does not make them watched again.
    async with session.get(gateway.make_url("/api/v1/watched")) as response:
        listed = {b["buildId"] for b in (await response.json())["builds"]}
    assert listed == {running, failing}, listed

    # A wall that keeps ended builds 1 s: the failed one, still viewed, is in the strip.
    later = await new_page(browser, watched_ms=500)
    await later.goto(wall_url(gateway, keep="1s"))
    await expect(tile(later, running)).to_have_count(1, timeout=WAIT)
    await expect(tile(later, failing)).to_have_count(0)
    ended = later.locator(f'.recent-build[data-build-id="{failing}"]')
    await expect(ended).to_have_class(re.compile(r"\btone-error\b"), timeout=WAIT)
    for stream in streams_open:
        stream.close()
    await page.context.close()
    await later.context.close()


async def test_an_ended_wall_links_home(gateway: TestServer, browser: Browser) -> None:
    page = await new_page(browser)
    await page.goto(wall_url(gateway, ["br-missing", "not valid"]))
    await expect(tile(page, "br-missing")).to_contain_text("not found", timeout=WAIT)
    home = page.locator("a.wall-home")
    await expect(home).to_be_visible()
    await expect(home).to_have_attribute("href", "/")
    await home.click()
    await expect(page).to_have_url(re.compile(r"/$"), timeout=WAIT)
    await page.context.close()
