"""The mission: upstream load does not grow with the number of viewers."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.simulator import Simulator
from tests.helpers.gateways import ARTIFACTS, StartGateway, Upstream, drive, stream_url
from tests.helpers.sse import Viewer, ended

PARTITIONS = 6


async def watch_to_the_end(
    sim: Simulator,
    gateway: TestServer,
    session: aiohttp.ClientSession,
    control: Upstream,
    viewers: int,
) -> dict[str, int]:
    """Upstream requests while `viewers` follow one build from creation to its end."""
    build_id = sim.create_build(PARTITIONS)
    await control.reset()
    followers = [Viewer(session, stream_url(gateway, build_id)) for _ in range(viewers)]
    driver = asyncio.create_task(drive(sim, build_id, every=0.1))
    await asyncio.gather(*(f.follow(ended) for f in followers))
    await driver
    assert all(f.gaps == [] and f.view == followers[0].view for f in followers)
    stats = await control.stats()
    return {
        "build": stats["endpoints"]["build"],
        "partitions": stats["endpoints"]["partition_status"],
        "total": stats["total"],
    }


async def test_a_hundred_viewers_arriving_at_once_cost_one_first_look(
    sim: Simulator, start_gateway: StartGateway, session: aiohttp.ClientSession, control: Upstream
) -> None:
    gateway = await start_gateway(poll_active=60.0)  # one poll only: the count is exact
    build_id = sim.create_build(PARTITIONS)
    await control.reset()
    followers = [Viewer(session, stream_url(gateway, build_id)) for _ in range(100)]
    await asyncio.gather(*(f.follow(lambda view: True) for f in followers))
    stats = await control.stats()
    assert stats["endpoints"] == {"build": 1, "partition_status": PARTITIONS, "partition_events": 0}


async def test_a_hundred_viewers_cost_the_upstream_what_one_does(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession, control: Upstream
) -> None:
    one = await watch_to_the_end(sim, gateway, session, control, viewers=1)
    hundred = await watch_to_the_end(sim, gateway, session, control, viewers=100)
    # What the seed's page would have cost: every tab polls the build and each partition.
    seed = {n: n * hundred["build"] * (1 + PARTITIONS) for n in (1, 100)}
    ARTIFACTS.mkdir(exist_ok=True)
    figures = {"viewers=1": one, "viewers=100": hundred, "seed per-tab polling": seed}
    (ARTIFACTS / "upstream_requests.json").write_text(json.dumps(figures, indent=2))
    # Same build shape, same pace: only timing noise may differ, never a factor of viewers.
    assert hundred["total"] <= one["total"] * 2 + 10, figures
