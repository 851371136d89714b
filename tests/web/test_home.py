"""The home page (/) in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

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
