"""Knowing when a build ends, in headless Chromium: the favicon carries the build's status,
and "Notify me" raises one browser notification when it ends, not again on a reload."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import BrowserContext, Page, expect

from gateway.simulator import Simulator
from tests.helpers.browser import CspWatch, small_view
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms

# Before the page's scripts: every notification the page raises, recorded; the browser's own
# Notification does the rest. `permission` (when given) is what the browser would say.
RECORD = """
window.__notes = [];
(() => {
  const Real = window.Notification;
  const forced = %s;
  function Recorded(title, options) {
    window.__notes.push({ title, body: (options && options.body) || "" });
    try { return new Real(title, options); } catch (e) { return new EventTarget(); }
  }
  Object.defineProperty(Recorded, "permission", { get: () => forced || Real.permission });
  Recorded.requestPermission = () => forced ? Promise.resolve(forced) : Real.requestPermission();
  window.Notification = Recorded;
})();
"""


async def favicon(page: Page) -> str:
    href = await page.locator("link#favicon").get_attribute("href")
    assert href is not None
    return href


async def test_the_favicon_carries_the_status(start_fake: StartFake, page: Page) -> None:
    fake, server = await start_fake(small_view())
    csp = await CspWatch.start(page)  # the icons are data: URLs: allowed as images, nothing more
    await page.goto(str(server.make_url("/builds/br-fake")))
    await expect(page.locator("#status")).to_have_text("BuildRequestExecuting", timeout=WAIT)
    icons = {"running": await favicon(page)}
    for status in ("BuildRequestCompleted", "BuildRequestFailed", "BuildRequestCancelled"):
        before = await favicon(page)
        fake.send(fake.delta({"status": status}))
        await expect(page.locator("#status")).to_have_text(status, timeout=WAIT)
        await expect(page.locator("link#favicon")).not_to_have_attribute("href", before)
        await expect(page).to_have_title(
            f"{status.removeprefix('BuildRequest')} · br-fake · Buildcast"
        )
        icons[status] = await favicon(page)
    assert all(icon.startswith("data:image/") for icon in icons.values()), icons
    assert len(set(icons.values())) == 4, "four different icons"
    assert await csp.violations() == []


async def test_notify_me_raises_one_notification_when_the_build_ends_and_not_on_reload(
    sim: Simulator, gateway: TestServer, context: BrowserContext
) -> None:
    refs = ["a/date=1", "b/date=1"]
    build_id = sim.create_build(refs, fail=[refs[1]], log_lines=1)
    await context.grant_permissions(["notifications"], origin=str(gateway.make_url("/")))
    await context.add_init_script(RECORD % "null")
    page = await context.new_page()
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    button = page.locator("#notify")
    await expect(button).to_have_text("Notify me", timeout=WAIT)
    await button.click()
    await expect(button).to_have_text("Notifying when it ends")
    await expect(button).to_have_attribute("aria-pressed", "true")
    sim.advance(build_id, 4)  # running, not over: nothing yet
    await expect(page.locator("#status")).to_have_text("BuildRequestExecuting", timeout=WAIT)
    assert await page.evaluate("window.__notes") == []

    sim.finish(build_id)
    await expect(page.locator("#status")).to_have_text("BuildRequestFailed", timeout=WAIT)
    notes = await page.evaluate("window.__notes")
    assert len(notes) == 1, notes
    assert notes[0]["title"] == f"Build {build_id} failed"
    assert "1 of 2 partitions available" in notes[0]["body"]
    await expect(button).to_be_hidden()  # the build is over: nothing left to wait for

    await page.reload()
    await expect(page.locator("#status")).to_have_text("BuildRequestFailed", timeout=WAIT)
    await expect(page.locator("#counts")).to_contain_text("1 / 2 available")
    assert await page.evaluate("window.__notes") == [], "a reload notified again"
    await expect(button).to_be_hidden()


async def test_notify_me_says_when_notifications_are_blocked(
    start_fake: StartFake, context: BrowserContext
) -> None:
    fake, server = await start_fake(small_view())
    await context.add_init_script(RECORD % '"denied"')
    page = await context.new_page()
    await page.goto(str(server.make_url("/builds/br-fake")))
    button = page.locator("#notify")
    await expect(button).to_have_text("Notifications blocked", timeout=WAIT)
    await expect(button).to_be_disabled()
    fake.send(fake.delta({"status": "BuildRequestCompleted"}))
    await expect(page.locator("#status")).to_have_text("BuildRequestCompleted", timeout=WAIT)
    assert await page.evaluate("window.__notes") == []


async def test_no_notify_button_without_the_notification_api(
    start_fake: StartFake, context: BrowserContext
) -> None:
    _fake, server = await start_fake(small_view())
    await context.add_init_script("delete window.Notification;")
    page = await context.new_page()
    await page.goto(str(server.make_url("/builds/br-fake")))
    await expect(page.locator("#status")).to_have_text("BuildRequestExecuting", timeout=WAIT)
    await expect(page.locator("#notify")).to_be_hidden()
    await expect(page.locator("#title")).to_be_visible()
