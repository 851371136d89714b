"""What changed between two views of one build, and how a client applies it.

Pure functions, no I/O. The delta format (`docs/protocol.md`): top-level keys
replace the view's, `partitions` merges by ref, `events` appends. Some upstream
changes cannot be said that way (an event rewritten or removed, a requested
partition dropped); `diff` then answers None and the poller publishes a fresh
snapshot instead, so a client is never left with a view the upstream does not
have.

A large build holds thousands of events. The upstream only appends them and
never changes one (`docs/upstream.md`), so `diff` does not compare the lists: it checks
the count and the events that would show a rewrite (the first, and the last one
the old view has), and takes the rest as new. Its cost follows the partitions
and the new events, not the build's history. `apply_encoded` does for a view
kept as JSON (the Redis bus's) what `apply` does, without decoding its events.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.protocol import codec
from gateway.protocol.view import Changes, View

_MERGED = ("seq", "partitions", "events")


def diff(old: View, new: View) -> Changes | None:
    """The changes that turn `old` into `new` ({} when none), or None when only a snapshot can."""
    changes: Changes = {
        key: value
        for key, value in new.items()
        if key not in _MERGED and old.get(key, ...) != value
    }
    if old.keys() - new.keys():
        return None

    old_parts, new_parts = old["partitions"], new["partitions"]
    if old_parts.keys() - new_parts.keys():
        return None
    parts = {ref: entry for ref, entry in new_parts.items() if old_parts.get(ref) != entry}
    if parts:
        changes["partitions"] = parts

    old_events, new_events = old["events"], new["events"]
    count = len(old_events)
    if count and (
        len(new_events) < count
        or new_events[count - 1] != old_events[-1]
        or new_events[0] != old_events[0]
    ):
        return None
    if len(new_events) > count:
        changes["events"] = new_events[count:]
    return changes


def apply(view: View, seq: int, changes: Changes) -> View:
    """The view after a delta: what every client does with each message it receives."""
    result = {**view, **changes, "seq": seq}
    if "partitions" in changes:
        result["partitions"] = {**view["partitions"], **changes["partitions"]}
    if "events" in changes:
        result["events"] = view["events"] + changes["events"]
    return result


def apply_encoded(view: bytes, seq: int, deltas: Iterable[Changes]) -> bytes:
    """The JSON of the view after `deltas` (the last at `seq`), from the JSON of `view`.

    `view` is compact JSON (`codec.dumps`'s), and so is the result: byte for byte
    the encoding of `apply`'s. What the deltas did not touch is never decoded: a
    build's thousands of events are copied as one slice, its partitions only indexed.
    """
    merged: View = {"seq": seq, "partitions": {}, "events": []}
    for changes in deltas:
        merged = apply(merged, seq, changes)
    partitions, events = merged.pop("partitions"), merged.pop("events")
    members = codec.fields(view)
    members.update((key, codec.dumps(value)) for key, value in merged.items())
    if partitions:
        entries = codec.fields(members["partitions"])
        entries.update((ref, codec.dumps(entry)) for ref, entry in partitions.items())
        members["partitions"] = codec.join_fields(entries)
    members["events"] = codec.extend_array(members["events"], events)
    return codec.join_fields(members)
