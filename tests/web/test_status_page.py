"""The status page (/status) in real headless Chromium (Debian's), driven by Playwright:
the replica and the watched builds, kept current by the page itself (it re-reads
/api/v1/status every 2 s, or `window.BUILDCAST_STATUS_REFRESH_MS`), every text shown as text."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Locator, Page, expect

from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.browser import CspWatch
from tests.helpers.gateways import raw_url
from tests.helpers.sse import events

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: generous, the machine is small and other suites run beside this one
REFRESH_MS = 300


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    # en-US: the page writes numbers with toLocaleString ("0.1 s").
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    yield await context.new_page()
    await context.close()


@asynccontextmanager
async def watching(
    session: aiohttp.ClientSession, gateway: TestServer, build_id: str
) -> AsyncIterator[None]:
    """An SSE viewer of the build, from its first snapshot until the block ends."""
    path = f"/api/v1/builds/{quote(build_id, safe='')}/stream"
    async with session.get(raw_url(gateway, path)) as response:
        assert response.status == 200, await response.text()
        assert (await anext(events(response))).event == "snapshot"
        yield


def cells(page: Page, row: str) -> list[Locator]:
    """The six cells of the row `row` selects, in the table's column order."""
    return [page.locator(f"{row} > td:nth-child({n})") for n in range(1, 7)]


async def test_shows_the_replica_and_the_watched_build_and_follows_new_viewers(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, page: Page
) -> None:
    replica = gateway.app[STATE].backends.replica
    build_id = sim.create_build(["p/0", "p/1"])
    csp = await CspWatch.start(page)
    # The page re-reads the status every 2 s; a test's page every 0.3 s (its knob for tests).
    await page.add_init_script(f"window.BUILDCAST_STATUS_REFRESH_MS = {REFRESH_MS}")
    async with AsyncExitStack() as viewers:
        await viewers.enter_async_context(watching(session, gateway, build_id))
        await page.goto(str(gateway.make_url("/status")))

        mine = f'#replicas tr[data-replica="{replica}"]'
        name, host, pid, _up, connections, polls = cells(page, mine)
        await expect(page.locator(mine)).to_have_count(1, timeout=WAIT)
        await expect(name).to_have_text(replica)
        await expect(host).to_have_text(socket.gethostname())
        await expect(pid).to_have_text(str(os.getpid()))
        await expect(connections).to_have_text("1")
        await expect(polls).to_have_text("1")
        await expect(page.locator("#redis")).to_have_text("one replica, no Redis")

        row = f'#builds tr[data-build-id="{build_id}"]'
        link, owner, every, _last, _age, watchers = cells(page, row)
        await expect(page.locator(row)).to_have_count(1, timeout=WAIT)
        await expect(link.locator("a")).to_have_text(build_id)
        await expect(link.locator("a")).to_have_attribute("href", f"/builds/{build_id}")
        await expect(owner).to_have_text(replica)
        await expect(every).to_have_text("0.1 s")  # the tests' active pace
        await expect(watchers).to_have_text("1")
        await expect(page.locator("#builds-note")).to_have_text("1 watched, 1 polled")
        await expect(page.locator("#gateway")).to_be_hidden()
        await page.evaluate("window.stillTheSamePage = true")

        # A second viewer: the page shows it by itself, without a reload.
        await viewers.enter_async_context(watching(session, gateway, build_id))
        await expect(watchers).to_have_text("2", timeout=WAIT)
        await expect(connections).to_have_text("2", timeout=WAIT)
        assert await page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"

        sim.finish(build_id)  # an ended build is polled at the idle pace
        await expect(every).to_have_text("0.3 s", timeout=WAIT)

    # Both viewers gone: after the grace period (1 s here) the build leaves the list.
    await expect(page.locator(row)).to_have_count(0, timeout=WAIT)
    await expect(page.locator("#builds")).to_contain_text("No build is watched right now.")
    await expect(connections).to_have_text("0", timeout=WAIT)
    assert await csp.violations() == []


async def test_a_hostile_build_id_shows_as_text(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, page: Page
) -> None:
    hostile_id = '<b>br-"evil"&amp;<i>'  # a valid build id (no '/' nor space) that is also HTML
    sim.create_build(1, build_id=hostile_id)
    async with watching(session, gateway, hostile_id):
        await page.goto(str(gateway.make_url("/status")))
        link = page.locator("#builds a.build-link")
        await expect(link).to_have_text(hostile_id, timeout=WAIT)
        await expect(link).to_have_attribute("href", f"/builds/{quote(hostile_id, safe='')}")
        assert await page.locator("#builds b, #builds i").count() == 0, "text became HTML"
        row = page.locator("#builds tr[data-build-id]")
        assert await row.get_attribute("data-build-id") == hostile_id
        assert "&amp;amp;" in await page.locator("#builds").inner_html(), "escaped, once"
