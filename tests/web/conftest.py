"""Page tests: one Chromium for the session, a fresh browser context per test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.helpers.browser import Chromium, FakeGateway


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    with contextlib.closing(Chromium()) as started:
        yield started


@pytest.fixture
async def browser(chromium: Chromium) -> AsyncIterator[Browser]:
    """The session's Chromium, through this test's Playwright; closing it only disconnects."""
    async with async_playwright() as playwright:
        connected = await playwright.chromium.connect_over_cdp(chromium.endpoint)
        yield connected
        for context in connected.contexts[1:]:  # the first is Chromium's default: keep it
            await context.close()
        await connected.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    await context.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


class StartFake(Protocol):
    """Serves a `FakeGateway` of these builds' views."""

    async def __call__(
        self, view: dict[str, Any], *others: dict[str, Any]
    ) -> tuple[FakeGateway, TestServer]: ...


@pytest.fixture
def start_fake(aiohttp_server: Any) -> StartFake:
    async def start(
        view: dict[str, Any], *others: dict[str, Any]
    ) -> tuple[FakeGateway, TestServer]:
        fake = FakeGateway(view, *others)
        server: TestServer = await aiohttp_server(fake.app())
        return fake, server

    return start
