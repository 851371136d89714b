"""What changed between two views of one build, and how a client applies it.

Pure functions, no I/O. The delta format is PROTOCOL.md's: top-level keys
replace the view's, `partitions` merges by ref, `events` appends. Some upstream
changes cannot be said that way (an event rewritten or removed, a requested
partition dropped); `diff` then answers None and the poller publishes a fresh
snapshot instead, so a client is never left with a view the upstream does not
have.

A large build holds thousands of events. The upstream only appends them and
never changes one (UPSTREAM.md), so `diff` does not compare the lists: it checks
the count and the events that would show a rewrite (the first, and the last one
the old view has), and takes the rest as new. Its cost follows the partitions
and the new events, not the build's history. `apply_encoded` does for a view
kept as JSON (the Redis bus's) what `apply` does, without decoding its events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from gateway.codec import dumps
from gateway.messages import Changes
from gateway.models import View

_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
Buffer = bytes | msgspec.Raw  # a JSON value, encoded anew or sliced from the stored view

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
    fields: dict[str, Buffer] = dict(_FIELDS.decode(view))
    fields.update((key, dumps(value)) for key, value in merged.items())
    if partitions:
        entries: dict[str, Buffer] = dict(_FIELDS.decode(fields["partitions"]))
        entries.update((ref, dumps(entry)) for ref, entry in partitions.items())
        fields["partitions"] = _object(entries)
    if events:
        kept = memoryview(fields["events"])[:-1]  # `[e1,e2`, or `[` when there were none
        fields["events"] = b"".join([kept, b"," if len(kept) > 1 else b"", dumps(events)[1:]])
    return _object(fields)


def _object(fields: Mapping[str, Buffer]) -> bytes:
    return b"{" + b",".join(dumps(key) + b":" + value for key, value in fields.items()) + b"}"
