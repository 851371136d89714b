"""`serve --workers N`: N processes on one port, sharing builds through Redis like replicas."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from typing import Any

import aiohttp
import pytest

from gateway.protocol import codec
from tests.helpers.procs import BUILDCAST, ROOT, Proc, Procs
from tests.helpers.redis_servers import RedisServer
from tests.helpers.sse import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

WORKER = re.compile(r"\(worker (\d) of 2, pid (\d+)\)")
VIEWERS = 30


def test_workers_need_redis() -> None:
    command = [*BUILDCAST, "serve", "--upstream", "http://127.0.0.1:9", "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "buildcast serve: --workers needs --redis: each worker is a replica, "
        "and replicas share builds only through Redis"
    ]


async def worker_pids(gateway: Proc) -> set[int]:
    """The workers' PIDs, from the line each prints once it listens."""
    async with asyncio.timeout(30):
        while len(pids := {int(m[2]) for m in map(WORKER.search, gateway.stdout) if m}) < 2:
            await asyncio.sleep(0.05)
    return pids


def viewers_by_pid(redis_server: RedisServer, build_id: str) -> dict[int, int]:
    """What each replica (here: each worker) reported to the registry for the build."""
    client = redis_server.client()
    found: dict[int, int] = {}
    for name in client.zrange("bc:{replicas}", 0, -1):
        reported = client.get(f"bc:{{replicas}}:{name.decode()}")
        if reported is not None:
            found[int(name.decode().split(":")[1])] = codec.loads(reported).get(build_id, 0)
    return found


async def test_workers_share_one_port_and_one_poller(
    procs: Procs, redis_server: RedisServer
) -> None:
    sim = procs.simulate("--tick", "0.3")
    gateway = procs.serve(
        sim.url, "--redis", redis_server.url, "--workers", "2", "--poll-active", "0.2"
    )
    pids = await worker_pids(gateway)
    async with aiohttp.ClientSession() as session:

        async def control(method: str, path: str, body: Any = None) -> Any:
            async with session.request(method, sim.url + path, json=body) as response:
                assert response.status < 300, await response.text()
                return None if response.status == 204 else await response.json()

        build_id = (await control("POST", "/_sim/builds", {"partitions": 40, "log_lines": 3}))[
            "build_request_id"
        ]
        streams = [
            await session.get(f"{gateway.url}/api/v1/builds/{build_id}/stream")
            for _ in range(VIEWERS)
        ]
        try:
            for response in streams:
                first = await anext(events(response))
                assert first.event == "snapshot"
            async with asyncio.timeout(15):  # each worker reports its viewers every lease/3
                while sum((counts := viewers_by_pid(redis_server, build_id)).values()) < VIEWERS:
                    await asyncio.sleep(0.1)
            assert set(counts) == pids, "every worker is a replica of its own"
            assert all(counts[pid] > 0 for pid in pids), f"the kernel spread them: {counts}"

            await control("POST", "/_sim/stats/reset")
            await asyncio.sleep(3)
            stats = await control("GET", "/_sim/stats")
            assert stats["max_concurrent"].get(build_id, 0) == 1, "one poller among the workers"
            assert stats["builds"][build_id] <= 3 / 0.2 + 3
        finally:
            for response in streams:
                response.close()

    gateway.signal(signal.SIGTERM)
    assert gateway.process.wait(timeout=20) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the parent stopped its workers: none is left behind
