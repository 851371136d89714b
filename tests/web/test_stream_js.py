"""web/stream.js, the one stream client of the pages, in real headless Chromium.

What every page relies on is checked here once, against `FakeGateway`'s scripted
streams: a gap resyncs only its build, repeats are dropped, pause notices and ends are
per build, a refused stream is explained and retried with the Python client's backoff,
and a stream that drops, stays silent or is paused resumes from its cursor. The pages'
own tests check what each shows of it.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from gateway.client.updates import backoff
from tests.helpers.browser import WEB, FakeGateway, small_view
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms: generous, the machine is small and shared with other tests

# A stream whose every callback is logged in `window.log`; `options` are the stream's own,
# but `finalStatuses`: the HTTP statuses of a refusal that ends the stream.
START = """([builds, options]) => {
    window.log = [];
    window.stats = {};
    const note = (...entry) => log.push(entry);
    const finals = options.finalStatuses;
    window.stream = new BuildcastStream({
        ...options,
        stats,
        isFinal: finals && ((refusal) => finals.includes(refusal.status)),
        on: {
            state: (state) => note("state", state, stream.retryAt && stream.retryAt - Date.now(),
                                   stream.failures),
            snapshot: (id, message) => note("snapshot", id, message.seq),
            delta: (id, message) => note("delta", id, message.seq),
            notice: (id, text) => note("notice", id, text),
            end: (id, ending) => note("end", id, ending),
        },
    });
    stream.follow(builds);
}"""


async def start(page: Page, server: TestServer, builds: list[str], **options: Any) -> None:
    await page.goto(str(server.make_url("/blank")))
    await page.evaluate(START, [builds, options])


async def follow_two(start_fake: StartFake, page: Page, **options: Any) -> FakeGateway:
    """br-a and br-b on one multi-build stream, once both snapshots are in."""
    fake, server = await start_fake(small_view("br-a"), small_view("br-b"))
    await start(page, server, ["br-a", "br-b"], multi=True, **options)
    await snapshots(page, 2)
    return fake


async def logged(page: Page, *kinds: str) -> list[list[Any]]:
    entries: list[list[Any]] = await page.evaluate("log")
    return [entry for entry in entries if entry[0] in kinds]


async def until(page: Page, condition: str) -> None:
    # A function, not an expression: Playwright evaluates an expression with eval() after
    # its first try, which the page's Content-Security-Policy forbids.
    await page.wait_for_function(f"() => {condition}", timeout=WAIT, polling=50)


async def snapshots(page: Page, count: int) -> None:
    await until(page, f"log.filter(([kind]) => kind === 'snapshot').length === {count}")


async def test_the_backoff_is_the_python_clients(page: Page) -> None:
    for script in ("protocol.js", "stream.js"):
        await page.add_script_tag(path=str(WEB / script))
    cases = [[attempt, rand] for attempt in range(1, 12) for rand in (0.0, 0.3, 0.999)]
    delays = await page.evaluate(
        "(cases) => cases.map(([attempt, r]) => backoff(attempt, 1000, 30000, () => r))", cases
    )
    expected = [1000 * backoff(int(a), 1.0, 30.0, lambda r=r: r) for a, r in cases]
    assert delays == pytest.approx(expected)


async def test_a_gap_resyncs_its_build_alone_and_repeats_are_dropped(
    start_fake: StartFake, page: Page
) -> None:
    fake = await follow_two(start_fake, page)
    planning = fake.delta({"status": "BuildRequestPlanning"}, build_id="br-a")
    resumed_at = fake.token("br-a")
    fake.send(planning, planning)  # the second one: a repeat, as after an overlapping resume
    fake.send(fake.delta({"status": "BuildRequestFailed"}, seq=7, build_id="br-b"))  # 6 is lost
    await snapshots(page, 3)
    fake.send(fake.delta({"status": "BuildRequestExecuting"}, build_id="br-a"))
    await until(page, "log.some(([kind, , seq]) => kind === 'delta' && seq === 7)")

    assert await logged(page, "snapshot", "delta") == [
        ["snapshot", "br-a", 5],
        ["snapshot", "br-b", 5],
        ["delta", "br-a", 6],
        ["snapshot", "br-b", 7],  # br-a resumed where it was: no snapshot of it
        ["delta", "br-a", 7],
    ]
    # The reopen's cursor holds br-a's token only: br-b's was dropped for a snapshot.
    assert fake.connections == [None, resumed_at]
    assert await page.evaluate("[stats.resyncs, stats.connects]") == [1, 2]
    states = [entry[1] for entry in await logged(page, "state")]
    assert states[0] == "connecting" and set(states[1:]) == {"live"}, states


async def test_a_pause_notice_keeps_the_build_and_an_error_ends_only_its_own(
    start_fake: StartFake, page: Page
) -> None:
    fake = await follow_two(start_fake, page)
    fake.send(
        fake.error("upstream_unavailable", "the bus is unreachable", build_id="br-a"),
        fake.error("not_found", "no build request br-b upstream", build_id="br-b"),
        fake.delta({"status": "BuildRequestPlanning"}, build_id="br-a"),
    )
    await until(page, "log.some(([kind]) => kind === 'delta')")
    assert await logged(page, "notice", "end", "delta") == [
        ["notice", "br-a", "the bus is unreachable"],
        ["end", "br-b", {"code": "not_found", "message": "no build request br-b upstream"}],
        ["delta", "br-a", 6],
    ]
    assert await page.evaluate("[stream.builds, stream.state, stats.connects]") == [
        ["br-a"],
        "live",
        1,
    ]

    fake.send(fake.error("not_found", "gone too", build_id="br-a"))
    await until(page, "stream.state === 'idle'")  # a wall's stream with nothing left to follow
    assert await page.evaluate("stream.connection") == "closed"


async def test_a_refused_stream_is_explained_and_retried_with_backoff(
    start_fake: StartFake, page: Page
) -> None:
    fake, server = await start_fake(small_view("br-a"))
    fake.refuse(503, "upstream_unavailable", "the Build Graph Service is down")
    await start(page, server, ["br-a"], baseMs=100, capMs=400)
    await until(page, "log.filter(([kind, state, delay]) => state === 'down' && delay).length >= 4")
    assert await page.evaluate("stream.refusal") == {
        "status": 503,
        "code": "upstream_unavailable",
        "message": "the Build Graph Service is down",
    }
    retries = [entry[2:] for entry in await logged(page, "state") if entry[2]][:4]
    assert [failures for _, failures in retries] == [1, 2, 3, 4]
    for delay, failures in retries:
        ceiling = min(400, 100 * 2 ** (failures - 1))
        assert ceiling / 2 - 2 <= delay <= ceiling + 2, (delay, failures)

    fake.accept()
    await until(page, "stream.state === 'live' && log.some(([kind]) => kind === 'snapshot')")
    assert await page.evaluate("stream.refusal") is None


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (404, "not_found", "no build request br-a upstream"),
        (429, "too_many", "at most 50 builds on one stream"),  # no Retry-After: for good
    ],
)
async def test_a_final_refusal_ends_the_stream(
    start_fake: StartFake, page: Page, status: int, code: str, message: str
) -> None:
    fake, server = await start_fake(small_view("br-a"))
    fake.refuse(status, code, message)
    await start(page, server, ["br-a"], baseMs=100, finalStatuses=[status])
    await until(page, "stream.state === 'ended'")
    assert await logged(page, "end") == [
        ["end", "br-a", {"status": status, "code": code, "message": message}]
    ]
    await page.wait_for_timeout(600)  # several backoffs: nothing more is asked
    assert len(fake.connections) == 2, "the stream, and the same URL fetched to learn why"


async def test_a_dropped_or_paused_stream_resumes_from_its_cursor(
    start_fake: StartFake, page: Page
) -> None:
    fake = await follow_two(start_fake, page, baseMs=100)
    cursor = fake.cursor()

    fake.end_streams()  # the gateway restarts, say
    await until(page, "stats.connects === 2 && stream.connection === 'open'")
    states = [entry[1] for entry in await logged(page, "state")]
    assert "reconnecting" in states, states
    await page.evaluate("stream.pause()")
    assert await page.evaluate("[stream.state, stream.connection]") == ["paused", "closed"]
    await page.evaluate("stream.resume()")
    await until(page, "stats.connects === 3 && stream.connection === 'open'")

    assert fake.connections == [None, cursor, cursor]
    assert len(await logged(page, "snapshot")) == 2, "every reopen resumed: no snapshot"


async def test_a_silent_stream_reopens_from_its_cursor(start_fake: StartFake, page: Page) -> None:
    fake = await follow_two(start_fake, page, silenceMs=300)
    await until(page, "stats.silentReopens >= 2")
    await page.evaluate("stream.close()")
    reopens = await page.evaluate("stats.silentReopens")
    assert fake.connections == [None] + [fake.cursor()] * reopens
    assert len(await logged(page, "snapshot")) == 2, "every reopen resumed: no snapshot"


@pytest.mark.parametrize("status", [429, 503])
async def test_a_refusal_with_retry_after_waits_that_long_and_is_not_final(
    start_fake: StartFake, page: Page, status: int
) -> None:
    """A replica at its limit, a client asking too fast, a full process: try again later."""
    fake, server = await start_fake(small_view("br-a"))
    fake.refuse(status, "too_many", "this replica watches its most builds", retry_after=1)
    # The page would end the stream on a 429 that does not say when to come back.
    await start(page, server, ["br-a"], baseMs=100, capMs=400, finalStatuses=[429])
    await until(page, "log.filter(([kind, state, delay]) => state === 'down' && delay).length >= 2")
    assert await page.evaluate("stream.refusal") == {
        "status": status,
        "code": "too_many",
        "message": "this replica watches its most builds",
        "retryAfterMs": 1000,
    }
    delays = [entry[2] for entry in await logged(page, "state") if entry[2]]
    assert all(980 <= delay <= 1000 for delay in delays), f"Retry-After over the backoff: {delays}"
    assert not await logged(page, "end")

    fake.accept()
    await until(page, "stream.state === 'live' && log.some(([kind]) => kind === 'snapshot')")


async def test_the_tabs_token_goes_on_the_streams_url(start_fake: StartFake, page: Page) -> None:
    fake, server = await start_fake(small_view("br-a"), small_view("br-b"))
    await page.goto(str(server.make_url("/blank")) + "?token=t0k.en&x=1")
    assert await page.evaluate("location.search") == "?x=1"
    await page.evaluate(START, [["br-a", "br-b"], {"multi": True}])
    await snapshots(page, 2)
    assert fake.stream_urls == ["/api/v1/stream?build=br-a&build=br-b&token=t0k.en"]
