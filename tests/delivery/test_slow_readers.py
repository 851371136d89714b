"""Clients that stop reading are cut off and reset: no kernel socket keeps their unsent data.

A graceful close would queue a FIN behind everything the client never read:
the kernel would then hold each socket in FIN-WAIT-1 with its buffer, long
after the gateway gave up on it. Read from /proc/net/tcp, as `ss` would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.protocol import codec, messages
from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.attack import stalled_client
from tests.helpers.gateways import ARTIFACTS, StartGateway, eventually

CLIENTS = 100
FIN_WAIT1 = "04"


def server_sockets(port: int) -> list[tuple[str, int]]:
    """(state, bytes unsent) of every TCP socket whose local port is `port`, but the listener."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == port and state != "0A":  # 0A: LISTEN
                found.append((state, int(queues.split(":")[0], 16)))
    return found


def rss_kb() -> int:
    """This process's resident memory now (not its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_clients_that_stop_reading_are_reset_and_leave_no_buffers(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession
) -> None:
    gateway: TestServer = await start_gateway(
        poll_active=600.0, subscriber_buffer=4, max_connections_per_client=CLIENTS + 10
    )
    state = gateway.app[STATE]
    build_id = sim.create_build(2)
    async with session.get(gateway.make_url(f"/api/v1/builds/{build_id}")) as response:
        view = await response.json()
    rss_before = rss_kb()
    port = int(gateway.port or 0)
    clients = [stalled_client(port, f"/api/v1/builds/{build_id}/stream") for _ in range(CLIENTS)]
    try:
        await eventually(
            lambda: asyncio.sleep(0, state.fanout.viewers(build_id)),
            lambda viewers: viewers == CLIENTS,
            what="every client attached",
        )
        latest = await state.bus.latest(build_id)
        assert latest is not None
        epoch, seq = latest.epoch, latest.seq
        for _ in range(64):  # 64 deltas of 64 KiB: 4 MiB each client never reads
            seq += 1
            changes = {"message": "x" * 65536}
            view = {**view, **changes, "seq": seq}
            assert await state.bus.publish(messages.delta(build_id, epoch, seq, changes), view)
            await asyncio.sleep(0.01)
        await eventually(
            lambda: asyncio.sleep(0, state.fanout.viewers(build_id)),
            lambda viewers: viewers == 0,
            what="every stalled client cut off",
        )
        await asyncio.sleep(0.2)
        left = server_sockets(port)
        rss_after = rss_kb()
    finally:
        for client in clients:
            client.close()
    assert not [s for s in left if s[0] == FIN_WAIT1], left
    assert sum(unsent for _, unsent in left) == 0, f"kernel buffers still held: {left}"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "slow_readers.json").write_text(
        json.dumps(
            {
                "clients": CLIENTS,
                "unread_bytes_each": 64 * 65536,
                "server_sockets_left": len(left),
                "bytes_unsent_left": sum(unsent for _, unsent in left),
                "rss_kb_before": rss_before,
                "rss_kb_after_cut_off": rss_after,
                "messages_cut_off": state.fanout.overflows,
            },
            indent=2,
        )
    )
    assert codec.loads(codec.dumps(view))  # the view stayed plain JSON throughout
