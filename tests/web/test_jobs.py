"""The build page's Jobs section (web/jobs.js) and its logs' colours (web/ansi.js), in Chromium.

One entry per job run however many events carried it, the failed run first and open, a
running run's log growing in place, line links, search, ANSI colours as text, the raw
download and the truncation marker. The simulator drives the runs of a real build; the
exact logs (colours, hostile text, truncation) come from `FakeGateway`.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Locator, Page, expect

from gateway.simulator import HOSTILE_LOG_LINE, Simulator
from tests.helpers.browser import WEB, CspWatch, small_view
from tests.web.conftest import StartFake

pytestmark = pytest.mark.browser

WAIT = 10_000  # ms
T0 = small_view()["createdAtMs"]


def job_event(
    n: int,
    run: str,
    status: str,
    lines: list[str],
    *,
    truncated: int | None = None,
    label: str = "//jobs:ingest",
    at: int | None = None,
) -> dict[str, Any]:
    """The event `ev-{n}` of job run `run`, carrying its log so far (as the view does)."""
    job: dict[str, Any] = {
        "jobRunId": run,
        "jobLabel": label,
        "status": status,
        "targetPartitions": ["a/date=1"],
        "logLines": lines,
    }
    if truncated is not None:
        job["truncatedLines"] = truncated
    return {
        "eventId": f"ev-{n}",
        "timestampMs": T0 + n * 1000 if at is None else at,
        "eventType": "JobEvent",
        "message": f"Job {status.removeprefix('Job').lower()}",
        "job": job,
    }


def view_with(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    view = small_view()
    view["events"] += list(events)
    view.update(fields)
    return view


def run_entry(page: Page, run: str) -> Locator:
    return page.locator(f"#jobs [data-job-run={quote_attr(run)}]")


def quote_attr(value: str) -> str:
    """A CSS attribute value as a quoted string, whatever it holds."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line_hash(run: str, n: int) -> str:
    return "#" + quote(f"run-{run}-L{n}", safe="")


# --- a real build: runs derived from the events


async def test_one_entry_per_run_the_failed_one_first_and_open(
    sim: Simulator, gateway: TestServer, page: Page
) -> None:
    refs = ["a/date=1", "b/date=1", "c/date=1"]
    build_id = sim.create_build(refs, fail=[refs[1]], log_lines=12)
    sim.finish(build_id)
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")))
    await expect(page.locator("#status")).to_have_text("BuildRequestFailed", timeout=WAIT)

    # Each run had 14 events (scheduled, started, 11 running, ended): it shows once.
    runs = page.locator("#jobs details[data-job-run]")
    await expect(runs).to_have_count(3, timeout=WAIT)
    events = page.locator("#timeline .job-event")
    await expect(events).to_have_count(3 * 14)
    await expect(page.locator("#job-count")).to_have_text("3 runs · 1 failed")

    failed = runs.first
    await expect(failed).to_have_attribute("data-status", "JobFailed")
    await expect(failed).to_have_attribute("open", "")
    await expect(failed.locator(".job-label")).to_contain_text("//jobs:")
    lines = failed.locator(".log-line")
    await expect(lines).to_have_count(13)  # 12 lines, then the error
    await expect(lines.last).to_contain_text("error:")
    for other in (runs.nth(1), runs.nth(2)):
        await expect(other).to_have_attribute("data-status", "JobCompleted")
        await expect(other).not_to_have_attribute("open", "")
    # The rest in start order, each with its duration and a bar on the build's time axis.
    starts = await runs.evaluate_all(
        "(rs) => rs.slice(1).map((r) => r.querySelector('.run-start').getAttribute('datetime'))"
    )
    assert starts == sorted(starts)
    bar = (
        await runs.nth(1)
        .locator(".run-bar")
        .evaluate(
            "(b) => [b.offsetWidth, b.offsetLeft + b.offsetWidth <= b.parentElement.clientWidth]"
        )
    )
    assert bar[0] > 0 and bar[1], bar

    # The timeline names the run and opens it; it carries no copy of the log.
    assert await page.locator("#timeline .log-line").count() == 0
    run_id = await runs.nth(2).get_attribute("data-job-run")
    assert run_id is not None
    button = page.locator(f"#timeline button.open-run[data-run={quote_attr(run_id)}]")
    await expect(button).to_have_count(14)
    await button.first.click()
    await expect(runs.nth(2)).to_have_attribute("open", "")
    await expect(runs.nth(2)).to_be_in_viewport()
    await expect(runs.nth(2).locator(".log-line")).to_have_count(12)


async def test_a_simulated_failed_log_links_searches_and_downloads(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, page: Page
) -> None:
    refs = ["a/date=1", "b/date=1"]
    build_id = sim.create_build(refs, fail=[refs[1]], log_lines=8)
    sim.finish(build_id)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        view = await response.json()
    failed = next(
        e["job"] for e in reversed(view["events"]) if e.get("job", {}).get("status") == "JobFailed"
    )
    run, lines = failed["jobRunId"], failed["logLines"]

    # A link to the error line (the last) opens the failed run there, highlighted.
    await page.goto(str(gateway.make_url(f"/builds/{build_id}")) + line_hash(run, len(lines)))
    entry = run_entry(page, run)
    await expect(entry).to_have_attribute("open", "", timeout=WAIT)
    error = entry.locator(".log-line").last
    await expect(error).to_have_id(f"run-{run}-L{len(lines)}")
    await expect(error).to_have_class("log-line target")
    await expect(error).to_contain_text("error:")

    find = entry.locator("input.log-find")
    await find.fill("ERROR:")
    await expect(entry.locator(".log-hits")).to_have_text("1 of 1")
    await expect(entry.locator(".log-line.current")).to_have_id(f"run-{run}-L{len(lines)}")

    async with page.expect_download() as info:
        await entry.get_by_role("link", name="Download").click()
    path = await (await info.value).path()
    assert path.read_text(encoding="utf-8") == "\n".join(lines) + "\n"


async def test_a_running_runs_log_grows_in_place(start_fake: StartFake, page: Page) -> None:
    now = int(time.time() * 1000)
    view = view_with(
        job_event(2, "jr-1", "JobScheduled", [], at=now - 30_000),
        job_event(3, "jr-1", "JobRunning", ["step 1", "step 2"], at=now - 29_000),
        createdAtMs=now - 60_000,
        updatedAtMs=now - 29_000,
    )
    fake, server = await start_fake(view)
    await page.goto(str(server.make_url("/builds/br-fake")))
    run = run_entry(page, "jr-1")
    await expect(run).to_have_attribute("data-status", "JobRunning", timeout=WAIT)
    await expect(page.locator("#jobs details[data-job-run]")).to_have_count(1)
    await run.locator("summary").click()
    await expect(run.locator(".log-line")).to_have_count(2)

    # The bar starts half way along the build's time so far; the duration and the bar grow
    # with the clock while the run runs.
    bar = run.locator(".run-bar")
    left = await bar.evaluate("(b) => parseFloat(b.style.left)")
    assert 45 < left < 55, left
    width = await bar.evaluate("(b) => parseFloat(b.style.width)")
    took = await run.locator(".run-took").inner_text()
    await expect(run.locator(".run-took")).not_to_have_text(took, timeout=WAIT)
    assert await bar.evaluate("(b) => parseFloat(b.style.width)") > width

    await page.evaluate("document.getElementById('run-jr-1-L1').__kept = true")
    fake.send(
        fake.delta({"events": [job_event(4, "jr-1", "JobRunning", ["step 1", "step 2", "step 3"])]})
    )
    await expect(run.locator(".log-line")).to_have_count(3, timeout=WAIT)
    await expect(run.locator(".log-line").last).to_have_text("3step 3")
    assert await page.evaluate("document.getElementById('run-jr-1-L1').__kept === true"), (
        "the lines shown before were drawn again"
    )
    await expect(page.locator("#jobs details[data-job-run]")).to_have_count(1)

    fake.send(
        fake.delta(
            {"events": [job_event(5, "jr-1", "JobFailed", ["step 1", "step 2", "step 3", "boom"])]}
        )
    )
    await expect(run).to_have_attribute("data-status", "JobFailed", timeout=WAIT)
    await expect(run.locator(".log-line")).to_have_text(["1step 1", "2step 2", "3step 3", "4boom"])
    assert await page.evaluate("document.getElementById('run-jr-1-L1').__kept === true")
    await expect(run.locator(".badge")).to_have_text("JobFailed")
    await expect(run).to_have_attribute("open", "")  # opened by the reader: stays open

    # Closed by the reader, a failed run stays closed as other runs come and go.
    await run.locator("summary").click()
    await expect(run).not_to_have_attribute("open", "")
    fake.send(fake.delta({"events": [job_event(6, "jr-2", "JobRunning", ["other"])]}))
    await expect(page.locator("#jobs details[data-job-run]")).to_have_count(2, timeout=WAIT)
    await expect(page.locator("#jobs details[data-job-run]").first).to_have_attribute(
        "data-job-run", "jr-1"
    )
    await expect(run).not_to_have_attribute("open", "")


async def test_a_line_link_opens_its_run_and_highlights_the_line(
    start_fake: StartFake, page: Page
) -> None:
    run = 'jr/ü "7"#?%<b>&'  # a run id is untrusted text: the hash must carry any of it
    lines = [f"line {n}" for n in range(1, 81)]
    view = view_with(
        job_event(2, "jr-other", "JobCompleted", ["x"]),
        job_event(3, run, "JobCompleted", lines),
    )
    fake, server = await start_fake(view)
    await page.goto(str(server.make_url("/builds/br-fake")) + line_hash(run, 12))
    entry = run_entry(page, run)
    await expect(entry).to_have_attribute("open", "", timeout=WAIT)
    twelve = entry.locator(".log-line").nth(11)
    await expect(twelve).to_have_id(f"run-{run}-L12")
    await expect(twelve).to_have_class("log-line target")
    await expect(twelve).to_be_in_viewport()

    # Following another line's number moves the highlight.
    number = entry.locator(".log-line").nth(69).locator("a.log-no")
    await expect(number).to_have_text("70")
    await number.click()
    seventy = entry.locator(".log-line").nth(69)
    await expect(seventy).to_have_class("log-line target", timeout=WAIT)
    await expect(twelve).to_have_class("log-line")
    await expect(seventy).to_be_in_viewport()
    assert page.url.endswith(line_hash(run, 70))

    # A line of a run that has not started yet: shown once its events arrive.
    await page.goto("about:blank")
    await page.goto(str(server.make_url("/builds/br-fake")) + line_hash("jr-late", 3))
    await expect(run_entry(page, run)).to_be_attached(timeout=WAIT)
    fake.send(fake.delta({"events": [job_event(4, "jr-late", "JobRunning", ["a", "b"])]}))
    late = run_entry(page, "jr-late")
    await expect(late).to_have_attribute("data-status", "JobRunning", timeout=WAIT)
    await expect(late).to_have_attribute("open", "")
    fake.send(fake.delta({"events": [job_event(5, "jr-late", "JobRunning", ["a", "b", "c"])]}))
    await expect(page.locator("#run-jr-late-L3")).to_have_class("log-line target", timeout=WAIT)


async def test_search_finds_counts_and_steps_through_a_log(
    start_fake: StartFake, page: Page
) -> None:
    lines = ["Error: one", "fine", "an ERROR again", "a.c", "abc", "no error here? yes: error"]
    fake, server = await start_fake(view_with(job_event(2, "jr-1", "JobRunning", lines)))
    await page.goto(str(server.make_url("/builds/br-fake")))
    entry = run_entry(page, "jr-1")
    await entry.locator("summary").click(timeout=WAIT)
    find = entry.locator("input.log-find")
    hits = entry.locator(".log-hits")
    await find.fill("error")
    await expect(hits).to_have_text("1 of 3")  # any case
    matches = entry.locator(".log-line.match")
    await expect(matches).to_have_count(3)
    current = entry.locator(".log-line.current")
    await expect(current).to_have_id("run-jr-1-L1")
    await find.press("Enter")
    await expect(hits).to_have_text("2 of 3")
    await expect(current).to_have_id("run-jr-1-L3")
    await find.press("Enter")
    await find.press("Enter")
    await expect(hits).to_have_text("1 of 3")  # round again
    await find.press("Shift+Enter")
    await expect(hits).to_have_text("3 of 3")
    await expect(current).to_have_id("run-jr-1-L6")

    # Lines that arrive are searched too; the reader's place stays.
    fake.send(fake.delta({"events": [job_event(3, "jr-1", "JobRunning", [*lines, "error 4"])]}))
    await expect(hits).to_have_text("3 of 4", timeout=WAIT)
    await expect(matches).to_have_count(4)

    await find.fill("a.c")  # plain text, not a pattern
    await expect(hits).to_have_text("1 of 1")
    await expect(current).to_have_id("run-jr-1-L4")
    await find.fill("nowhere")
    await expect(hits).to_have_text("no match")
    await expect(matches).to_have_count(0)
    await find.fill("")
    await expect(hits).to_have_text("")


async def test_ansi_colours_render_as_styled_text_and_nothing_else(
    start_fake: StartFake, page: Page
) -> None:
    lines = [
        "\x1b[1;31mFAILED\x1b[0m test_x",
        HOSTILE_LOG_LINE,
        "\x1b]0;owned\x07\x1b[2K\x1b[1G\x1b]8;;javascript:alert(2)\x1b\\plain\x1b]8;;\x1b\\ \x1b",
        "\x1b[38;2;10;10;10mdark\x1b[39m",
        "\x1b[32m<script>alert(3)</script>",
    ]
    csp = await CspWatch.start(page)
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.on("pageerror", lambda error: errors.append(str(error)))
    _, server = await start_fake(view_with(job_event(2, "jr-1", "JobFailed", lines)))
    await page.goto(str(server.make_url("/builds/br-fake")))
    entry = run_entry(page, "jr-1")
    await expect(entry).to_have_attribute("open", "", timeout=WAIT)
    texts = entry.locator(".log-text")
    await expect(texts).to_have_text(
        ["FAILED test_x", HOSTILE_LOG_LINE, "plain ", "dark", "<script>alert(3)</script>"]
    )
    red = texts.nth(0).locator("span")
    await expect(red).to_have_text("FAILED")
    await expect(red).to_have_class("ansi-bold ansi-fg-1")
    style = await red.evaluate("(s) => [getComputedStyle(s).color, getComputedStyle(s).fontWeight]")
    assert style == ["rgb(255, 123, 114)", "700"]
    # A truecolor too dark for the log's background is lightened, set through CSSOM.
    dark = await texts.nth(3).locator("span").evaluate("(s) => s.style.color")
    assert dark.startswith("rgb(") and all(int(c) >= 100 for c in dark[4:-1].split(",")), dark
    await expect(texts.nth(4).locator("span")).to_have_class("ansi-fg-2")
    assert await page.locator("#jobs img, #jobs script, #timeline img").count() == 0
    assert await texts.nth(2).locator("*").count() == 0  # the junk line is plain text
    await page.wait_for_timeout(300)  # an onerror would have fired by now
    assert not dialogs, f"log text ran as script: {dialogs}"
    assert not errors, f"the page threw: {errors}"
    assert await csp.violations() == []


async def test_the_raw_download_has_the_kept_lines_exactly(
    start_fake: StartFake, page: Page
) -> None:
    lines = ["\x1b[31mred\x1b[0m", HOSTILE_LOG_LINE, "  indented\tTab", "ünï"]
    _, server = await start_fake(
        view_with(job_event(2, "jr-7", "JobCompleted", lines, truncated=40))
    )
    await page.goto(str(server.make_url("/builds/br-fake")))
    entry = run_entry(page, "jr-7")
    await entry.locator("summary").click(timeout=WAIT)
    async with page.expect_download() as info:
        await entry.get_by_role("link", name="Download").click()
    download = await info.value
    assert download.suggested_filename == "jr-7.log"
    path = await download.path()
    assert path.read_text(encoding="utf-8") == "\n".join(lines) + "\n"


async def test_a_truncated_log_says_so_and_keeps_its_line_numbers(
    start_fake: StartFake, page: Page
) -> None:
    view = view_with(job_event(2, "jr-1", "JobRunning", ["line 1235", "line 1236"], truncated=1234))
    fake, server = await start_fake(view)
    await page.goto(str(server.make_url("/builds/br-fake")))
    entry = run_entry(page, "jr-1")
    await entry.locator("summary").click(timeout=WAIT)
    log = entry.locator(".run-log > *")
    await expect(log).to_have_text(
        ["1,234 earlier lines not shown", "1235line 1235", "1236line 1236"]
    )
    await expect(entry.locator(".log-line").first).to_have_id("run-jr-1-L1235")
    assert await entry.locator(".log-line a").first.get_attribute("href") == "#run-jr-1-L1235"

    # The gateway's kept tail moved past what is shown: a second marker, the numbers go on.
    tail = [f"line {n}" for n in range(1241, 1244)]
    fake.send(fake.delta({"events": [job_event(3, "jr-1", "JobRunning", tail, truncated=1240)]}))
    await expect(log).to_have_text(
        [
            "1,234 earlier lines not shown",
            "1235line 1235",
            "1236line 1236",
            "4 earlier lines not shown",
            "1241line 1241",
            "1242line 1242",
            "1243line 1243",
        ],
        timeout=WAIT,
    )


# --- web/ansi.js alone


@pytest.mark.parametrize(
    ("line", "segments"),
    [
        ("plain", [("plain", False, None, None)]),
        ("", []),
        ("\x1b[1;31mred\x1b[0m ok", [("red", True, 1, None), (" ok", False, None, None)]),
        ("\x1b[1mb\x1b[22mn", [("b", True, None, None), ("n", False, None, None)]),
        (
            "\x1b[44;97mx\x1b[49my\x1b[mz",
            [("x", False, 15, 4), ("y", False, 15, None), ("z", False, None, None)],
        ),
        ("\x1b[91;101mx\x1b[39mY", [("x", False, 9, 9), ("Y", False, None, 9)]),
        ("\x1b[38;5;208mo\x1b[38;5;3mp", [("o", False, "#ff8700", None), ("p", False, 3, None)]),
        ("\x1b[48;5;240mg", [("g", False, None, "#585858")]),
        ("\x1b[38;2;1;2;3;48;2;255;255;255mt", [("t", False, "#010203", "#ffffff")]),
        (
            "\x1b[38:2::10:20:30mc\x1b[38:5:9md",
            [("c", False, "#0a141e", None), ("d", False, 9, None)],
        ),
        ("\x1b[38;5;300mx", [("x", False, None, None)]),  # no such colour: ignored
        ("\x1b[31;38;5mx", [("x", False, 1, None)]),  # cut short: the red stays
        (
            "\x1b]0;title\x07a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b",
            [("alinkb", False, None, None)],
        ),
        ("\x1b[2K\x1b[1Gc\x1b[?25ld\x1b(Be\x1b", [("cde", False, None, None)]),
        ("a\rb\x00c\td\x7f", [("abc\td", False, None, None)]),
        ("\x1b[31", []),  # a sequence the line cut off
        ("\x1b[31m<img src=x>", [("<img src=x>", False, 1, None)]),
    ],
)
@pytest.mark.browser
async def test_ansi_segments(page: Page, line: str, segments: list[tuple[Any, ...]]) -> None:
    await page.add_script_tag(path=str(WEB / "ansi.js"))
    got = await page.evaluate("(line) => ansiSegments(line)", line)
    assert [(s["text"], s["bold"], s["fg"], s["bg"]) for s in got] == segments


async def test_a_build_of_many_runs_shows_the_newest_and_pages_back(
    start_fake: StartFake, page: Page
) -> None:
    events = [job_event(n, f"jr-{n}", "JobCompleted", [f"log {n}"]) for n in range(2, 107)]
    events[0] = job_event(2, "jr-2", "JobFailed", ["the oldest run failed"])
    _, server = await start_fake(view_with(*events))
    await page.goto(str(server.make_url("/builds/br-fake")) + line_hash("jr-3", 1))
    runs = page.locator("#jobs details[data-job-run]")
    # The failed run, the newest 100 of the rest, and the run the address names.
    await expect(runs).to_have_count(102, timeout=WAIT)
    await expect(runs.first).to_have_attribute("data-job-run", "jr-2")
    await expect(runs.nth(1)).to_have_attribute("data-job-run", "jr-3")
    await expect(runs.nth(2)).to_have_attribute("data-job-run", "jr-7")
    await expect(page.locator("#run-jr-3-L1")).to_have_class("log-line target")
    more = page.locator("#jobs button.more-runs")
    await expect(more).to_have_text("Show 3 earlier runs (3 not shown)")
    await more.click()
    await expect(runs).to_have_count(105)
    await expect(runs.nth(2)).to_have_attribute("data-job-run", "jr-4")
    await expect(more).to_be_hidden()
    await expect(page.locator("#job-count")).to_have_text("105 runs · 1 failed")


async def test_the_jobs_section_shows_once_a_run_starts(start_fake: StartFake, page: Page) -> None:
    fake, server = await start_fake(small_view())
    await page.goto(str(server.make_url("/builds/br-fake")))
    await expect(page.locator("#timeline > li")).to_have_count(1, timeout=WAIT)
    panel = page.locator(".jobs-panel")
    await expect(panel).to_be_hidden()
    fake.send(fake.delta({"events": [job_event(2, "jr-1", "JobScheduled", [])]}))
    await expect(panel).to_be_visible(timeout=WAIT)
    await expect(page.locator("#job-count")).to_have_text("1 run · 1 running")
