"""Snapshot + deltas, applied in order as a client does, equal the latest view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest.payloads import BuildStatusResponse
from gateway.ingest.views import build_view
from gateway.protocol.diff import apply, apply_encoded, diff
from gateway.protocol.view import Changes

REFS = ["reviews/date=2026-11-27", "podcasts/date=2026-11-27", "a b/c=%41/é"]
STATUSES = ["BuildRequestPlanning", "BUILD_REQUEST_EXECUTING", "Completed", "SomethingNew"]
PARTITION_STATUSES = ["PartitionBuilding", "PartitionAvailable", "PartitionDelegated", None]
BIG = 2**62


def event(n: int, mutated: bool = False) -> dict[str, Any]:
    return {
        "event_id": f"ev-{n}",
        "timestamp": BIG + n,
        "event_type": "JobEvent",
        "message": "rewritten" if mutated else f"event {n}",
        "job": {
            "job_run_id": f"jr-{n}",
            "status": "JobRunning",
            "log_lines": ["<b>x</b>"] * (n % 3),
        },
    }


@st.composite
def upstream_states(draw: st.DrawFn) -> list[tuple[dict[str, Any], dict[str, Any], bool]]:
    """A build's successive upstream states: mostly appends, sometimes rewrites."""
    states = []
    events: list[dict[str, Any]] = []
    refs = list(REFS[:2])
    for _ in range(draw(st.integers(1, 12))):
        events = [*events, *(event(len(events) + i) for i in range(draw(st.integers(0, 3))))]
        if events and draw(st.integers(0, 9)) == 0:
            events = [*events[:-1], event(len(events) - 1, mutated=True)]
        if draw(st.integers(0, 9)) == 0:
            refs = draw(st.permutations(REFS))[: draw(st.integers(1, 3))]
        build = {
            "build_request_id": "br-1",
            "status": draw(st.sampled_from(STATUSES)),
            "requested_partitions": [{"str": r} for r in refs],
            "created_at": BIG,
            "updated_at": BIG + draw(st.integers(0, 10**12)),
            "events": events,
        }
        partitions = {
            ref: {"status": s, "updatedAtMs": draw(st.integers(0, 10**13)), "delegatedTo": None}
            for ref in refs
            if (s := draw(st.sampled_from(PARTITION_STATUSES))) is not None
        }
        states.append((build, partitions, draw(st.booleans())))
    return states


def published(states: list[Any]) -> Iterator[tuple[int, dict[str, Any], Changes | None]]:
    """What a poller publishes for successive upstream states: (seq, view, changes), where
    changes is None for a snapshot; polls that changed nothing publish nothing."""
    last: dict[str, Any] | None = None
    seq = 0
    for build, partitions, stale in states:
        view = build_view(
            BuildStatusResponse.model_validate(build), partitions, seq=seq + 1, stale=stale
        )
        changes = None if last is None else diff(last, view)
        if changes == {}:
            continue
        seq += 1
        yield seq, view, None if changes is None else orjson.loads(orjson.dumps(changes))
        last = view


@settings(max_examples=300, deadline=None)
@given(upstream_states())
def test_snapshot_plus_deltas_equals_latest_view(states: list[Any]) -> None:
    client: dict[str, Any] | None = None
    view: dict[str, Any] | None = None
    for seq, view, changes in published(states):
        if changes is None:
            client = orjson.loads(orjson.dumps(view))  # what a snapshot carries on the wire
        else:
            assert client is not None
            client = apply(client, seq, changes)
    assert client == view


def test_a_delta_holds_only_what_changed() -> None:
    old = {
        "seq": 1,
        "status": "A",
        "stale": False,
        "partitions": {"p": {"s": 1}, "q": {"s": 1}},
        "events": [{"eventId": "e1"}],
    }
    new = {
        "seq": 2,
        "status": "B",
        "stale": False,
        "partitions": {"p": {"s": 1}, "q": {"s": 2}},
        "events": [{"eventId": "e1"}, {"eventId": "e2"}],
    }
    assert diff(old, new) == {
        "status": "B",
        "partitions": {"q": {"s": 2}},
        "events": [{"eventId": "e2"}],
    }
    assert diff(new, {**new, "seq": 3}) == {}


def test_rewritten_events_or_dropped_partitions_need_a_snapshot() -> None:
    old = {
        "seq": 1,
        "partitions": {"p": {}, "q": {}},
        "events": [{"eventId": "e1", "message": "a"}],
    }
    assert diff(old, {**old, "events": [{"eventId": "e1", "message": "b"}]}) is None
    assert diff(old, {**old, "partitions": {"p": {}}}) is None


@settings(max_examples=200, deadline=None)
@given(upstream_states())
def test_applying_to_the_encoded_view_gives_the_encoding_of_the_applied_view(
    states: list[Any],
) -> None:
    """What the Redis bus's `latest` does (base JSON + the deltas since) gives a client's view."""
    base, client = b"", {}
    since: list[Changes] = []
    for seq, view, changes in published(states):
        if changes is None:
            base, since, client = orjson.dumps(view), [], view
        else:
            since.append(changes)
            client = apply(client, seq, changes)
        assert apply_encoded(base, seq, since) == orjson.dumps(client)


def long_view(count: int, seq: int = 1) -> dict[str, Any]:
    return {
        "seq": seq,
        "status": "BuildRequestExecuting",
        "partitions": {"p": {"status": "PartitionBuilding"}},
        "events": [{"eventId": f"ev-{n}", "message": f"event {n}"} for n in range(count)],
    }


def test_a_long_history_gives_a_delta_of_the_new_events_only() -> None:
    old, new = long_view(10_000), long_view(10_005, seq=2)
    assert diff(old, new) == {"events": new["events"][10_000:]}
    assert apply(old, 2, diff(old, new) or {}) == new


def test_a_long_history_rewritten_where_it_shows_needs_a_snapshot() -> None:
    old = long_view(10_000)
    last_rewritten = long_view(10_005, seq=2)
    last_rewritten["events"][9_999] = {"eventId": "ev-9999", "message": "rewritten"}
    first_rewritten = long_view(10_005, seq=2)
    first_rewritten["events"][0] = {"eventId": "ev-other", "message": "another history"}
    assert diff(old, last_rewritten) is None, "the last event the client has changed"
    assert diff(old, first_rewritten) is None, "another history under the same id"
    assert diff(old, long_view(9_999, seq=2)) is None, "events lost"


def test_applying_to_an_encoded_view_without_events_or_deltas() -> None:
    empty = {**long_view(0), "requestedPartitions": ["p"]}
    changes = {"events": [{"eventId": "e"}], "partitions": {"q": {"status": None}}, "new": 1}
    assert orjson.loads(apply_encoded(orjson.dumps(empty), 2, [changes])) == apply(
        empty, 2, changes
    )
    assert apply_encoded(orjson.dumps(empty), 1, []) == orjson.dumps(empty)
