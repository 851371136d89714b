"""The home page (/) in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, Route, expect

from gateway.simulator import Simulator

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: generous, the machine is small and other suites run beside this one


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield await context.new_page()
    await context.close()


async def test_the_list_of_watched_builds_is_live(
    sim: Simulator, gateway: TestServer, browser: Browser
) -> None:
    build_id = sim.create_build(3)
    context = await browser.new_context()
    viewer, home = await context.new_page(), await context.new_page()
    await home.goto(str(gateway.make_url("/")))
    await expect(home.locator("#watched")).to_contain_text("No build is watched", timeout=WAIT)

    await viewer.goto(str(gateway.make_url(f"/builds/{build_id}")))  # a viewer: now watched
    row = home.locator("#watched tr", has_text=build_id)
    await expect(row).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await expect(row.locator(".viewers")).to_have_text("1")
    await expect(row.locator(".counts")).to_have_text("0/3 available")
    await expect(row.locator(f'a[href="/builds/{build_id}"]')).to_have_text(build_id)
    await expect(home.locator('a[href="/wall"]').first).to_be_visible()
    await home.evaluate("window.stillTheSamePage = true")

    sim.advance(build_id, 2)
    await expect(row).to_contain_text("BuildRequestExecuting", timeout=WAIT)
    sim.finish(build_id)
    await expect(row).to_contain_text("BuildRequestCompleted", timeout=WAIT)
    await expect(row.locator(".counts")).to_have_text("3/3 available")
    assert await home.evaluate("window.stillTheSamePage") is True, "the page was reloaded"

    await viewer.close()  # no viewer left: after the grace period the build leaves the list
    await expect(row).to_have_count(0, timeout=WAIT)
    await context.close()


async def test_opening_a_build_by_id_goes_to_its_page(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2)
    await page.goto(str(gateway.make_url("/")))
    await page.fill("#build-id", f"  {build_id} ")
    await page.press("#build-id", "Enter")
    await expect(page).to_have_url(re.compile(f"/builds/{build_id}$"), timeout=WAIT)
    await expect(page.locator("#build-id")).to_have_text(build_id, timeout=WAIT)


async def test_says_when_the_gateway_is_unreachable(gateway: TestServer, page: Page) -> None:
    await page.goto(str(gateway.make_url("/")))
    notice = page.locator("#gateway")
    await expect(page.locator("#watched")).to_contain_text("No build is watched", timeout=WAIT)
    await expect(notice).to_be_hidden()

    async def refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    await page.route("**/api/v1/watched", refuse)
    await expect(notice).to_contain_text("Gateway unreachable", timeout=WAIT)
    await page.unroute("**/api/v1/watched")
    await expect(notice).to_be_hidden(timeout=WAIT)


async def test_builds_watched_lately_stay_listed_failures_marked(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    ok = sim.create_build(2)
    failed = sim.create_build(["lately/a", "lately/b"], fail=["lately/b"])
    hostile = sim.create_build(1, build_id="<b>br-evil<i>")
    for build_id in (ok, failed, hostile):
        sim.finish(build_id)
        # Watched once (a page's REST read); then nobody: after the grace period it is no
        # longer watched, and only "watched lately" remembers it, with its end.
        async with (
            aiohttp.ClientSession() as session,
            session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response,
        ):
            assert response.status == 200, await response.text()
    await page.goto(str(gateway.make_url("/")))
    recent = page.locator("#recent")
    await expect(page.locator("#watched")).to_contain_text("No build is watched", timeout=WAIT)
    for build_id, status in ((ok, "BuildRequestCompleted"), (failed, "BuildRequestFailed")):
        row = recent.locator(f'tr[data-build-id="{build_id}"]')
        await expect(row).to_contain_text(status, timeout=WAIT)
        await expect(row.locator(f'a[href="/builds/{build_id}"]')).to_have_text(build_id)
    await expect(recent.locator("tr.failed")).to_have_count(1)
    await expect(recent.locator("tr.failed")).to_have_attribute("data-build-id", failed)
    await expect(page.locator("#recent-note")).to_have_text("3 in the last 24 h, 1 failed")
    hostile_row = recent.locator("tr").filter(has_text="br-evil")
    await expect(hostile_row.locator(".build-link")).to_have_text(hostile)
    assert await page.locator("#recent b, #recent i").count() == 0, "an id became HTML"
    failed_edge = await recent.locator("tr.failed td").first.evaluate(
        "td => getComputedStyle(td).boxShadow"
    )
    assert failed_edge != "none", "a failed build is marked by more than its badge"

    await recent.locator(f'a[href="/builds/{failed}"]').click()
    await expect(page).to_have_url(re.compile(f"/builds/{failed}$"), timeout=WAIT)
    await expect(page.locator("#build-id")).to_have_text(failed, timeout=WAIT)


async def test_a_build_watched_now_is_not_listed_twice(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2)
    async with aiohttp.ClientSession() as session:
        stream = await session.get(gateway.make_url(f"/api/v1/builds/{build_id}/stream"))
        await stream.content.readline()  # a viewer, as a page's stream is
        await page.goto(str(gateway.make_url("/")))
        watched = page.locator(f'#watched tr[data-build-id="{build_id}"]')
        await expect(watched).to_have_count(1, timeout=WAIT)
        await expect(page.locator("#recent")).to_contain_text("No other build was watched")
        stream.close()  # after the grace period: watched lately, no longer watched now
    await expect(page.locator(f'#recent tr[data-build-id="{build_id}"]')).to_have_count(
        1, timeout=WAIT
    )
    await expect(watched).to_have_count(0)
