"""When the upstream is asked, in fake time: the seed's cadence, grace, backoff, no overlap.

Every test runs the real watches and pollers against the simulator behind an
httpx transport, on an event loop whose clock jumps (tests/helpers/clock.py):
a minute of polling takes milliseconds and the counts are exact, whatever
the machine's load. The defaults are the product's own (2 s, 10 s, 30 s).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from gateway.ingest.watch import Watches
from gateway.simulator import Simulator
from tests.helpers.clock import in_fake_time, now
from tests.helpers.fake_upstream import FakeUpstream, replica


async def watched_for(watches: Watches, build_id: str, seconds: float) -> None:
    async with watches.watching(build_id):
        await asyncio.sleep(seconds)


def test_a_running_build_is_polled_every_2_s_and_an_ended_one_every_10_s() -> None:
    sim = Simulator(seed=1)
    running, ended = sim.create_build(2), sim.create_build(2)
    sim.finish(ended)
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with replica(upstream) as watches:
            await asyncio.gather(
                watched_for(watches, running, 59.0), watched_for(watches, ended, 59.0)
            )
            assert upstream.builds[running] == 30, "a poll every 2 s: at 0, 2, ... 58 s"
            assert upstream.builds[ended] == 6, "a poll every 10 s: at 0, 10, ... 50 s"

    in_fake_time(scenario)


def test_polling_goes_on_for_the_grace_period_then_stops() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(2)
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with replica(upstream) as watches:
            await watched_for(watches, build_id, 10.0)
            left = upstream.builds[build_id]
            await asyncio.sleep(29.0)
            assert upstream.builds[build_id] - left == 15, "a reload within 30 s costs nothing"
            await asyncio.sleep(31.0)
            stopped = upstream.builds[build_id]
            await asyncio.sleep(600.0)
            assert upstream.builds[build_id] == stopped, "nobody watches: no poll at all"
            assert watches.local_viewers() == {}, "and the build is no longer listed"

    in_fake_time(scenario)


def test_a_slow_upstream_never_gets_overlapping_polls() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(3)
    upstream = FakeUpstream(sim, delay=7.0)  # 3.5 times the poll interval

    async def scenario() -> None:
        async with replica(upstream, upstream_timeout=20.0) as watches:
            await asyncio.gather(*(watched_for(watches, build_id, 70.0) for _ in range(10)))
        assert upstream.max_in_flight[build_id] == 1, "ten viewers, one poll at a time"
        # Paced by the answers: at 0 s, then 14 s (the first look reads the partitions too,
        # 7 s more), then every 7 s up to 63 s.
        assert upstream.builds[build_id] == 9

    in_fake_time(scenario)


def test_polls_start_every_interval_however_long_a_poll_takes() -> None:
    """`--poll-active` is the time from one poll's start to the next: a slow upstream
    does not make a change wait its answer time on top of the interval."""
    sim = Simulator(seed=1)
    build_id = sim.create_build(2)
    starts: list[float] = []

    class Slow(FakeUpstream):
        async def answer(self, request: Any) -> Any:
            if "/builds/" in request.url.path:
                starts.append(now())
            return await super().answer(request)

    upstream = Slow(sim, delay=1.5)

    async def scenario() -> None:
        async with replica(upstream) as watches:
            await watched_for(watches, build_id, 30.0)

    in_fake_time(scenario)
    # From the second poll on: the first look also reads the partitions.
    gaps = {round(later - earlier, 6) for earlier, later in itertools.pairwise(starts[1:])}
    assert gaps == {2.0}, gaps


def test_partitions_are_read_for_the_first_view_then_about_once_a_minute() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(200)
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with replica(upstream) as watches, watches.watching(build_id):
            # A large build's first view comes from its events; its partitions are read next.
            await asyncio.sleep(1.0)
            assert upstream.endpoints["partition_status"] == 200, "all for the first view"
            await asyncio.sleep(60.0)  # nothing changes upstream: no event names a partition
        background = upstream.endpoints["partition_status"] - 200
        assert 190 <= background <= 210, f"{background}: each unfinished one about once a minute"

    in_fake_time(scenario)


def test_a_partition_is_read_when_a_new_event_names_it() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(50)
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with (
            replica(upstream, partition_refresh=3600.0) as watches,
            watches.watching(build_id),
        ):
            await asyncio.sleep(10.0)
            upstream.partitions_read.clear()
            seen = len(sim.build_json(build_id)["events"])
            sim.advance(build_id, 3)
            await asyncio.sleep(2.0)  # one poll
        named = set()
        for event in sim.build_json(build_id)["events"][seen:]:
            targets = (event.get("job") or {}).get("target_partitions", [])
            named |= {ref["str"] for ref in [event.get("partition_ref"), *targets] if ref}
        assert named, "the steps named partitions"
        assert set(upstream.partitions_read) == named, "those, and no other"

    in_fake_time(scenario)


def test_an_outage_backs_off_to_30_s_with_jitter_and_recovers_at_once() -> None:
    sim = Simulator(seed=1)
    build_id = sim.create_build(2)
    upstream = FakeUpstream(sim)

    async def scenario() -> None:
        async with replica(upstream) as watches, watches.watching(build_id) as watch:
            upstream.status = 503
            before = upstream.builds[build_id]
            await asyncio.sleep(300.0)
            tries = upstream.builds[build_id] - before
            # 4, 8, 16 s, then 30 s, each jittered to 50-100 %: 12 tries at the least, 24 at
            # the most; polling every 2 s would have made 150.
            assert 12 <= tries <= 24, tries
            assert watch.view is not None and watch.view["stale"], "the last good view, stale"
            upstream.status = None
            await asyncio.sleep(30.0)  # at most the longest backoff, then a poll
            assert not watch.view["stale"], "fresh again"

    in_fake_time(scenario)
