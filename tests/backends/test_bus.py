"""The Bus contract of gateway/bus/base.py, run against every implementation.

The in-process bus, the Redis bus on fakeredis (fast, no server), on a real
redis-server and on a Redis Cluster of three masters (`integration`): one
suite, so they cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.backends.base import Bus
from gateway.backends.memory import MemoryBus
from gateway.backends.redis.bus import RedisBus
from gateway.protocol import codec, messages
from gateway.protocol.messages import Message
from gateway.protocol.resume import Position
from gateway.protocol.view import summarize
from tests.helpers.backends import IMPLEMENTATIONS, redis_connection
from tests.helpers.views import a_view

EPOCH = "e1"
HISTORY_BYTES = 8 * 1024  # a build's resume history, at most: in bytes, not only messages


@pytest.fixture(params=IMPLEMENTATIONS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    implementation: Bus
    if request.param == "memory":
        implementation = MemoryBus(history=5, history_bytes=HISTORY_BYTES)
        yield implementation
        await implementation.close()
        return
    connection = await redis_connection(request)
    implementation = RedisBus(connection, history=5, history_bytes=HISTORY_BYTES)
    yield implementation
    await implementation.close()
    await connection.close()


async def received(got: list[Message], count: int) -> list[Message]:
    """`got` once it holds `count` messages: a Redis bus delivers a moment after publish."""
    async with asyncio.timeout(5):
        while len(got) < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # and nothing more comes
    return got


async def publish_run(bus: Bus, build_id: str, count: int, epoch: str = EPOCH) -> list[Message]:
    """A snapshot then deltas, as a poller publishes them."""
    sent = [messages.snapshot(build_id, epoch, 1, a_view("b", 1))]
    sent += [
        messages.delta(build_id, epoch, seq, {"status": f"S{seq}"}) for seq in range(2, count + 1)
    ]
    for message in sent:
        assert await bus.publish(message, a_view("b", message.seq, f"S{message.seq}"))
    return sent


async def test_delivers_in_order_only_while_subscribed(bus: Bus) -> None:
    got: list[Message] = []
    await bus.start(got.append)
    await bus.subscribe("b")
    sent = await publish_run(bus, "b", 3)
    await publish_run(bus, "other", 2)
    await bus.unsubscribe("b")
    later = messages.delta("b", EPOCH, 4, {"status": "late"})
    assert await bus.publish(later, a_view("b", 4))
    await received(got, 3)
    assert [m.seq for m in got] == [1, 2, 3]
    assert got == sent


async def test_latest_is_a_snapshot_of_the_newest_view(bus: Bus) -> None:
    await bus.start(lambda m: None)
    assert await bus.latest("b") is None
    await publish_run(bus, "b", 3)
    latest = await bus.latest("b")
    assert latest is not None
    assert (latest.kind, latest.epoch, latest.seq) == (messages.Kind.SNAPSHOT, EPOCH, 3)
    assert codec.loads(latest.view_json)["status"] == "S3"


async def test_history_resumes_or_says_it_cannot(bus: Bus) -> None:
    await bus.start(lambda m: None)
    sent = await publish_run(bus, "b", 8)  # history keeps 5: seqs 4..8
    assert await bus.history("b", Position(EPOCH, 5)) == sent[5:]
    assert await bus.history("b", Position(EPOCH, 3)) == sent[3:]
    assert await bus.history("b", Position(EPOCH, 8)) == []
    assert await bus.history("b", Position(EPOCH, 2)) is None, "older than kept"
    assert await bus.history("b", Position(EPOCH, 9)) is None, "ahead of the build"
    assert await bus.history("b", Position("other", 5)) is None, "another epoch"
    assert await bus.history("nobody", Position(EPOCH, 0)) is None


async def test_publish_is_fenced_to_the_next_seq(bus: Bus) -> None:
    await bus.start(lambda m: None)
    await publish_run(bus, "b", 2)
    repeated = messages.delta("b", EPOCH, 2, {})
    assert not await bus.publish(repeated, a_view("b", 2)), "a repeated seq"
    assert not await bus.publish(messages.delta("b", EPOCH, 4, {}), a_view("b", 4)), "a skipped seq"
    assert not await bus.publish(messages.delta("b", "e2", 3, {}), a_view("b", 3)), (
        "a delta in a new epoch"
    )
    assert await bus.publish(messages.snapshot("b", EPOCH, 3, a_view("b", 3)), a_view("b", 3)), (
        "a snapshot in sequence"
    )
    assert not await bus.publish(messages.snapshot("b", "e2", 1, a_view("b", 1)), a_view("b", 1)), (
        "a second sequence over a stored one"
    )
    assert await bus.publish(messages.snapshot("fresh", "e2", 1, a_view("b", 1)), a_view("b", 1)), (
        "the first sequence of a build"
    )
    latest = await bus.latest("b")
    assert latest is not None and (latest.epoch, latest.seq) == (EPOCH, 3)


async def test_errors_are_delivered_but_not_kept(bus: Bus) -> None:
    got: list[Message] = []
    await bus.start(got.append)
    await bus.subscribe("b")
    await publish_run(bus, "b", 2)
    error = messages.error("b", Position(EPOCH, 2), "not_found", "gone")
    assert await bus.publish(error, None)
    await received(got, 3)
    assert got[-1] == error
    assert await bus.history("b", Position(EPOCH, 2)) == []


async def test_summaries_tell_lists_what_they_show_without_whole_views(bus: Bus) -> None:
    await bus.start(lambda m: None)
    await publish_run(bus, "b", 3)
    summaries = await bus.summaries(["b", "nobody"])
    assert summaries == {"b": summarize(a_view("b", 3, "S3"))}
    assert summaries["b"]["partitions"] == {"total": 1, "available": 0, "failed": 0}


async def test_history_is_bounded_in_bytes_and_resume_past_it_needs_a_snapshot(bus: Bus) -> None:
    await bus.start(lambda m: None)
    view = a_view("b", 1)
    assert await bus.publish(messages.snapshot("b", EPOCH, 1, view), view)
    for seq in range(2, 6):  # four deltas of 3 KiB: more than the history's 8 KiB
        changes = {"message": str(seq) * 3 * 1024}
        view = {**view, **changes, "seq": seq}
        assert await bus.publish(messages.delta("b", EPOCH, seq, changes), view)
    assert await bus.history("b", Position(EPOCH, 1)) is None, "that far back: a snapshot"
    recent = await bus.history("b", Position(EPOCH, 4))
    assert recent is not None and [m.seq for m in recent] == [5], "the newest are kept"
    latest = await bus.latest("b")
    assert latest is not None and codec.loads(latest.view_json)["message"] == "5" * 3 * 1024
