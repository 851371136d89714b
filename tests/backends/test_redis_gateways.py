"""Replicas on a real redis-server, in one test process: one poller per build, handover,
Redis outages. (tests/test_replicas.py runs the same story with real `buildcast` processes.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.simulator import Simulator
from gateway.state import STATE
from tests.helpers.gateways import StartReplica, Upstream, drive, stream_url
from tests.helpers.redis_servers import RedisServer
from tests.helpers.sse import Viewer, ended, events

pytestmark = pytest.mark.integration


def polls(replica: TestServer, build_id: str) -> bool:
    return replica.app[STATE].watches.polls(build_id)


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def viewers_on(
    session: aiohttp.ClientSession, replicas: list[TestServer], build_id: str, each: int
) -> list[Viewer]:
    return [
        Viewer(session, stream_url(replica, build_id)) for replica in replicas for _ in range(each)
    ]


async def test_replicas_share_one_poller_and_every_viewer_converges(
    start_replica: StartReplica,
    sim: Simulator,
    session: aiohttp.ClientSession,
    control: Upstream,
) -> None:
    replicas = [await start_replica(), await start_replica(), await start_replica()]
    build_id = sim.create_build([f"p/{i}" for i in range(4)])
    await control.faults(delay=0.25)  # slower than a poll: two pollers would overlap
    viewers = viewers_on(session, replicas, build_id, each=4)
    follows = [asyncio.create_task(v.follow(ended, timeout=40)) for v in viewers]
    driving = asyncio.create_task(drive(sim, build_id, every=0.3))
    owners: set[int] = set()
    while not all(task.done() for task in follows):
        owners.update(i for i, replica in enumerate(replicas) if polls(replica, build_id))
        assert sum(polls(replica, build_id) for replica in replicas) <= 1
        await asyncio.sleep(0.05)
    await asyncio.gather(*follows, driving)
    stats = await control.stats()
    assert stats["max_concurrent"][build_id] == 1, "never two reads of the build at once"
    assert len(owners) == 1, "the lease never moved while its owner lived"
    async with session.get(replicas[2].make_url(f"/api/v1/builds/{build_id}")) as response:
        final = await response.json()
    for viewer in viewers:
        assert viewer.view == final
        assert not viewer.gaps


async def test_a_replica_that_shuts_down_hands_its_builds_over(
    start_replica: StartReplica, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    first = await start_replica()
    build_id = sim.create_build([f"p/{i}" for i in range(3)])
    owner_viewer = Viewer(session, stream_url(first, build_id))
    await owner_viewer.follow(lambda view: True)  # its replica polls: it came first
    second = await start_replica()
    viewer = Viewer(session, stream_url(second, build_id))
    following = asyncio.create_task(viewer.follow(ended, timeout=30))
    await until(lambda: viewer.view is not None)
    assert polls(first, build_id) and not polls(second, build_id)
    await first.close()  # SIGTERM's path: streams end, leases are released
    stopped = time.monotonic()
    await until(lambda: polls(second, build_id))
    handover = time.monotonic() - stopped
    await drive(sim, build_id)
    await following
    assert handover < 1.0, f"a released lease is taken at once, not after its ttl: {handover:.2f}"
    assert not viewer.gaps and len({epoch for epoch, _ in viewer.positions}) == 1
    assert [m.event for m in viewer.messages].count("snapshot") == 1, "no reset on handover"


async def test_a_build_gone_upstream_is_not_found_on_every_replica(
    start_replica: StartReplica, session: aiohttp.ClientSession
) -> None:
    replicas = [await start_replica(), await start_replica()]
    answers = await asyncio.gather(
        *(
            session.get(replica.make_url("/api/v1/builds/br-nowhere/stream"))
            for replica in replicas
            for _ in range(3)
        )
    )
    for response in answers:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
        response.release()


async def test_the_owner_keeps_polling_for_another_replicas_viewers(
    start_replica: StartReplica,
    sim: Simulator,
    session: aiohttp.ClientSession,
    control: Upstream,
) -> None:
    owner, other = await start_replica(), await start_replica()
    build_id = sim.create_build(["p/0", "p/1"])
    await Viewer(session, stream_url(owner, build_id)).follow(lambda view: True)
    viewer = Viewer(session, stream_url(other, build_id))
    following = asyncio.create_task(viewer.follow(lambda view: False, timeout=30))
    await until(lambda: viewer.view is not None)
    await asyncio.sleep(2.5)  # past the grace and the lease time of the owner's own viewer
    assert polls(owner, build_id), "still polled: a viewer on another replica watches"
    sim.advance(build_id)
    seq = viewer.view["seq"] if viewer.view else 0
    await until(lambda: viewer.view is not None and viewer.view["seq"] > seq)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    await until(lambda: not polls(owner, build_id), timeout=6)  # grace + lease time
    await control.reset()
    await asyncio.sleep(0.5)
    assert (await control.stats())["builds"].get(build_id, 0) == 0, "nobody watches: no polls"


@pytest.mark.parametrize("empty", [False, True], ids=["restart", "restart-empty"])
async def test_viewers_converge_across_a_redis_restart(
    start_replica: StartReplica,
    redis_server: RedisServer,
    sim: Simulator,
    session: aiohttp.ClientSession,
    empty: bool,
) -> None:
    replicas = [await start_replica(), await start_replica()]
    build_id = sim.create_build([f"p/{i}" for i in range(3)])
    viewers = viewers_on(session, replicas, build_id, each=2)
    follows = [asyncio.create_task(v.follow(ended, timeout=40, patient=True)) for v in viewers]
    await until(lambda: all(v.view is not None for v in viewers))
    sim.advance(build_id)
    redis_server.stop()
    await until(lambda: all(v.notices for v in viewers))  # told that updates paused
    async with session.get(replicas[0].make_url("/readyz")) as response:
        assert response.status == 503
    sim.advance(build_id)  # a change nobody can publish yet
    await asyncio.sleep(0.5)
    redis_server.restart(empty=empty)
    await drive(sim, build_id)
    try:
        await asyncio.gather(*follows)
    except TimeoutError:
        for v in viewers:
            print(
                "DBG",
                v.url,
                v.positions,
                v.notices,
                v.view and v.view["status"],
                v.view and v.view["seq"],
            )
        print("DBG sim", sim.build_json(build_id)["status"])
        raise
    async with session.get(replicas[1].make_url(f"/api/v1/builds/{build_id}")) as response:
        final = await response.json()
    async with session.get(replicas[0].make_url("/readyz")) as response:
        assert response.status == 200
    epochs = set()
    for viewer in viewers:
        assert viewer.view == final
        assert not viewer.gaps
        assert viewer.epochs_never_go_back()
        epochs |= {epoch for epoch, _ in viewer.positions}
    assert len(epochs) == (2 if empty else 1), "an empty Redis starts a new epoch, only then"


async def test_a_full_redis_refuses_writes_for_a_while_and_nothing_is_lost(
    start_replica: StartReplica,
    redis_server: RedisServer,
    sim: Simulator,
    session: aiohttp.ClientSession,
) -> None:
    replica = await start_replica()
    build_id = sim.create_build([f"p/{i}" for i in range(3)])
    viewer = Viewer(session, stream_url(replica, build_id))
    following = asyncio.create_task(viewer.follow(ended, timeout=30, patient=True))
    await until(lambda: viewer.view is not None)
    with redis_server.client() as admin:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", used // 2)  # full: every write is refused
        sim.advance(build_id)
        await asyncio.sleep(1.0)
        seq = viewer.view["seq"] if viewer.view else 0
        admin.config_set("maxmemory", 0)
    await drive(sim, build_id)
    await following
    assert polls(replica, build_id), "the poller survived the refused writes"
    assert viewer.view is not None and viewer.view["seq"] > seq and not viewer.gaps
    async with session.get(replica.make_url(f"/api/v1/builds/{build_id}")) as response:
        assert viewer.view == await response.json()


async def test_watched_lists_the_whole_deployment_with_summed_viewers(
    start_replica: StartReplica, sim: Simulator, session: aiohttp.ClientSession
) -> None:
    first, second = await start_replica(), await start_replica()
    shared, elsewhere = sim.create_build(["p/0", "p/1"]), sim.create_build(["q/0"])
    viewers = [
        Viewer(session, stream_url(first, shared)),
        Viewer(session, stream_url(second, shared)),
        Viewer(session, stream_url(second, shared)),
        Viewer(session, stream_url(second, elsewhere)),
    ]
    follows = [asyncio.create_task(v.follow(lambda view: False, timeout=30)) for v in viewers]
    await until(lambda: all(v.view is not None for v in viewers))

    async def listed(replica: TestServer) -> dict[str, dict[str, Any]]:
        async with session.get(replica.make_url("/api/v1/watched")) as response:
            return {b["buildId"]: b for b in (await response.json())["builds"]}

    async with asyncio.timeout(5):  # each replica reports every third of the lease time
        while {b: s["viewers"] for b, s in (await listed(first)).items()} != {
            shared: 3,
            elsewhere: 1,
        }:
            await asyncio.sleep(0.1)
    summary = (await listed(first))[elsewhere]
    assert summary["status"].startswith("BuildRequest")
    assert summary["partitions"] == {"total": 1, "available": 0, "failed": 0}
    for follow in follows:
        follow.cancel()
    await asyncio.gather(*follows, return_exceptions=True)
    await second.close()  # it leaves the sums at once, not after the lease time
    now = await listed(first)
    assert elsewhere not in now, "only the closed replica watched it"
    assert now[shared]["viewers"] == 0, "still polled here for its grace period"


async def test_the_poller_survives_the_upstream_and_redis_down_at_once(
    start_replica: StartReplica,
    redis_server: RedisServer,
    sim: Simulator,
    session: aiohttp.ClientSession,
    control: Upstream,
) -> None:
    replica = await start_replica()
    build_id = sim.create_build(["p/0", "p/1"])
    viewer = Viewer(session, stream_url(replica, build_id))
    following = asyncio.create_task(viewer.follow(ended, timeout=40, patient=True))
    await until(lambda: viewer.view is not None)
    redis_server.stop()
    await control.faults(status=503)  # the view turns stale while nobody can publish it
    await asyncio.sleep(1.0)
    redis_server.restart()
    await control.clear_faults()
    await drive(sim, build_id)
    await following
    assert polls(replica, build_id), "the poller outlived both outages"
    async with session.get(replica.make_url(f"/api/v1/builds/{build_id}")) as response:
        assert viewer.view == await response.json()


async def test_a_burst_of_viewers_all_get_their_snapshot(
    sim: Simulator, start_replica: StartReplica
) -> None:
    """More viewers at once than Redis connections in the pool wait for one, not fail."""
    replica = await start_replica()
    build_id = sim.create_build(4)
    connector = aiohttp.TCPConnector(limit=0)  # all at once: no client-side queue
    async with aiohttp.ClientSession(connector=connector) as session:

        async def first_message() -> str:
            async with session.get(stream_url(replica, build_id)) as response:
                if response.status != 200:
                    return f"{response.status} {await response.text()}"
                return (await anext(events(response))).event

        arrivals = await asyncio.gather(*(first_message() for _ in range(300)))
    assert arrivals == ["snapshot"] * 300, {a for a in arrivals if a != "snapshot"}
