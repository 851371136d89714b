"""The build page's partition cards in headless Chromium: a card opens to show its history
(this build's events about it, live, and the Build Graph Service's through the gateway),
says so when that history cannot be read, and a filter box narrows the grid by ref."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Locator, Page, expect

from gateway.protocol.codec import error_body
from gateway.simulator import Simulator
from tests.helpers.browser import CspWatch, FakeGateway, small_view
from tests.helpers.gateways import eventually

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms
HOSTILE_REF = 'x/<img src=x onerror="alert(1)">&amp;<b>'


def card(page: Page, ref: str) -> Locator:
    quoted = ref.replace("\\", "\\\\").replace('"', '\\"')
    return page.locator(f'#partitions > .partition[data-ref="{quoted}"]')


async def test_an_open_card_shows_its_history_here_and_upstream_and_grows_live(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    refs = ["reviews/date=2026-11-27", "podcasts/date=2026-11-27"]
    build_id = sim.create_build(refs, log_lines=1)
    sim.advance(build_id, 2)  # planning: each partition requested
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    csp = await CspWatch.start(page)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    first = card(page, refs[0])
    await expect(first).to_be_visible(timeout=WAIT)
    button = first.locator(".ref")
    await expect(button).to_have_attribute("aria-expanded", "false")
    await button.click()
    await expect(button).to_have_attribute("aria-expanded", "true")
    history = first.locator(".history")
    here = history.locator(".history-list").first
    await expect(here.locator("li").filter(has_text="Partition requested")).to_have_count(1)
    upstream = history.locator(".history-upstream")
    await expect(upstream).to_have_attribute("data-state", "ready", timeout=WAIT)
    await expect(upstream.locator("li").filter(has_text="Partition requested")).to_have_count(1)
    await expect(upstream.locator("li .here")).to_have_count(1)  # the same event, marked ours
    assert await card(page, refs[1]).locator(".history").count() == 0, "one card open"

    sim.finish(build_id)  # later events about the open partition appear in it
    await expect(here.locator("li").filter(has_text="Partition available")).to_have_count(
        1, timeout=WAIT
    )
    await expect(here.locator("li").filter(has_text="//jobs:")).not_to_have_count(0)
    await expect(first).to_have_class(re.compile(r"\bopen\b"))  # still open, status changed
    await expect(first.locator(".row .badge")).to_have_text("PartitionAvailable")

    # The keyboard closes it and opens another; Space as well as Enter.
    await button.focus()
    await page.keyboard.press("Enter")
    await expect(button).to_have_attribute("aria-expanded", "false")
    await expect(first.locator(".history")).to_have_count(0)
    other = card(page, refs[1]).locator(".ref")
    await other.focus()
    await page.keyboard.press(" ")
    await expect(other).to_have_attribute("aria-expanded", "true")
    await expect(card(page, refs[1]).locator(".history-upstream")).to_have_attribute(
        "data-state", "ready", timeout=WAIT
    )
    assert not errors, errors
    assert await csp.violations() == []


def fake_app(
    fake: FakeGateway, answer: Callable[[], web.Response] | None, asked: list[str]
) -> web.Application:
    """The fake gateway, with the partition events endpoint answering `answer()` (None: the
    path does not exist, as before the gateway served it); `asked` gets each ref asked for."""
    app = fake.app()
    if answer is not None:

        async def events(request: web.Request) -> web.Response:
            asked.append(request.match_info["ref"])
            return answer()

        app.router.add_get("/api/v1/partitions/{ref}/events", events)
    return app


@pytest.mark.parametrize(
    ("status", "says"),
    [(503, "Build Graph Service cannot be read"), (404, "no history of this partition")],
)
async def test_history_that_cannot_be_read_says_so_and_the_card_stays(
    aiohttp_server: Any, page: Page, status: int, says: str
) -> None:
    fake = FakeGateway(small_view())
    asked: list[str] = []
    body = error_body("upstream_unavailable", "the Build Graph Service timed out")
    answer = None
    if status == 503:
        answer = partial(web.Response, status=503, body=body, content_type="application/json")
    server = await aiohttp_server(fake_app(fake, answer, asked))
    await page.goto(str(server.make_url("/builds/br-fake")))
    ref = small_view()["requestedPartitions"][0]
    await card(page, ref).locator(".ref").click()
    upstream = card(page, ref).locator(".history-upstream")
    await expect(upstream).to_have_attribute("data-state", "unavailable", timeout=WAIT)
    await expect(upstream).to_contain_text("History unavailable")
    await expect(upstream).to_contain_text(says)
    await expect(card(page, ref).locator(".badge").first).to_have_text("PartitionBuilding")
    await expect(card(page, ref).locator(".history")).to_contain_text("No event of this build")
    if status == 503:
        assert asked == [ref], asked  # once per opening, the ref as one path segment
        await upstream.get_by_role("button", name="Try again").click()
        await eventually(lambda: asyncio.sleep(0, len(asked)), lambda n: n == 2, what="a retry")
        await expect(upstream).to_have_attribute("data-state", "unavailable", timeout=WAIT)
        await expect(upstream).to_contain_text("timed out")
        assert asked == [ref, ref]


def filter_view() -> dict[str, Any]:
    view = small_view()
    statuses = ["PartitionAvailable", "PartitionFailed", "PartitionBuilding"]
    refs = [f"{d}/date=2026-11-{day}" for d in ("reviews", "podcasts") for day in (26, 27, 28)]
    refs.append(HOSTILE_REF)
    view["requestedPartitions"] = refs
    view["partitions"] = {
        ref: {"status": statuses[i % 3], "updatedAtMs": 1_795_766_410_000, "delegatedTo": None}
        for i, ref in enumerate(refs)
    }
    view["events"].append(
        {
            "eventId": "ev-2",
            "timestampMs": 1_795_766_401_000,
            "eventType": "PartitionEvent",
            "message": '<script>alert("m")</script>',
            "partitionRef": HOSTILE_REF,
            "partitionStatus": "PartitionAvailable",
        }
    )
    return view


async def test_the_filter_box_narrows_by_ref_with_the_status_chips_and_refs_stay_text(
    aiohttp_server: Any, page: Page
) -> None:
    view = filter_view()
    fake = FakeGateway(view)
    hostile_events = {
        "partitionRef": HOSTILE_REF,
        "events": [
            {
                "eventId": "up-1",
                "timestampMs": 1_795_766_300_000,
                "eventType": "PartitionEvent",
                "message": "<img src=y onerror=alert(2)>",
                "partitionRef": HOSTILE_REF,
                "partitionStatus": "PartitionFailed",
            }
        ],
        "fetchedAtMs": 1_795_766_420_000,
    }
    asked: list[str] = []
    answer = partial(
        web.Response, body=orjson.dumps(hostile_events), content_type="application/json"
    )
    server = await aiohttp_server(fake_app(fake, answer, asked))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(str(server.make_url("/builds/br-fake")))
    shown = page.locator("#partitions > .partition:visible")
    await expect(shown).to_have_count(7, timeout=WAIT)
    await expect(page.locator("#partitions-shown")).to_have_text("")

    box = page.locator("#ref-filter")
    await box.fill("REVIEWS/")  # case-insensitive, anywhere in the ref
    await expect(shown).to_have_count(3)
    await expect(page.locator("#partitions-shown")).to_have_text("3 of 7 shown")
    await expect(page.locator('#filters [data-status="all"] .chip-count')).to_have_text("3")
    await page.locator('#filters [data-status="PartitionFailed"]').click()
    await expect(shown).to_have_count(1)
    await expect(shown.locator(".ref")).to_have_attribute("title", "reviews/date=2026-11-27")
    await expect(page.locator("#partitions-shown")).to_have_text("1 of 7 shown")
    await box.fill("nothing like this")
    await expect(shown).to_have_count(0)
    await expect(page.locator("#partitions-empty")).to_be_visible()
    await expect(page.locator("#partitions-empty")).to_contain_text("matches")
    await page.locator('#filters [data-status="PartitionFailed"]').click()  # all statuses

    await box.fill("onerror")  # the hostile ref: found, and shown as text
    await expect(shown).to_have_count(1)
    await expect(shown.locator(".ref")).to_have_text(HOSTILE_REF)
    await box.fill("")
    await expect(shown).to_have_count(7)
    await expect(page.locator("#partitions-shown")).to_have_text("")

    await card(page, HOSTILE_REF).locator(".ref").click()
    history = card(page, HOSTILE_REF).locator(".history")
    await expect(history.locator(".history-list").first).to_contain_text('<script>alert("m")')
    await expect(history.locator(".history-upstream")).to_contain_text(
        "<img src=y onerror=alert(2)>", timeout=WAIT
    )
    assert asked == [HOSTILE_REF], asked
    assert await page.locator("#partitions img, #partitions script, #partitions b").count() == 0
    assert not dialogs, dialogs
