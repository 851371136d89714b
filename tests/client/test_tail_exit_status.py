"""`buildcast tail --exit-status` (the build's end is the exit status, as `wait` says it) and
tail's colours: on a terminal (a pty), never into a pipe, with `NO_COLOR`, or with `--json`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal

import pytest
from aiohttp.test_utils import TestServer

from gateway.simulator import Simulator
from tests.client.test_tail_wait import BUILDCAST, base, buildcast

REFS = ["colours/a", "colours/b"]


@pytest.mark.parametrize(("outcome", "status"), [("finish", 0), ("fail", 1), ("cancel", 2)])
async def test_tail_exit_status_is_the_builds_outcome(
    outcome: str, status: int, sim: Simulator, gateway: TestServer
) -> None:
    build_id = sim.create_build(REFS, fail=REFS[1:] if outcome == "fail" else ())
    async with buildcast("tail", build_id, "--gateway", base(gateway), "--exit-status") as cli:
        await cli.line()  # the build as it is: tail goes on while it runs
        assert cli.running
        (sim.cancel if outcome == "cancel" else sim.finish)(build_id)
        code, lines, errors = await cli.finish()
    assert code == status, errors
    assert any("status: " in line for line in lines)  # it printed the end before exiting


async def test_without_exit_status_a_failed_build_still_exits_0(
    sim: Simulator, gateway: TestServer
) -> None:
    build_id = sim.create_build(REFS, fail=REFS[:1])
    sim.finish(build_id)
    async with buildcast("tail", build_id, "--gateway", base(gateway)) as cli:
        code, lines, errors = await cli.finish()
    assert code == 0, errors
    assert "Failed" in lines[0]


async def test_tail_exit_status_is_4_for_an_unknown_build(gateway: TestServer) -> None:
    async with buildcast("tail", "br-nowhere", "--gateway", base(gateway), "--exit-status") as cli:
        code, out, errors = await cli.finish()
    assert (code, out) == (4, [])
    assert "br-nowhere: not found" in errors


async def on_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """A buildcast process whose stdout is a terminal (a pty): its exit status and output."""
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        *BUILDCAST,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=slave,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TERM": "xterm-256color", **env},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read_all() -> None:
        with contextlib.suppress(OSError):  # EIO: the process closed the terminal
            while chunk := os.read(master, 65536):
                chunks.append(chunk)

    try:
        reading = asyncio.get_running_loop().run_in_executor(None, read_all)
        _, err = await asyncio.wait_for(process.communicate(), 20)
        await asyncio.wait_for(reading, 5)
    finally:
        if process.returncode is None:
            process.kill()  # by its PID
            await process.communicate()
        os.close(master)
    assert b"Traceback" not in err, err.decode()
    assert process.returncode is not None
    return process.returncode, b"".join(chunks).decode()


@pytest.mark.parametrize(
    ("args", "env", "coloured"),
    [
        ((), {}, True),
        ((), {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value turns it off
        ((), {"NO_COLOR": "1"}, False),
        (("--json",), {}, False),
    ],
    ids=["terminal", "empty-NO_COLOR", "NO_COLOR", "json"],
)
async def test_tail_colours_only_a_terminal_that_wants_them(
    args: tuple[str, ...],
    env: dict[str, str],
    coloured: bool,
    sim: Simulator,
    gateway: TestServer,
) -> None:
    build_id = sim.create_build(REFS, fail=REFS[1:])
    sim.finish(build_id)
    code, text = await on_terminal(
        "tail", build_id, "--gateway", base(gateway), "--exit-status", *args, env=env
    )
    assert code == 1
    assert "Failed" in text
    assert ("\x1b[31mFailed\x1b[0m" in text) is coloured
    assert ("\x1b[" in text) is coloured
