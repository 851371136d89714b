"""Followed delegations in headless Chromium: a delegated partition's card shows how the other
build is doing, live, over the page's one connection; a delegate that is not found says so
and the page's own build goes on; beyond the stream's cap the cards only link."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Locator, Page, expect

from gateway.protocol.rules import STREAM_BUILDS
from gateway.simulator import Simulator
from tests.helpers.browser import small_view
from tests.helpers.gateways import ARTIFACTS, eventually
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms


def live(page: Page, ref: str) -> Locator:
    """What a card shows of its delegate's own state."""
    return page.locator(f'#partitions > .partition[data-ref="{ref}"] .deleg-live')


async def connections(session: aiohttp.ClientSession, gateway: TestServer) -> int:
    async with session.get(gateway.make_url("/api/v1/status")) as response:
        status = await response.json()
    return sum(replica["connections"] for replica in status["replicas"])


async def test_a_delegated_card_follows_the_other_build_on_the_one_connection(
    sim: Simulator, gateway: TestServer, page: Page, session: aiohttp.ClientSession
) -> None:
    refs = ["a/date=1", "b/date=1"]
    build_id = sim.create_build(refs, delegate=[refs[1]], log_lines=1)
    delegate = next(b for b in sim.build_ids() if b != build_id)
    sim.advance(build_id, 1)  # planning: b is delegated
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    shown = live(page, refs[1])
    await expect(shown.locator(".badge")).to_have_text("BuildRequestReceived", timeout=WAIT)
    await expect(shown).to_contain_text("0 / 1 available")
    await expect(live(page, refs[0])).to_have_count(0)  # not delegated: nothing to follow

    sim.advance(delegate, 2)  # the delegate moves; the page's own build does not
    await expect(shown.locator(".badge")).to_have_text("BuildRequestExecuting", timeout=WAIT)
    await shown.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)  # the picture of a followed delegation (docs/images/)
    await page.screenshot(path=str(ARTIFACTS / "delegation-followed.png"))
    sim.finish(delegate)
    await expect(shown.locator(".badge")).to_have_text("BuildRequestCompleted", timeout=WAIT)
    await expect(shown).to_contain_text("1 / 1 available")
    await expect(shown.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "1")
    # Its own build heard of the outcome on the same page, and the header is its own.
    card = page.locator(f'#partitions > .partition[data-ref="{refs[1]}"]')
    await expect(card.locator(".row .badge")).to_have_text("PartitionAvailable", timeout=WAIT)
    await expect(page.locator("#build-id")).to_have_text(build_id)
    await expect(page.locator("#status")).not_to_have_text("BuildRequestCompleted")

    # Both builds came over one connection: the gateway holds one stream for this page.
    assert await eventually(lambda: connections(session, gateway), lambda n: n == 1) == 1
    assert not errors, errors


async def test_a_delegate_not_found_says_so_and_the_build_goes_on(
    start_fake: StartFake, page: Page
) -> None:
    view = small_view()
    refs = view["requestedPartitions"]
    view["partitions"][refs[1]] = {
        "status": "PartitionDelegated",
        "updatedAtMs": 1_795_766_410_000,
        "delegatedTo": "br-other",
    }
    other = small_view("br-other")
    other["requestedPartitions"] = [refs[1]]
    other["partitions"] = {refs[1]: view["partitions"][refs[0]]}
    fake, server = await start_fake(view, other)
    await page.goto(str(server.make_url("/builds/br-fake")))
    shown = live(page, refs[1])
    await expect(shown.locator(".badge")).to_have_text("BuildRequestExecuting", timeout=WAIT)
    await expect(shown).to_contain_text("0 / 1 available")

    fake.send(fake.error("not_found", "no such build upstream", build_id="br-other"))
    await expect(shown).to_have_text("not found", timeout=WAIT)
    await expect(page.locator(f'.partition[data-ref="{refs[1]}"] .deleg a')).to_have_attribute(
        "href", "/builds/br-other"
    )
    # The page's own build is unaffected: still live, and its next change shows.
    entry = {"status": "PartitionAvailable", "updatedAtMs": 1_795_766_420_000}
    fake.send(fake.delta({"partitions": {refs[0]: {**entry, "delegatedTo": None}}}))
    await expect(page.locator("#counts")).to_contain_text("1 / 2 available", timeout=WAIT)
    await expect(page.locator("#conn")).to_have_text("live")
    await expect(page.locator("#notice")).to_be_hidden()


async def test_beyond_the_streams_cap_delegated_cards_only_link(
    start_fake: StartFake, page: Page
) -> None:
    count = STREAM_BUILDS + 1  # one more than the cap: the page's build takes one place
    view = small_view()
    refs = [f"d/part={i:02d}" for i in range(count)]
    view["requestedPartitions"] = refs
    view["partitions"] = {
        ref: {"status": "PartitionDelegated", "updatedAtMs": 1, "delegatedTo": f"br-d{i:02d}"}
        for i, ref in enumerate(refs)
    }
    others: list[dict[str, Any]] = []
    for i in range(STREAM_BUILDS - 1):
        other = small_view(f"br-d{i:02d}")
        other["status"] = "BuildRequestPlanning"
        others.append(other)
    _fake, server = await start_fake(view, *others)
    await page.goto(str(server.make_url("/builds/br-fake")))
    followed = page.locator(".deleg-live:not([hidden])")
    await expect(followed.locator(".badge")).to_have_count(STREAM_BUILDS - 1, timeout=WAIT)
    await expect(followed.locator(".badge").first).to_have_text("BuildRequestPlanning")
    links = page.locator(".partition .deleg a")
    await expect(links).to_have_count(count)  # every card links; two of them only that
    await expect(page.locator(".deleg-live[hidden]")).to_have_count(2)
