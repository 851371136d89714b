"""Several gateway replicas on one Redis, end to end: real processes, real sockets.

The protocol's guarantees that only show with more than one replica: one poller
per build for the whole deployment, and nothing lost (every delta in order, or a
fresh snapshot) across a replica's death or a Redis restart. The simulator ticks
every build every 0.3 s, so builds move on their own while the tests watch.
Measured figures (upstream requests, takeover and recovery times) go to
tests/artifacts/replicas.json; the assertions bound only what a user would notice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import redis

from tests.helpers.procs import LiveViewer, Proc, Procs, ended, wait_all
from tests.helpers.redis_servers import RedisCluster, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ARTIFACT = Path(__file__).parent / "artifacts" / "replicas.json"
REPLICAS = 3
TICK = 0.3  # the simulator's step: how often a running build changes
GRACE = 1.0
LEASE_TTL = 1.0
GATEWAY_OPTIONS = (
    "--poll-active", "0.1",
    "--poll-idle", "0.3",
    "--grace", str(GRACE),
    "--lease-ttl", str(LEASE_TTL),
)  # fmt: skip
SHORT = {"partitions": 6, "log_lines": 3}  # runs to its end in about 4 s
LONG = {"partitions": 60, "log_lines": 5}  # would run about 40 s: the tests finish it early


@dataclass
class Deployment:
    """A simulator and three gateways on one Redis, and the viewers a test opened on them."""

    sim: Proc
    gateways: list[Proc]
    session: aiohttp.ClientSession
    redis_url: str
    viewers: list[LiveViewer] = field(default_factory=list)

    async def _control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.sim.url + path, json=body) as response:
            assert response.status < 300, await response.text()
            return None if response.status == 204 else await response.json()

    async def create_build(self, spec: dict[str, int]) -> str:
        build_id: str = (await self._control("POST", "/_sim/builds", spec))["build_request_id"]
        return build_id

    async def finish(self, build_id: str) -> None:
        await self._control("POST", f"/_sim/builds/{build_id}/finish")

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._control("GET", "/_sim/stats")
        return stats

    async def reset_stats(self) -> None:
        await self._control("POST", "/_sim/stats/reset")

    def follow(self, build_id: str, replica: int, name: str) -> LiveViewer:
        """A viewer on `replica`; should that replica die, it moves on to the next one."""
        order = self.gateways[replica:] + self.gateways[:replica]
        viewer = LiveViewer(self.session, [g.url for g in order], build_id, name=name)
        self.viewers.append(viewer.start())
        return viewer

    async def rest_view(self, gateway: Proc, build_id: str) -> dict[str, Any]:
        async with self.session.get(f"{gateway.url}/api/v1/builds/{build_id}") as response:
            assert response.status == 200, f"{gateway.name}: {await response.text()}"
            view: dict[str, Any] = await response.json()
            return view

    async def converged(
        self, build_id: str, viewers: Sequence[LiveViewer], timeout: float = 20
    ) -> dict[str, Any]:
        """The build's final view, once every live replica's REST answer and every viewer's
        applied stream agree on it (bounded wait), checked against the upstream's own state."""
        alive = [g for g in self.gateways if g.alive]
        deadline = time.monotonic() + timeout
        while True:
            rests = [await self.rest_view(g, build_id) for g in alive]
            final = rests[0]
            if (
                ended(final)
                and all(rest == final for rest in rests)
                and all(viewer.view == final for viewer in viewers)
            ):
                break
            if time.monotonic() > deadline:
                lines = [f"{g.name}: {_brief(rest)}" for g, rest in zip(alive, rests, strict=True)]
                lines += [
                    f"{v.name}: {_brief(v.view)} differs in {_differing(v.view, final)}; "
                    f"{v.summary()}"
                    for v in viewers
                    if v.view != final
                ]
                raise AssertionError("no agreement on the final view:\n" + "\n".join(lines))
            await asyncio.sleep(0.2)
        await self.check_against_upstream(build_id, final)
        return final

    async def check_against_upstream(self, build_id: str, view: dict[str, Any]) -> None:
        async with self.session.get(f"{self.sim.url}/api/v1/builds/{build_id}") as response:
            upstream = await response.json()
        assert view["status"] == upstream["status"]
        assert [e["eventId"] for e in view["events"]] == [e["event_id"] for e in upstream["events"]]
        for ref, partition in view["partitions"].items():
            url = f"{self.sim.url}/api/v1/partitions/{quote(ref, safe='')}/status"
            async with self.session.get(url) as response:
                assert partition["status"] == (await response.json())["status"], ref
        assert view["stale"] is False

    async def close(self) -> None:
        for viewer in self.viewers:
            await viewer.stop()


Deploy = Callable[[str], Awaitable[Deployment]]


@pytest.fixture
async def deploy(procs: Procs, session: aiohttp.ClientSession) -> AsyncIterator[Deploy]:
    """Starts the simulator and three gateways on a Redis URL (all four start at once)."""
    deployments: list[Deployment] = []

    async def start(redis_url: str) -> Deployment:
        sim = procs.simulate("--tick", str(TICK), "--keep-active", "0")
        gateways = [
            procs.serve(
                sim.url, "--redis", redis_url, *GATEWAY_OPTIONS, name=f"gateway{n}", wait=False
            )
            for n in range(REPLICAS)
        ]
        for gateway in gateways:
            gateway.wait_ready()
        deployment = Deployment(sim, gateways, session, redis_url)
        deployments.append(deployment)
        return deployment

    yield start
    for deployment in deployments:
        await deployment.close()


def record(section: str, figures: dict[str, Any]) -> None:
    """Merge one test's figures into the artifact (each test owns one section)."""
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    try:
        recorded = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded[section] = figures
    ARTIFACT.write_text(json.dumps(recorded, indent=2) + "\n")


def leases(deployment: Deployment) -> list[tuple[str, str, list[Proc]]]:
    """Each `*lease*` key, its value, and the gateways whose PID the value mentions.

    The key and value formats belong to the bus and are not asserted: this reads one
    Redis (not a cluster) for the artifact, and to aim a kill at the poller's replica.
    """
    client = redis.Redis.from_url(deployment.redis_url, socket_timeout=2)
    try:
        found = []
        for key in client.scan_iter(match="*lease*", count=1000):
            value = (client.get(key) or b"").decode(errors="replace")
            named = [g for g in deployment.gateways if f":{g.pid}:" in f":{value}:"]
            found.append((key.decode(errors="replace"), value, named))
        return found
    finally:
        client.close()


def lease_holders(deployment: Deployment) -> dict[str, str]:
    return {
        key: f"{value} ({', '.join(g.name for g in named) or '?'})"
        for key, value, named in leases(deployment)
    }


def lease_holder(deployment: Deployment, build_id: str) -> Proc | None:
    """The live gateway holding the build's lease, when the holder can be recognised."""
    for key, _, named in leases(deployment):
        if build_id in key and len(named) == 1 and named[0].alive:
            return named[0]
    return None


def assert_in_order(viewers: Sequence[LiveViewer]) -> None:
    """Every delta followed its predecessor, and nothing went back within an epoch."""
    broken = {v.name: v.problems for v in viewers if v.problems}
    assert not broken, broken


# --- one poller per build


async def watch_to_the_end(
    deployment: Deployment, per_replica: Sequence[int], label: str
) -> dict[str, Any]:
    """Upstream requests while viewers (`per_replica[n]` on replica n) follow a fresh build
    from its creation to its end, counted until every viewer has seen the end."""
    await deployment.reset_stats()
    build_id = await deployment.create_build(SHORT)
    started = time.monotonic()
    viewers = [
        deployment.follow(build_id, replica, f"{label} r{replica}.{n}")
        for replica, count in enumerate(per_replica)
        for n in range(count)
    ]
    await wait_all(viewers, lambda v: ended(v.view), 30, "at the build's end")
    took = time.monotonic() - started
    stats = await deployment.stats()
    final = await deployment.converged(build_id, viewers)
    assert_in_order(viewers)
    assert all(len(v.epochs) == 1 and len(v.snapshots) == 1 for v in viewers), [
        v.summary() for v in viewers
    ]
    for viewer in viewers:
        await viewer.stop()
    return {
        "viewers": len(viewers),
        "build_requests": stats["builds"].get(build_id, 0),
        "partition_status_requests": stats["endpoints"]["partition_status"],
        "total_requests": stats["total"],
        "most_build_requests_at_once": stats["max_concurrent"].get(build_id, 0),
        "seconds_to_the_end": round(took, 2),
        "final_seq": final["seq"],
    }


async def costs(deployment: Deployment, many: Sequence[int]) -> dict[str, Any]:
    """The one-viewer and the many-viewer cost of two builds of the same shape and pace."""
    one = await watch_to_the_end(deployment, (1, 0, 0), "one")
    await asyncio.sleep(GRACE + 1)  # the first build's poller stops: it must not count twice
    crowd = await watch_to_the_end(deployment, many, "crowd")
    return {
        "one": one,
        "crowd": crowd,
        "crowd/one build requests": round(
            crowd["build_requests"] / max(one["build_requests"], 1), 2
        ),
        "independent pollers would cost about": REPLICAS * one["build_requests"],
    }


def assert_same_cost(figures: dict[str, Any]) -> None:
    one, crowd = figures["one"], figures["crowd"]
    # Same build shape, same pace: only timing noise may differ; a poller per replica
    # would triple it.
    assert crowd["build_requests"] <= one["build_requests"] * 1.5 + 5, figures
    assert crowd["total_requests"] <= one["total_requests"] * 1.5 + 10, figures


async def test_thirty_viewers_on_three_replicas_cost_the_upstream_what_one_viewer_costs(
    redis_server: RedisServer, deploy: Deploy
) -> None:
    deployment = await deploy(redis_server.url)
    figures = await costs(deployment, (10, 10, 10))
    figures["lease keys at the end"] = lease_holders(deployment)
    record("one poller for thirty viewers on three replicas", figures)
    assert_same_cost(figures)


# --- a replica's death


async def kill_and_measure(
    deployment: Deployment, victim: Proc, viewers: Sequence[LiveViewer]
) -> dict[str, Any]:
    """SIGKILL `victim`; the figures of how the others carried on."""
    survivors = [v for v in viewers if v.gateway != victim.url]
    moved = [v for v in viewers if v.gateway == victim.url]
    seq_at_kill = max(v.seq for v in viewers)
    killed_at = time.monotonic()
    victim.kill()
    await wait_all(survivors, lambda v: len(v.deltas(after=killed_at)) >= 3, 20, "fed again")
    target = max(v.seq for v in survivors)
    await wait_all(moved, lambda v: v.gateway != victim.url and v.seq >= target, 20, "moved on")
    firsts = [v.deltas(after=killed_at)[0].at - killed_at for v in survivors]
    # Per survivor: from its last delta before the kill to its first one after.
    silences = [
        v.deltas(after=killed_at)[0].at - max(d.at for d in v.deltas() if d.at <= killed_at)
        for v in survivors
    ]
    usual = [
        b.at - a.at
        for v in survivors
        for a, b in itertools.pairwise(v.deltas())
        if b.at <= killed_at
    ]
    return {
        "victim": victim.name,
        "seq_at_kill": seq_at_kill,
        "first_delta_at_a_survivor_after_s": round(min(firsts), 3),
        "every_survivor_fed_again_after_s": round(max(firsts), 3),
        "longest_silence_across_the_kill_s": round(max(silences), 3),
        "usual_time_between_deltas_s": round(statistics.median(usual), 3) if usual else None,
        "viewers_moved_to_another_replica": len(moved),
        "moved_viewers_caught_up_after_s": round(time.monotonic() - killed_at, 3),
        "snapshots_after_the_kill": sum(
            1 for v in viewers for s in v.snapshots if s.at > killed_at
        ),
    }


async def test_killing_the_replica_that_polls_hands_the_build_over_without_a_gap(
    redis_server: RedisServer, deploy: Deploy
) -> None:
    deployment = await deploy(redis_server.url)
    build_id = await deployment.create_build(LONG)
    # The first viewer's replica starts the poller, so it holds the lease.
    first = deployment.follow(build_id, 0, "first r0")
    await first.wait_until(lambda v: v.view is not None, 20, "given a first view")
    viewers = [first] + [
        deployment.follow(build_id, replica, f"r{replica}.{n}")
        for replica in range(REPLICAS)
        for n in range(3)
    ]
    started = time.monotonic()
    await wait_all(viewers, lambda v: len(v.deltas(after=started)) >= 2, 20, "fed")
    figures: dict[str, Any] = {"lease keys before": lease_holders(deployment), "kills": []}
    for _ in range(REPLICAS - 1):
        # The poller's replica dies each time; by elimination when the lease is unreadable.
        holder = lease_holder(deployment, build_id)
        victim = holder or next(g for g in deployment.gateways if g.alive)
        kill = await kill_and_measure(deployment, victim, viewers)
        figures["kills"].append({**kill, "victim_held_the_lease": holder is not None})
    figures["lease keys after"] = lease_holders(deployment)
    await deployment.finish(build_id)
    final = await deployment.converged(build_id, viewers)
    figures["final_seq"] = final["seq"]
    figures["snapshots per viewer"] = {v.name: len(v.snapshots) for v in viewers}
    record("a killed replica's build taken over", figures)

    assert_in_order(viewers)
    assert all(v.epochs == first.epochs for v in viewers), {v.name: v.epochs for v in viewers}
    # The replica that lived through both deaths never broke its viewers' streams.
    last = next(g for g in deployment.gateways if g.alive)
    on_last = [v for v in viewers if v.first_gateway == last.url]
    assert all(len(v.snapshots) == 1 and not v.failures for v in on_last), [
        v.summary() for v in on_last
    ]


# --- a Redis restart


async def follow_through_a_redis_restart(
    redis_server: RedisServer, deploy: Deploy, empty: bool, down: float = 0.0
) -> tuple[list[LiveViewer], dict[str, Any]]:
    deployment = await deploy(redis_server.url)
    build_id = await deployment.create_build(LONG)
    viewers = [
        deployment.follow(build_id, replica, f"r{replica}.{n}")
        for replica in range(REPLICAS)
        for n in range(2)
    ]
    started = time.monotonic()
    await wait_all(viewers, lambda v: len(v.deltas(after=started)) >= 2, 20, "fed")
    seq_before = max(v.seq for v in viewers)
    down_at = time.monotonic()
    await asyncio.to_thread(redis_server.restart, empty, down)
    back_at = time.monotonic()
    await wait_all(viewers, lambda v: len(v.deltas(after=back_at)) >= 2, 25, "fed after Redis")
    firsts = [v.deltas(after=back_at)[0].at - back_at for v in viewers]
    await deployment.finish(build_id)
    final = await deployment.converged(build_id, viewers)
    figures = {
        "redis_down_s": round(back_at - down_at, 3),
        "seq_before_the_restart": seq_before,
        "first_delta_after_redis_came_back_s": {
            v.name: round(first, 3) for v, first in zip(viewers, firsts, strict=True)
        },
        "final_seq": final["seq"],
        "epochs per viewer": {v.name: v.epochs for v in viewers},
        "snapshots per viewer": {v.name: len(v.snapshots) for v in viewers},
        "resyncs per viewer": {v.name: v.resyncs for v in viewers},
        "error codes seen": sorted({str(e.get("code")) for v in viewers for e in v.errors}),
        "connections per viewer": {v.name: v.connects for v in viewers},
    }
    return viewers, figures


@pytest.mark.parametrize(
    "down", [0.0, 2 * LEASE_TTL + 0.5], ids=["at once", "after every lease lapsed"]
)
async def test_a_redis_restart_loses_nothing(
    redis_server: RedisServer, deploy: Deploy, down: float
) -> None:
    viewers, figures = await follow_through_a_redis_restart(redis_server, deploy, False, down)
    record(f"redis restarted with its data, down {down} s", figures)
    assert_in_order(viewers)


async def test_a_blank_redis_starts_a_new_epoch_that_every_viewer_joins(
    redis_server: RedisServer, deploy: Deploy
) -> None:
    viewers, figures = await follow_through_a_redis_restart(redis_server, deploy, empty=True)
    record("redis restarted empty", figures)
    assert_in_order(viewers)
    # Redis forgot the positions: resuming in the old epoch would be a silent gap.
    assert all(len(v.epochs) >= 2 for v in viewers), figures["epochs per viewer"]
    assert len({v.epochs[-1] for v in viewers}) == 1, figures["epochs per viewer"]


# --- Redis Cluster


async def test_replicas_on_a_redis_cluster_share_one_poller(
    redis_cluster: RedisCluster, deploy: Deploy
) -> None:
    deployment = await deploy(redis_cluster.url)
    figures = await costs(deployment, (3, 3, 3))
    record("redis cluster of three masters", figures)
    assert_same_cost(figures)


def _brief(view: dict[str, Any] | None) -> str:
    if view is None:
        return "no view"
    return f"seq {view.get('seq')} {view.get('status')} {len(view.get('events', []))} events"


def _differing(view: dict[str, Any] | None, other: dict[str, Any]) -> list[str]:
    if view is None:
        return ["everything"]
    return sorted(k for k in view.keys() | other.keys() if view.get(k) != other.get(k))
