"""A large build in real headless Chromium: 2,000 partitions, 10,000 events, a burst of deltas.

The page is fed by `FakeGateway` (real HTTP on loopback, the real web/ files): the
simulator cannot send 200 deltas in a burst through a gateway that polls it, and the
page is what is under test here. Timings are measured in the page and written to
tests/artifacts/page_large.json; only behaviour is asserted, never a timing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect

from gateway.simulator import HOSTILE_LOG_LINE, Simulator
from tests.helpers.browser import FakeGateway
from tests.helpers.gateways import ARTIFACTS, StartGateway, eventually, gateway_view

pytestmark = pytest.mark.browser

PARTITIONS = 2_000
EVENTS = 10_000
BURST = 200  # deltas
PER_DELTA = (10, 5)  # partitions changed, events added
T0 = 1_795_766_400_000
DATASETS = ("reviews", "podcasts", "episodes", "ratings", "listens", "charts")
STATUSES = (
    "PartitionAvailable",
    "PartitionAvailable",
    "PartitionAvailable",
    "PartitionAvailable",
    "PartitionBuilding",
    "PartitionScheduled",
    "PartitionRequested",
    "PartitionRequested",
    "PartitionFailed",
    "PartitionDelegated",
)

# Installed before the page's own scripts: long tasks, and how late a 50 ms timer fires
# (the main thread's lag as a user would feel it).
MONITOR = """
window.__longtasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longtasks.push([e.startTime, e.duration]);
}).observe({type: "longtask", buffered: true});
window.__lag = [];
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  window.__lag.push([now, Math.max(0, now - last - 50)]);
  last = now;
}, 50);
"""


def ref(i: int) -> str:
    return f"{DATASETS[i % len(DATASETS)]}/date=2026-11-27/part={i:04d}"


def event(n: int, i: int) -> dict[str, Any]:
    """The `n`th event (from 1), about partition `i`: jobs with logs, and partition events."""
    base = {"eventId": f"ev-{n}", "timestampMs": T0 + n * 37}
    if n % 4 in (1, 2):
        lines = [f"read {n * 13:,} rows from {ref(i)}", "validated schema v7", f"step {n}"]
        if n == EVENTS + BURST * PER_DELTA[1] - 2:  # in the burst's last delta
            lines.append(HOSTILE_LOG_LINE)
        return {
            **base,
            "eventType": "JobEvent",
            "message": "Job running",
            "job": {
                "jobRunId": f"jr-{n}",
                "jobLabel": f"//jobs:ingest_{DATASETS[i % len(DATASETS)]}",
                "status": "JobRunning",
                "targetPartitions": [ref(i)],
                "logLines": lines,
            },
        }
    status = STATUSES[n % len(STATUSES)]
    return {
        **base,
        "eventType": "PartitionEvent",
        "message": f"Partition {status.removeprefix('Partition').lower()}",
        "partitionRef": ref(i),
        "partitionStatus": status,
    }


def large_view() -> dict[str, Any]:
    refs = [ref(i) for i in range(PARTITIONS)]
    partitions = {}
    for i, r in enumerate(refs):
        status = STATUSES[i % len(STATUSES)]
        partitions[r] = {
            "status": status,
            "updatedAtMs": T0 + i * 11,
            "delegatedTo": f"br-other-{i}" if status == "PartitionDelegated" else None,
        }
    return {
        "buildId": "br-large",
        "seq": 1,
        "status": "BuildRequestExecuting",
        "createdAtMs": T0,
        "updatedAtMs": T0 + EVENTS * 37,
        "requestedPartitions": refs,
        "partitions": partitions,
        "events": [event(n, n % PARTITIONS) for n in range(1, EVENTS + 1)],
        "stale": False,
    }


def burst_changes(k: int) -> dict[str, Any]:
    """The `k`th delta of the burst (from 1): a few partitions move, a few events come."""
    changed, added = PER_DELTA
    partitions = {}
    for m in range(changed):
        i = (k * 97 + m * 13) % PARTITIONS
        partitions[ref(i)] = {
            "status": "PartitionFailed" if (k + m) % 7 == 0 else "PartitionAvailable",
            "updatedAtMs": T0 + EVENTS * 37 + k * 100 + m,
            "delegatedTo": None,
        }
    first = EVENTS + (k - 1) * added + 1
    changes: dict[str, Any] = {
        "updatedAtMs": T0 + EVENTS * 37 + k * 100,
        "partitions": partitions,
        "events": [event(n, n % PARTITIONS) for n in range(first, first + added)],
    }
    if k == BURST:
        changes["status"] = "BuildRequestFailed"
    return changes


@pytest.fixture
async def large(aiohttp_server: Any) -> tuple[FakeGateway, TestServer]:
    fake = FakeGateway(large_view())
    server: TestServer = await aiohttp_server(fake.app())
    return fake, server


def record(key: str, figures: dict[str, Any]) -> None:
    """Print `figures` and keep them under `key` in tests/artifacts/page_large.json."""
    print(json.dumps({key: figures}, indent=2))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "page_large.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    kept[key] = figures
    path.write_text(json.dumps(kept, indent=2) + "\n")


async def rendered(page: Page, seq: int) -> None:
    """Wait until the DOM shows `seq` entirely.

    Not `expect(body).to_have_attribute(...)`: on each retry Playwright previews the
    element it waits on, here the whole page's text, which forces a layout of every card
    and event and slowed this very page down tenfold.
    """
    await page.wait_for_function(
        "(seq) => document.body.dataset.renderedSeq === String(seq)",
        arg=seq,
        polling=100,
        timeout=60_000,
    )


async def round_trips(page: Page, done: asyncio.Event) -> list[float]:
    """Milliseconds of each page.evaluate round trip, back to back, until `done`."""
    times = []
    while not done.is_set():
        started = time.perf_counter()
        await page.evaluate("0")
        times.append((time.perf_counter() - started) * 1000)
    return times


async def test_a_large_build_renders_and_a_burst_applies_with_the_tab_responsive(
    large: tuple[FakeGateway, TestServer], browser: Browser
) -> None:
    fake, server = large
    snapshot_bytes = len(fake.snapshot_frame())
    # Wide enough for the timeline beside the grid (the picture in docs/images/).
    context = await browser.new_context(viewport={"width": 1920, "height": 1080})
    await context.add_init_script(MONITOR)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # --- the first render
    await page.goto(str(server.make_url("/builds/br-large")))
    await rendered(page, 1)
    first = await page.evaluate(
        """() => ({stats: buildcast.stats,
                   nav: performance.getEntriesByType("navigation")[0].toJSON(),
                   longtasks: window.__longtasks.slice(), lag: window.__lag.slice()})"""
    )
    cards = page.locator("#partitions > .partition")
    items = page.locator("#timeline > li")
    await expect(cards).to_have_count(PARTITIONS)
    await expect(items).to_have_count(200)
    await expect(items.last).to_have_attribute("data-event-id", f"ev-{EVENTS}")
    await expect(page.locator("#older")).to_contain_text("9,800 not shown")
    await expect(page.locator("#counts")).to_contain_text("800 / 2,000 available")
    await page.screenshot(path=str(ARTIFACTS / "large-build.png"))

    # --- a burst of deltas, with round trips to the page measured while it applies
    frames = [fake.delta(burst_changes(k)) for k in range(1, BURST + 1)]
    final = fake.view
    burst_at = await page.evaluate("buildcast.stats.maxFlushMs = 0, performance.now()")
    done = asyncio.Event()
    probe = asyncio.create_task(round_trips(page, done))
    sent = time.perf_counter()
    fake.send(*frames)
    await rendered(page, final["seq"])
    applied_wall = (time.perf_counter() - sent) * 1000
    done.set()
    trips = await probe
    after = await page.evaluate(
        """(since) => ({stats: buildcast.stats,
                        longtasks: window.__longtasks.filter(([t]) => t >= since),
                        lag: window.__lag.filter(([t]) => t >= since).map(([, l]) => l)})""",
        burst_at,
    )

    # --- behaviour: the DOM shows the final view
    assert await page.evaluate("buildcast.view()") == final
    await expect(cards).to_have_count(PARTITIONS)
    last_changes = burst_changes(BURST)["partitions"]
    for changed_ref, entry in list(last_changes.items())[:3]:
        card = page.locator(f'#partitions > .partition[data-ref="{changed_ref}"]')
        await expect(card.locator(".badge")).to_have_text(entry["status"])
    await expect(page.locator("#status")).to_have_text("BuildRequestFailed")
    newest = final["events"][-200:]
    await expect(items).to_have_count(200)  # the window follows the newest events
    await expect(items.first).to_have_attribute("data-event-id", newest[0]["eventId"])
    await expect(items.last).to_have_attribute("data-event-id", newest[-1]["eventId"])
    statuses = [final["partitions"][r]["status"] for r in final["requestedPartitions"]]
    failed, available = statuses.count("PartitionFailed"), statuses.count("PartitionAvailable")
    await expect(page.locator("#counts")).to_contain_text(f"{available:,} / 2,000 available")
    await expect(page.locator("#counts")).to_contain_text(f"{failed:,} failed")
    await expect(page.locator("#progress")).to_have_attribute("aria-valuenow", str(available))

    # The filter shows only failed cards; the older button pages back through the timeline.
    await page.locator('#filters [data-status="PartitionFailed"]').click()
    await expect(page.locator("#partitions > .partition:visible")).to_have_count(failed)
    await expect(page.locator('#filters [data-status="PartitionFailed"]')).to_contain_text(
        f"{failed:,}"
    )
    await page.screenshot(path=str(ARTIFACTS / "large-build-failed.png"))
    await page.locator('#filters [data-status="all"]').click()
    await page.locator("#older").click()
    await expect(items).to_have_count(400)
    await expect(items.first).to_have_attribute("data-event-id", final["events"][-400]["eventId"])
    # The hostile line's event points to its run; opening the run shows the line as text.
    n = EVENTS + BURST * PER_DELTA[1] - 2
    await page.locator(f'#timeline [data-event-id="ev-{n}"] button.open-run').click()
    hostile = page.locator(f'#jobs details[data-job-run="jr-{n}"]')
    await expect(hostile).to_have_attribute("open", "")
    await expect(hostile.locator(".run-log")).to_contain_text(HOSTILE_LOG_LINE)
    assert await page.locator("#jobs img, #timeline img").count() == 0
    assert not errors, f"the page threw: {errors}"

    # --- figures, recorded and printed, never asserted
    stats, nav = first["stats"], first["nav"]
    lag = after["lag"] or [0.0]
    figures = {
        "partitions": PARTITIONS,
        "events": EVENTS,
        "snapshot_bytes": snapshot_bytes,
        "burst_deltas": BURST,
        "burst_changes_per_delta": {"partitions": PER_DELTA[0], "events": PER_DELTA[1]},
        "first_render": {
            "page_loaded_ms": round(nav["domContentLoadedEventEnd"], 1),
            "snapshot_received_ms": round(stats["firstMessageAt"], 1),
            "first_render_ms": round(stats["firstRenderAt"], 1),
            "all_cards_rendered_ms": round(stats["gridCompleteAt"], 1),
            "longest_task_ms": max((d for _, d in first["longtasks"]), default=0),
            "long_tasks": len(first["longtasks"]),
            "max_timer_lag_ms": round(max((v for _, v in first["lag"]), default=0), 1),
        },
        "burst": {
            "applied_ms_in_page": round(after["stats"]["lastFlushAt"] - burst_at, 1),
            "applied_ms_seen_by_test": round(applied_wall, 1),
            "frames_flushed": after["stats"]["flushes"] - stats["flushes"],
            "longest_flush_ms": round(after["stats"]["maxFlushMs"], 1),
            "longest_task_ms": max((d for _, d in after["longtasks"]), default=0),
            "long_tasks": len(after["longtasks"]),
            "max_timer_lag_ms": round(max(lag), 1),
            "evaluate_round_trips": len(trips),
            "round_trip_ms_median": round(statistics.median(trips), 1) if trips else None,
            "round_trip_ms_max": round(max(trips), 1) if trips else None,
        },
    }
    record("fake_stream", figures)
    await context.close()


async def test_a_large_simulated_build_through_the_gateway_renders_and_follows(
    sim: Simulator, start_gateway: StartGateway, browser: Browser, session: aiohttp.ClientSession
) -> None:
    """End to end: the simulator's build of 2,000 partitions and over 10,000 events, served
    by a real gateway, rendered, then followed through a run of upstream changes."""
    build_id = sim.create_build(PARTITIONS, log_lines=1)
    while len(sim.build_json(build_id)["events"]) < EVENTS:
        sim.advance(build_id, 100)
    gateway = await start_gateway(poll_active=0.5)
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    started = time.perf_counter()
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    view = await gateway_view(session, gateway, build_id)
    await rendered(page, view["seq"])
    first_render = (time.perf_counter() - started) * 1000
    await expect(page.locator("#partitions > .partition")).to_have_count(PARTITIONS)
    await expect(page.locator("#timeline > li").last).to_have_attribute(
        "data-event-id", view["events"][-1]["eventId"]
    )

    started = time.perf_counter()
    for _ in range(10):  # upstream changes while the page watches
        sim.advance(build_id, 20)
        await asyncio.sleep(0.3)
    final = await eventually(
        lambda: gateway_view(session, gateway, build_id),
        lambda v: len(v["events"]) == len(sim.build_json(build_id)["events"]),
        timeout=30,
    )
    await rendered(page, final["seq"])
    followed = (time.perf_counter() - started) * 1000
    assert await page.evaluate("buildcast.view()") == final
    assert await page.locator("body").get_attribute("data-snapshots") == "1"
    stats = await page.evaluate("buildcast.stats")
    record(
        "simulator_through_gateway",
        {
            "partitions": PARTITIONS,
            "events_at_first_render": len(view["events"]),
            "events_at_end": len(final["events"]),
            "snapshot_received_ms": round(stats["firstMessageAt"], 1),
            "all_cards_rendered_ms": round(stats["gridCompleteAt"], 1),
            "first_render_ms_seen_by_test": round(first_render, 1),
            "advancing_3s_then_caught_up_ms": round(followed, 1),
            "deltas_applied": stats["deltas"],
        },
    )
    await context.close()
