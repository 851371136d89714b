"""`buildcast tail` and `buildcast wait` as a user runs them: real processes, against the
simulator and a gateway served in this test's event loop (so the processes are driven with
asyncio, never a blocking wait that would stall the gateway they talk to)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.client import Update
from gateway.client.tail import _Tail
from gateway.protocol.diff import apply
from gateway.simulator import Simulator
from tests.helpers.gateways import StartGateway, advanced, drive, gateway_view
from tests.helpers.proxy import Proxy
from tests.helpers.views import a_view

BUILDCAST = [sys.executable, "-m", "gateway.cli"]


class Cli:
    """One buildcast process: its output read line by line, each read bounded."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []

    async def line(self, timeout: float = 15) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        return raw.decode().rstrip("\n")

    async def error_line(self, timeout: float = 15) -> str:
        assert self.process.stderr is not None
        raw = await asyncio.wait_for(self.process.stderr.readline(), timeout)
        self.stderr.append(raw.decode().rstrip("\n"))
        return self.stderr[-1]

    async def finish(self, timeout: float = 20) -> tuple[int, list[str], str]:
        """Its exit status, the rest of its stdout, and all its stderr."""
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        errors = "\n".join([*self.stderr, err.decode()])
        assert "Traceback" not in errors, errors
        assert self.process.returncode is not None
        return self.process.returncode, out.decode().splitlines(), errors

    @property
    def running(self) -> bool:
        return self.process.returncode is None


@contextlib.asynccontextmanager
async def buildcast(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Cli]:
    process = await asyncio.create_subprocess_exec(
        *BUILDCAST,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        # As from a terminal: a test run started in the background (`pytest &`) inherits
        # SIGINT ignored, and so would the CLI, which Ctrl+C could then not stop.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        yield Cli(process)
    finally:
        if process.returncode is None:
            process.kill()  # by its PID
            await process.communicate()


def base(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def viewed(session: aiohttp.ClientSession, gateway: TestServer, build_id: str) -> None:
    """Someone follows the build now (the process under test, as nothing else watches it)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        async with session.get(gateway.make_url("/api/v1/watched")) as response:
            builds = (await response.json())["builds"]
        if any(b.get("buildId") == build_id and b.get("viewers", 0) > 0 for b in builds):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"nobody followed {build_id} within 15 s")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- wait

REFS = ["orders/date=2026-11-27", "refunds/date=2026-11-27", "totals/date=2026-11-27"]


@pytest.mark.parametrize(
    ("outcome", "status", "line"),
    [
        ("finish", 0, "BuildRequestCompleted"),
        ("fail", 1, "BuildRequestFailed"),
        ("cancel", 2, "BuildRequestCancelled"),
    ],
)
async def test_wait_blocks_until_the_build_ends_and_exits_with_its_outcome(
    outcome: str,
    status: int,
    line: str,
    sim: Simulator,
    gateway: TestServer,
    session: aiohttp.ClientSession,
) -> None:
    build_id = sim.create_build(REFS, fail=REFS[1:2] if outcome == "fail" else ())
    async with buildcast("wait", build_id, "--gateway", base(gateway)) as cli:
        await viewed(session, gateway, build_id)
        sim.advance(build_id, 3)
        await asyncio.sleep(0.5)
        assert cli.running, "wait returned before the build ended"
        (sim.cancel if outcome == "cancel" else sim.finish)(build_id)
        code, out, errors = await cli.finish()
    assert code == status, errors
    assert out == [f"{build_id} {line}"]


async def test_wait_gives_up_with_3_after_its_timeout(sim: Simulator, gateway: TestServer) -> None:
    build_id = sim.create_build(2)
    started = time.monotonic()
    options = {"BUILDCAST_GATEWAY": base(gateway), "BUILDCAST_TIMEOUT": "1"}  # as env, this time
    async with buildcast("wait", build_id, env=options) as cli:
        code, out, errors = await cli.finish()
    assert code == 3, errors
    assert 1 <= time.monotonic() - started < 15
    assert f"gave up after 1 s; {build_id} is BuildRequestReceived" in errors
    assert out == []


async def test_wait_exits_4_for_an_unknown_build_or_a_server_that_is_no_gateway(
    sim: Simulator, gateway: TestServer, upstream: TestServer
) -> None:
    build_id = sim.create_build(2)
    cases = [
        ("br-unknown", base(gateway), "br-unknown: not found"),
        ("bad id", base(gateway), "is not a build id"),
        (build_id, base(upstream), "is not a Buildcast gateway"),  # the simulator's own URL
    ]
    for build, url, says in cases:
        async with buildcast("wait", build, "--gateway", url, "--timeout", "10") as cli:
            code, out, errors = await cli.finish()
        assert (code, out) == (4, []), (build, url, errors)
        assert says in errors and len(errors.strip().splitlines()) == 1, errors


async def test_wait_retries_an_unreachable_gateway_until_its_timeout() -> None:
    gateway = f"http://127.0.0.1:{closed_port()}"
    async with buildcast("wait", "br-1", "--gateway", gateway, "--timeout", "2") as cli:
        code, out, errors = await cli.finish()
    assert (code, out) == (3, []), errors
    lines = errors.strip().splitlines()
    assert lines[0].startswith(f"buildcast wait: gateway {gateway} unreachable")
    assert lines[0].endswith("retrying")
    assert lines[1] == "buildcast wait: gave up after 2 s; the gateway never answered"
    assert len(lines) == 2  # one line per outage, not one per attempt


async def test_wait_for_a_partition(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    url = base(gateway)
    refs = [f"p/n={n}" for n in range(6)]

    available = sim.create_build(refs)
    async with buildcast("wait", available, "--gateway", url, "--partition", refs[0]) as cli:
        await viewed(session, gateway, available)
        driver = asyncio.create_task(drive(sim, available, every=0.3))
        code, out, errors = await cli.finish()
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver
    assert code == 0, errors
    assert out[0].startswith(f"{refs[0]} PartitionAvailable")

    failing = sim.create_build(["q/1", "q/2"], fail=["q/1"])
    sim.finish(failing)
    async with buildcast("wait", failing, "--gateway", url, "--partition", "q/1") as cli:
        code, out, errors = await cli.finish()
    assert (code, out) == (1, [f"q/1 PartitionFailed ({failing} BuildRequestFailed)"]), errors

    cancelled = sim.create_build(["r/1"])
    async with buildcast("wait", cancelled, "--gateway", url, "--partition", "r/1") as cli:
        await viewed(session, gateway, cancelled)
        sim.cancel(cancelled)
        code, out, errors = await cli.finish()
    assert code == 2, errors

    async with buildcast("wait", cancelled, "--gateway", url, "--partition", "s/1") as cli:
        code, out, errors = await cli.finish()
    assert code == 4 and f"{cancelled} did not request partition s/1" in errors


# --- tail


async def test_tail_json_prints_each_message_as_it_happens(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(3, fail=[])
    async with buildcast("tail", build_id, "--gateway", base(gateway), "--json") as cli:
        first = json.loads(await cli.line())
        assert first["type"] == "snapshot" and first["buildStatus"] == "BuildRequestReceived"
        sim.advance(build_id)
        second = json.loads(await cli.line())  # the build goes on: this line came as it happened
        assert second["type"] == "delta" and second["buildStatus"] == "BuildRequestPlanning"
        assert cli.running
        await drive(sim, build_id)
        code, rest, errors = await cli.finish()  # the build ended: so does tail
    assert code == 0, errors
    messages = [first, second, *(json.loads(line) for line in rest)]
    view = first["view"]
    for message in messages[1:]:
        assert message["type"] == "delta" and message["seq"] == view["seq"] + 1
        view = apply(view, message["seq"], message["changes"])
        assert message["buildStatus"] == view["status"]
    assert view == await gateway_view(session, gateway, build_id)
    assert messages[-1]["buildStatus"] == "BuildRequestCompleted"


async def test_tail_says_what_changed_in_words(sim: Simulator, gateway: TestServer) -> None:
    refs = ["words/a", "words/b"]
    build_id = sim.create_build(refs, fail=["words/b"], log_lines=1)
    async with buildcast("tail", build_id, "--gateway", base(gateway)) as cli:
        summary = await cli.line()
        sim.finish(build_id)
        code, lines, errors = await cli.finish()
    assert code == 0, errors
    assert f"{build_id} Received  2 partitions: 2 Requested  1 events" in summary
    text = "\n".join(lines)
    assert "status: Received -> Failed" in text
    assert "words/a: Requested -> Available" in text
    assert "words/b: Requested -> Failed" in text
    assert "JobEvent  Job failed  //jobs:" in text
    assert "\x1b" not in text  # no colours into a pipe


async def test_tail_reports_an_outage_once_and_resumes(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(retry_ms=200)
    proxy = await Proxy().start(gateway)
    build_id = sim.create_build(3)
    try:
        async with buildcast("tail", build_id, "--gateway", proxy.url, "--json") as cli:
            assert json.loads(await cli.line())["type"] == "snapshot"
            await proxy.stop()
            gone = await cli.error_line()
            assert gone == f"buildcast tail: gateway {proxy.url} " + gone.split(" ", 4)[4]
            assert " unreachable " in gone and gone.endswith(", retrying")
            for _ in range(2):  # two steps, each published, missed while away
                await advanced(sim, session, gateway, build_id)
            await proxy.start()
            assert await cli.error_line() == f"buildcast tail: gateway {proxy.url} reachable again"
            resumed = [json.loads(await cli.line()) for _ in range(2)]
            assert [m["type"] for m in resumed] == ["delta", "delta"]  # resumed: no snapshot
            sim.finish(build_id)
            code, _, errors = await cli.finish()
    finally:
        await proxy.stop()
    assert code == 0, errors
    assert len(errors.strip().splitlines()) == 2


async def test_tail_exits_4_for_an_unknown_build(gateway: TestServer) -> None:
    async with buildcast("tail", "br-unknown", "--gateway", base(gateway)) as cli:
        code, out, errors = await cli.finish()
    assert (code, out) == (4, [])
    assert (
        errors.strip()
        == "buildcast tail: br-unknown: not found (no build request br-unknown upstream)"
    )


async def test_ctrl_c_ends_tail_quietly_with_130(sim: Simulator, gateway: TestServer) -> None:
    build_id = sim.create_build(2)
    async with buildcast("tail", build_id, "--gateway", base(gateway)) as cli:
        await cli.line()
        cli.process.send_signal(signal.SIGINT)
        code, _, errors = await cli.finish()
    assert (code, errors.strip()) == (130, "")


def test_tail_colours_statuses_on_a_terminal_and_never_passes_escapes_through() -> None:
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    out = Terminal()
    show = _Tail(out, json_lines=False, colour=True)  # type: ignore[arg-type]
    before = a_view("b", 1)
    event = {
        "eventId": "e1",
        "timestampMs": 2,
        "eventType": "Event",
        "message": "done \x1b]0;owned\x07 \x1b[2J",
    }
    after = before | {
        "seq": 2,
        "status": "BuildRequestCompleted",
        "partitions": {"p/1": {"status": "PartitionAvailable", "updatedAtMs": 2}},
        "events": [event],
    }
    changes = {k: after[k] for k in ("status", "partitions")} | {"events": [event]}
    show(Update("b", "delta", after, changes, before, {}, None))
    assert "\x1b[32mAvailable\x1b[0m" in out.text and "\x1b[32mCompleted\x1b[0m" in out.text
    assert "\x1b]" not in out.text and "\x1b[2J" not in out.text
    assert "\\x1b]0;owned\\x07" in out.text
