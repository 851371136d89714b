"""The Redis bus keeps a build's view as a base plus the deltas since, not once per delta.

Checked through what Redis holds (the build's state hash), on fakeredis and on a real
redis-server: a delta writes no view, the base is rewritten every `compact_every`
deltas (sooner when the deltas outweigh it or would outlive the history), and
`latest` and `history` read the same across every rewrite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.backends.redis.bus import RedisBus
from gateway.backends.redis.connection import RedisConnection, build_key
from gateway.protocol import codec, messages
from gateway.protocol.diff import apply
from gateway.protocol.messages import Message
from gateway.protocol.resume import Position
from gateway.protocol.view import summarize
from tests.helpers.backends import redis_connection

EPOCH = "e1"


@pytest.fixture(params=["fakeredis", pytest.param("redis-server", marks=pytest.mark.integration)])
async def connection(request: pytest.FixtureRequest) -> AsyncIterator[RedisConnection]:
    connection = await redis_connection(request)
    yield connection
    await connection.close()


def first_view(events: int) -> dict[str, Any]:
    return {
        "buildId": "b",
        "seq": 1,
        "status": "BuildRequestExecuting",
        "updatedAtMs": 1,
        "requestedPartitions": ["p", "q"],
        "partitions": {"p": {"status": None}, "q": {"status": None}},
        "events": [{"eventId": f"ev-{n}", "message": "x" * 40} for n in range(events)],
        "stale": False,
    }


def changes(seq: int, event_bytes: int = 10) -> dict[str, Any]:
    """The change of `seq`: a partition moves, an event comes."""
    status = "PartitionAvailable" if seq % 2 else "PartitionBuilding"
    return {
        "updatedAtMs": seq,
        "partitions": {"pq"[seq % 2]: {"status": status}},
        "events": [{"eventId": f"new-{seq}", "message": "y" * event_bytes}],
    }


class Run:
    """A snapshot then deltas published as a poller does, with every view kept to compare."""

    def __init__(self, bus: RedisBus, view: dict[str, Any]) -> None:
        self.bus = bus
        self.views = {1: view}
        self.sent: list[Message] = []

    async def start(self) -> None:
        snapshot = messages.snapshot("b", EPOCH, 1, self.views[1])
        assert await self.bus.publish(snapshot, self.views[1])
        self.sent.append(snapshot)

    async def delta(self, change: dict[str, Any] | None = None) -> int:
        seq = len(self.sent) + 1
        change = change or changes(seq)
        self.views[seq] = apply(self.views[seq - 1], seq, change)
        message = messages.delta("b", EPOCH, seq, change)
        assert await self.bus.publish(message, self.views[seq])
        self.sent.append(message)
        return seq


async def stored(connection: RedisConnection) -> dict[str, bytes]:
    state = await connection.commands.hgetall(build_key("b", "state"))
    return {key.decode(): value for key, value in state.items()}


async def assert_latest_is(bus: RedisBus, view: dict[str, Any]) -> None:
    latest = await bus.latest("b")
    assert latest is not None and latest.seq == view["seq"]
    assert latest.data == messages.snapshot("b", EPOCH, view["seq"], view).data


async def test_a_delta_logs_its_change_and_leaves_the_stored_view_alone(
    connection: RedisConnection,
) -> None:
    bus = RedisBus(connection, history=50, compact_every=10)
    run = Run(bus, first_view(events=100))
    await run.start()
    base = (await stored(connection))["base"]
    assert base == codec.dumps(run.views[1])
    for _ in range(9):
        seq = await run.delta()
        state = await stored(connection)
        assert (state["seq"], state["base_seq"], state["base"]) == (str(seq).encode(), b"1", base)
        await assert_latest_is(bus, run.views[seq])
    summaries = await bus.summaries(["b"])
    assert summaries == {"b": summarize(run.views[10])}, "lists of builds see every delta"


async def test_the_base_is_rewritten_every_k_deltas_and_reads_go_across_it(
    connection: RedisConnection,
) -> None:
    bus = RedisBus(connection, history=50, compact_every=10)
    run = Run(bus, first_view(events=100))
    await run.start()
    bases = []
    for _ in range(24):
        seq = await run.delta()
        state = await stored(connection)
        bases.append(int(state["base_seq"]))
        assert state["base"] == codec.dumps(run.views[bases[-1]])
        await assert_latest_is(bus, run.views[seq])
    assert sorted(set(bases)) == [1, 12, 23], "a delta more than 10 after the base rewrites it"
    assert await bus.history("b", Position(EPOCH, 5)) == run.sent[5:]


async def test_deltas_that_outweigh_the_base_rewrite_it(connection: RedisConnection) -> None:
    bus = RedisBus(connection, history=50, compact_every=50)
    run = Run(bus, first_view(events=20))
    await run.start()
    size = len((await stored(connection))["base"])
    await run.delta(changes(2, event_bytes=size // 4))
    await run.delta(changes(3, event_bytes=size // 4))
    assert (await stored(connection))["base_seq"] == b"1"
    seq = await run.delta(changes(4, event_bytes=size // 4))
    assert (await stored(connection))["base_seq"] == b"4", "the log grew past the base's size"
    await assert_latest_is(bus, run.views[seq])


async def test_the_base_never_falls_behind_the_history(connection: RedisConnection) -> None:
    bus = RedisBus(connection, history=5, compact_every=100)
    run = Run(bus, first_view(events=100))
    await run.start()
    for _ in range(11):
        seq = await run.delta()
        state = await stored(connection)
        assert seq - int(state["base_seq"]) <= 5, "every delta since the base is still logged"
        await assert_latest_is(bus, run.views[seq])


async def test_a_state_without_a_base_counts_as_none(connection: RedisConnection) -> None:
    """A state an older version wrote (its view, no base) is replaced, never a dead end."""
    bus = RedisBus(connection)
    run = Run(bus, first_view(events=3))
    await run.start()
    await connection.commands.hdel(build_key("b", "state"), "base", "base_seq")
    assert await bus.latest("b") is None
    fresh = messages.snapshot("b", "e2", 1, run.views[1])
    assert await bus.publish(fresh, run.views[1]), "a new sequence may start"
    latest = await bus.latest("b")
    assert latest is not None and latest.position == Position("e2", 1)
