"""A client sees every delta in order, or a snapshot: never a duplicate, never a gap."""

from __future__ import annotations

from gateway.backends.memory import MemoryBus
from gateway.delivery.follow import Follower
from gateway.protocol import messages
from gateway.protocol.messages import Kind, Message
from gateway.protocol.resume import Position


async def run(bus: MemoryBus, count: int, epoch: str = "e") -> list[Message]:
    sent = [messages.snapshot("b", epoch, 1, {"seq": 1})]
    sent += [messages.delta("b", epoch, s, {"n": s}) for s in range(2, count + 1)]
    for message in sent:
        assert await bus.publish(message, {"seq": message.seq})
    return sent


async def test_resume_from_the_middle_gets_the_missed_deltas() -> None:
    bus = MemoryBus()
    sent = await run(bus, 6)
    follower = Follower(bus, "b")
    assert await follower.catch_up(Position("e", 3)) == sent[3:]
    assert follower.at == Position("e", 6)


async def test_unknown_or_expired_position_gets_a_snapshot() -> None:
    bus = MemoryBus(history=2)
    await run(bus, 6)
    for since in (None, Position("e", 1), Position("other", 3), Position("e", 99)):
        follower = Follower(bus, "b")
        [first] = await follower.catch_up(since)
        assert (first.kind, first.seq) == (Kind.SNAPSHOT, 6)


async def test_live_duplicates_are_dropped_and_gaps_repaired() -> None:
    bus = MemoryBus()
    sent = await run(bus, 3)
    follower = Follower(bus, "b")
    assert await follower.catch_up(Position("e", 2)) == sent[2:]
    later = [messages.delta("b", "e", s, {"n": s}) for s in range(4, 9)]
    for message in later:
        assert await bus.publish(message, {"seq": message.seq})
    # live: a duplicate (3), the next (4), then 7 (5 and 6 were lost on the way)
    out = await follower.admit([sent[2], later[0], later[3]])
    assert [m.seq for m in out] == [4, 5, 6, 7, 8]
    assert await follower.admit([later[4]]) == [], "8 came with the repair"


async def test_a_new_epoch_snapshot_replaces_the_old_sequence() -> None:
    bus = MemoryBus(max_builds=1)
    await run(bus, 3)
    follower = Follower(bus, "b")
    await follower.catch_up(None)
    other = messages.snapshot("other", "o", 1, {"seq": 1})
    assert await bus.publish(other, {"seq": 1}), "the bus forgets b to keep other"
    fresh = messages.snapshot("b", "e2", 1, {"seq": 1})
    assert await bus.publish(fresh, {"seq": 1})
    assert await follower.admit([fresh]) == [fresh]
    assert follower.at == Position("e2", 1)


async def test_after_a_pause_the_resync_snapshot_reaches_a_current_client() -> None:
    bus = MemoryBus()
    await run(bus, 3)
    follower = Follower(bus, "b")
    [current] = await follower.catch_up(None)
    assert await follower.admit([current]) == [], "the same snapshot twice is dropped"
    pause = messages.paused("b", Position("e", 3))
    assert await follower.admit([pause, current]) == [pause, current], (
        "told updates paused, the client learns it is current again"
    )
    assert await follower.admit([current]) == [], "once"


async def test_a_catch_up_heavier_than_the_snapshot_is_the_snapshot() -> None:
    bus = MemoryBus()
    view = {"seq": 1, "log": ""}
    await bus.publish(messages.snapshot("b", "e", 1, view), view)
    for seq in range(2, 40):  # each replaces the same 4 KiB: the view stays small
        changes = {"log": str(seq % 10) * 4096}
        view = {**view, **changes, "seq": seq}
        await bus.publish(messages.delta("b", "e", seq, changes), view)
    follower = Follower(bus, "b")
    caught_up = await follower.catch_up(Position("e", 1))
    assert [m.kind for m in caught_up] == [Kind.SNAPSHOT], "150 KB of deltas, a 4 KB snapshot"
    assert follower.at == Position("e", 39)
    assert [m.seq for m in await follower.catch_up(Position("e", 37))] == [38, 39], (
        "a short absence still gets its deltas"
    )
