"""The pages against a gateway with access control, and under its Content-Security-Policy.

A page opened with `?token=T` keeps T for its tab (sessionStorage), takes it out of the
address bar, and sends it: `?token=` on its streams, a Bearer header on its fetches. A page
with no token relies on the cookie. A missing, refused or expired token is said in words and
not retried; a build the token does not name is said too (on the wall, on its tile).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, Request, expect

from gateway.guard.http import CSP, TOKEN_COOKIE
from gateway.guard.tokens import mint
from gateway.simulator import Simulator
from tests.helpers.browser import OWN_STREAMS, TOKEN_KEY, CspWatch, new_page, tile, wall_url
from tests.helpers.gateways import ARTIFACTS, StartGateway

pytestmark = pytest.mark.browser

WAIT = 15_000  # ms: generous, the machine is small and other suites run beside this one
SECRET = "a-secret-for-the-page-tests-of-32-bytes"


def token(*patterns: str, ttl: float = 600) -> str:
    return mint(SECRET, list(patterns) or ["br-*"], ttl, "page-test")


@pytest.fixture
async def guarded(start_gateway: StartGateway) -> TestServer:
    return await start_gateway(auth_secret=SECRET)


def api_requests(page: Page) -> list[Request]:
    """Every request of the page to the gateway's API, from now on. A test that reads its
    streams' URLs runs the page on its own stream (`OWN_STREAMS`): the shared worker's
    requests are not the page's (test_shared_stream.py checks the shared socket's token)."""
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request) if "/api/" in request.url else None)
    return requests


async def stored_token(page: Page) -> Any:
    return await page.evaluate("(key) => sessionStorage.getItem(key)", TOKEN_KEY)


# --- the build page


async def test_a_link_with_a_token_follows_the_build_and_the_token_leaves_the_address_bar(
    sim: Simulator, guarded: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2, log_lines=2)
    secret = token()
    await page.add_init_script(OWN_STREAMS)
    requests = api_requests(page)
    await page.goto(str(guarded.make_url(f"/builds/{build_id}")) + f"?token={secret}")
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("BuildRequestReceived")
    assert await page.evaluate("location.search") == ""
    assert page.url == str(guarded.make_url(f"/builds/{build_id}"))
    assert await stored_token(page) == secret

    sim.advance(build_id, 3)
    await expect(page.locator("#status")).to_have_text("BuildRequestExecuting", timeout=WAIT)

    await page.reload()  # the address bar holds no token now: the tab's storage does
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("BuildRequestExecuting")
    streams = [r.url for r in requests]
    assert len(streams) == 2 and all(url.endswith(f"/stream?token={secret}") for url in streams)


async def test_a_cookie_is_enough(
    sim: Simulator, guarded: TestServer, context: BrowserContext
) -> None:
    """What an SSO proxy does: it sets the cookie, the page has no token of its own."""
    build_id = sim.create_build(2)
    base = str(guarded.make_url("/"))
    await context.add_cookies([{"name": TOKEN_COOKIE, "value": token(), "url": base}])
    await context.add_init_script(OWN_STREAMS)
    page = await context.new_page()
    requests = api_requests(page)
    await page.goto(str(guarded.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#status")).to_have_text("BuildRequestReceived")
    assert await stored_token(page) is None
    assert [r.url for r in requests] == [str(guarded.make_url(f"/api/v1/builds/{build_id}/stream"))]


async def test_no_token_is_said_and_not_retried(
    sim: Simulator, guarded: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2)
    await page.add_init_script(OWN_STREAMS)
    requests = api_requests(page)
    await page.goto(str(guarded.make_url(f"/builds/{build_id}")))
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("Access token missing or expired", timeout=WAIT)
    await expect(notice).to_contain_text("open this page again with a new token")
    await expect(notice).to_contain_text("this gateway needs an access token")  # the gateway's why
    await expect(page.locator("#conn")).to_have_text("no access")
    await expect(page.locator("body")).to_have_attribute("data-stream", "closed")
    await page.wait_for_timeout(2500)  # longer than a retry: nothing more is asked
    assert len(requests) == 2, "the stream, and the same URL fetched to learn why"


async def test_a_token_for_other_builds_says_this_one_is_not_allowed(
    sim: Simulator, guarded: TestServer, page: Page
) -> None:
    build_id = sim.create_build(2)
    secret = token("other-*")
    await page.goto(str(guarded.make_url(f"/builds/{build_id}")) + f"?token={secret}")
    await expect(page.locator("#notice")).to_have_text(
        f"This access token does not allow build {build_id}.", timeout=WAIT
    )
    await expect(page.locator("#conn")).to_have_text("not allowed")
    await expect(page.locator("body")).to_have_attribute("data-stream", "closed")
    assert await stored_token(page) == secret, "a good token, for other builds: kept"


async def test_a_token_that_expires_mid_stream_is_said(
    sim: Simulator, start_gateway: StartGateway, page: Page
) -> None:
    gateway = await start_gateway(auth_secret=SECRET, token_leeway=0.0)
    build_id = sim.create_build(2)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")) + f"?token={token(ttl=6)}")
    await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("Access token missing or expired", timeout=WAIT)
    await expect(notice).to_contain_text("the token expired")  # the gateway's `error` message
    await expect(page.locator("#conn")).to_have_text("no access")
    await expect(page.locator("body")).to_have_attribute("data-stream", "closed")
    await expect(page.locator("#status")).to_have_text("BuildRequestReceived")  # the last state
    assert await stored_token(page) is None, "an expired token is dropped: a reload needs a new one"


# --- the wall and the home page


async def test_the_wall_logs_in_with_a_token_in_its_link(
    sim: Simulator, guarded: TestServer, browser: Browser
) -> None:
    first, second = sim.create_build(2), sim.create_build(3)
    secret = token()
    page = await new_page(browser)
    await page.add_init_script(OWN_STREAMS)
    requests = api_requests(page)
    await page.goto(wall_url(guarded, [first], token=secret) + f"&build={second}")
    for build_id in (first, second):
        await expect(tile(page, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    assert await page.evaluate("location.search") == f"?build={first}&build={second}"
    sim.advance(second, 3)
    await expect(tile(page, second)).to_contain_text("BuildRequestExecuting", timeout=WAIT)
    assert [r.url for r in requests] == [
        str(guarded.make_url("/api/v1/stream")) + f"?build={first}&build={second}&token={secret}"
    ]
    await page.context.close()


async def test_a_wall_tile_says_when_the_token_does_not_allow_its_build(
    sim: Simulator, guarded: TestServer, browser: Browser
) -> None:
    allowed, other = sim.create_build(2), sim.create_build(2)
    page = await new_page(browser)
    await page.goto(wall_url(guarded, [allowed, other], token=token(allowed)))
    refused = tile(page, other)
    await expect(refused.locator(".status-word")).to_have_text("not allowed", timeout=WAIT)
    await expect(refused.locator(".status-prefix")).to_have_text(
        "the access token does not name it"
    )
    await expect(tile(page, allowed)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    sim.advance(allowed, 3)
    await expect(tile(page, allowed)).to_contain_text("BuildRequestExecuting", timeout=WAIT)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "wall-not-allowed.png"))
    await page.context.close()


async def test_a_wall_without_a_token_says_so_on_every_tile(
    sim: Simulator, guarded: TestServer, browser: Browser
) -> None:
    builds = [sim.create_build(2), sim.create_build(2)]
    page = await new_page(browser)
    await page.add_init_script(OWN_STREAMS)
    requests = api_requests(page)
    await page.goto(wall_url(guarded, builds))
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "denied", timeout=WAIT)
    await expect(conn).to_have_text(
        "Access token missing or expired: open this page again with a new token"
        " (the gateway says: this gateway needs an access token)."
    )
    for build_id in builds:
        status = tile(page, build_id).locator(".tile-status")
        await expect(status.locator(".status-word")).to_have_text("no access")
        await expect(status.locator(".status-prefix")).to_have_text(
            "access token missing or expired"
        )
    await page.wait_for_timeout(1500)  # longer than a retry: nothing more is asked
    assert len(requests) == 2, "the stream, and the same URL fetched to learn why"
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "wall-no-token.png"))
    await page.context.close()


async def test_the_wall_in_watched_mode_sends_its_token_or_says_it_has_none(
    sim: Simulator, guarded: TestServer, browser: Browser, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(2)
    secret = token()
    view = guarded.make_url(f"/api/v1/builds/{build_id}")
    async with session.get(view, headers={"Authorization": f"Bearer {secret}"}) as response:
        assert response.status == 200  # now watched, for the grace period
    page = await new_page(browser, watched_ms=300)
    requests = api_requests(page)
    await page.goto(wall_url(guarded, token=secret))
    await expect(tile(page, build_id)).to_contain_text("BuildRequestReceived", timeout=WAIT)
    listed = [r for r in requests if r.url.endswith("/api/v1/watched")]
    assert (await listed[0].all_headers())["authorization"] == f"Bearer {secret}"
    await page.context.close()

    page = await new_page(browser, watched_ms=300)
    requests = api_requests(page)
    await page.goto(wall_url(guarded))
    conn = page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "denied", timeout=WAIT)
    await expect(conn).to_contain_text("Access token missing or expired")
    await page.wait_for_timeout(1000)  # three refreshes: none is made
    assert len(requests) == 1, [r.url for r in requests]
    await page.context.close()


async def test_home_sends_its_token_or_says_it_has_none(
    sim: Simulator, guarded: TestServer, context: BrowserContext
) -> None:
    await context.add_init_script("window.BUILDCAST_HOME_REFRESH_MS = 200;")
    build_id = sim.create_build(2)
    secret = token()
    viewer, home = await context.new_page(), await context.new_page()
    await viewer.goto(str(guarded.make_url(f"/builds/{build_id}")) + f"?token={secret}")
    await expect(viewer.locator("#conn")).to_have_text("live", timeout=WAIT)
    await home.goto(str(guarded.make_url("/")) + f"?token={secret}")
    await expect(home.locator("#watched tr", has_text=build_id)).to_contain_text(
        "BuildRequestReceived", timeout=WAIT
    )
    assert await home.evaluate("location.search") == ""

    stranger = await context.new_page()  # a tab of its own: no token in its storage
    requests = api_requests(stranger)
    await stranger.goto(str(guarded.make_url("/")))
    notice = stranger.locator("#gateway")
    await expect(notice).to_contain_text("Access token missing or expired", timeout=WAIT)
    await stranger.wait_for_timeout(1000)  # five refreshes: none is made
    assert len(requests) == 1, [r.url for r in requests]


# --- the Content-Security-Policy


@pytest.mark.parametrize("name", ["home", "build", "wall"])
async def test_no_page_breaks_the_content_security_policy(
    sim: Simulator, gateway: TestServer, page: Page, name: str
) -> None:
    build_id = sim.create_build(3, log_lines=3, hostile=True)
    sim.advance(build_id, 6)
    watch = await CspWatch.start(page)
    if name == "home":  # a build to list: another tab follows it
        viewer = await page.context.new_page()
        await viewer.goto(str(gateway.make_url(f"/builds/{build_id}")))
        await expect(viewer.locator("#conn")).to_have_text("live", timeout=WAIT)
    path = {"home": "/", "build": f"/builds/{build_id}", "wall": f"/wall?build={build_id}"}[name]
    response = await page.goto(str(gateway.make_url(path)))
    assert response is not None and response.headers["content-security-policy"] == CSP
    if name == "home":
        await expect(page.locator("#watched tr", has_text=build_id)).to_be_visible(timeout=WAIT)
    elif name == "build":
        await expect(page.locator("#conn")).to_have_text("live", timeout=WAIT)
        await page.locator("#jobs details[data-job-run] summary").first.click()  # a log
        await page.locator(".chip").first.click()  # a filter: cards hidden and shown
    else:
        await expect(tile(page, build_id)).to_have_attribute("data-phase", "live", timeout=WAIT)
    await page.wait_for_timeout(1200)  # a tick of every page's clock
    assert await watch.violations() == []

    # The watch sees what it is there to see: an inline style, refused.
    await page.evaluate("document.body.setAttribute('style', 'color: red')")
    await page.wait_for_function("() => window.__cspViolations.length > 0", timeout=WAIT)
    assert any("style-src" in text for text in await watch.violations())
