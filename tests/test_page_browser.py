"""The live build page in real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect

from gateway.simulator import HOSTILE_LOG_LINE, Simulator
from tests.conftest import raw_url

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
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


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


async def test_the_page_follows_a_build_live_and_shows_logs_as_text(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    refs = ["reviews/date=2026-11-27", "podcasts/date=2026-11-27"]
    build_id = sim.create_build(refs, hostile=True, log_lines=4)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    status = page.locator("#status")
    await expect(status).to_have_text("BuildRequestReceived")
    await expect(page.locator("#conn")).to_have_text("live")

    sim.advance(build_id, 5)  # planning, executing, the first job running
    await expect(status).to_have_text("BuildRequestExecuting", timeout=5000)
    job = page.locator("#timeline details").filter(has_text="onerror").first
    await expect(job).to_be_visible()
    await job.locator("summary").click()
    logs = job.locator("pre.logs")
    await expect(logs).to_contain_text(HOSTILE_LOG_LINE)
    assert await page.locator("#timeline img").count() == 0, "a log line became HTML"

    sim.finish(build_id)
    await expect(status).to_have_text("BuildRequestCompleted", timeout=5000)
    await expect(job).to_have_attribute("open", "")  # still expanded after many updates
    card = page.locator(f'.partition[data-ref="{refs[0]}"]')
    await expect(card).to_contain_text("PartitionAvailable")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "build-page.png"), full_page=True)
    api_calls = [url for url in requests if "/api/" in url]
    assert all(url.endswith("/stream") for url in api_calls), f"polled the REST API: {api_calls}"


async def test_a_delegated_partition_links_to_the_other_build(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    refs = ["a/date=1", "b/date=1"]
    build_id = sim.create_build(refs, delegate=[refs[1]])
    sim.advance(build_id, 6)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    link = page.locator(f'.partition[data-ref="{refs[1]}"] a')
    await expect(link).to_be_visible(timeout=5000)
    other = await link.inner_text()
    assert other != build_id and other in sim.build_ids()
    await link.click()
    await expect(page.locator("#build-id")).to_have_text(other)


@pytest.mark.parametrize(
    ("build_id", "says"), [("br-missing", "not found"), ("a%20b", "not a valid")]
)
async def test_unknown_and_invalid_ids_say_so(
    gateway: TestServer, page: Page, build_id: str, says: str
) -> None:
    await page.goto(str(raw_url(gateway, f"/builds/{build_id}")))
    await expect(page.locator("#notice")).to_contain_text(says, timeout=5000)


async def test_home_lists_watched_builds_and_opens_one_by_id(
    sim: Simulator, gateway: TestServer, browser: Browser
) -> None:
    watched, other = sim.create_build(2), sim.create_build(2)
    context = await browser.new_context()
    build_page, home = await context.new_page(), await context.new_page()
    await build_page.goto(str(gateway.make_url(f"/builds/{watched}")))
    await expect(build_page.locator("#conn")).to_have_text("live")
    await home.goto(str(gateway.make_url("/")))
    row = home.locator("#watched tr", has_text=watched)
    await expect(row).to_contain_text("BuildRequestReceived")
    await home.fill("#build-id", other)
    await home.click("button[type=submit]")
    await expect(home.locator("#build-id")).to_have_text(other)
    await context.close()
