"""Ways back home: the gateway's HTML 404 page for a browser asking for a page that does not
exist, and the link home of a build page that ended (not found, invalid id, no access), in
Chromium against the simulator. API and static paths keep the protocol's JSON error."""

from __future__ import annotations

import re
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from gateway.simulator import Simulator
from tests.helpers.browser import CspWatch
from tests.helpers.gateways import StartGateway

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: generous, the machine is small and other suites run beside this one
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def test_a_browser_asking_for_an_unknown_page_gets_one_that_links_home(
    gateway: TestServer, page: Page
) -> None:
    csp = await CspWatch.start(page)
    asked = '/no/such/<b>page</b>"&'
    response = await page.goto(str(gateway.make_url(quote(asked))))
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    await expect(page.locator("h1")).to_have_text("Page not found")
    await expect(page.locator("#asked")).to_have_text(asked)  # the path asked for, as text
    assert await page.locator("main b").count() == 0, "the path became HTML"
    home = page.locator("a#home")
    await expect(home).to_have_attribute("href", "/")
    assert await csp.violations() == []
    await home.click()
    await expect(page).to_have_url(re.compile(r"/$"), timeout=WAIT)
    await expect(page.locator("h2").first).to_have_text("Watched now", timeout=WAIT)


@pytest.mark.parametrize(
    ("path", "accept", "kind"),
    [
        ("/api/v1/nothing", HTML, "json"),  # the API answers JSON, whoever asks
        ("/static/nothing.js", HTML, "file"),  # a page's missing file is no page
        ("/nowhere", {"Accept": "application/json"}, "json"),  # a script, not a browser
        ("/nowhere", {"Accept": "*/*"}, "json"),  # curl
        ("/nowhere", HTML, "html"),
        ("/builds/a/b", HTML, "html"),  # no such page: a build id holds no '/'
    ],
)
async def test_only_a_browser_asking_for_a_page_gets_the_html_404(
    path: str, accept: dict[str, str], kind: str, gateway: TestServer
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(gateway.make_url(path), headers=accept) as response,
    ):
        assert response.status == 404
        if kind == "json":
            assert (await response.json())["error"]["code"] == "not_found"
        elif kind == "file":
            assert response.content_type != "text/html"
        else:
            assert response.content_type == "text/html"
            text = await response.text()
            assert 'href="/"' in text and "Page not found" in text
            assert "<script" not in text and "<style" not in text
            assert "Content-Security-Policy" in response.headers


async def ended_notice_links_home(page: Page, text: str) -> None:
    notice = page.locator("#notice")
    await expect(notice).to_contain_text(text, timeout=WAIT)
    await expect(notice).to_have_text(re.compile(f"^{re.escape(text)}"))  # it stays the notice
    link = page.locator("#home-link a")
    await expect(link).to_have_text("Back to the home page")
    await expect(link).to_have_attribute("href", "/")
    await link.click()
    await expect(page).to_have_url(re.compile(r"/$"), timeout=WAIT)
    await expect(page.locator("h2").first).to_have_text("Watched now", timeout=WAIT)


@pytest.mark.parametrize(
    ("build_id", "text", "label"),
    [
        ("br-nowhere", "Build br-nowhere was not found", "not found"),
        ("not valid", '"not valid" is not a valid build id.', "invalid id"),
        ("<b>br-evil<i>", "Build <b>br-evil<i> was not found", "not found"),
    ],
)
async def test_an_ended_build_page_links_home(
    build_id: str, text: str, label: str, gateway: TestServer, page: Page
) -> None:
    await page.goto(str(gateway.make_url(f"/builds/{quote(build_id, safe='')}")))
    await expect(page.locator("#conn")).to_have_text(label, timeout=WAIT)
    assert await page.locator("#notice b, #notice i").count() == 0, "the id became HTML"
    await ended_notice_links_home(page, text)


async def test_a_build_page_without_access_links_home(
    sim: Simulator, start_gateway: StartGateway, page: Page
) -> None:
    gateway = await start_gateway(auth_secret="s" * 32)
    build_id = sim.create_build(2)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#conn")).to_have_text("no access", timeout=WAIT)
    await ended_notice_links_home(page, "Access token missing or expired")


async def test_a_live_build_page_has_no_home_link_in_its_notice(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#build-id")).to_have_text(build_id, timeout=WAIT)
    await expect(page.locator("#home-link")).to_have_count(0)
