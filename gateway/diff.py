"""What changed between two views of one build, and how a client applies it.

Pure functions, no I/O. The delta format is PROTOCOL.md's: top-level keys
replace the view's, `partitions` merges by ref, `events` appends. Some upstream
changes cannot be said that way (an event rewritten or removed, a requested
partition dropped); `diff` then answers None and the poller publishes a fresh
snapshot instead, so a client is never left with a view the upstream does not
have.
"""

from __future__ import annotations

from gateway.messages import Changes
from gateway.models import View

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
    if new_events[: len(old_events)] != old_events:
        return None
    if len(new_events) > len(old_events):
        changes["events"] = new_events[len(old_events) :]
    return changes


def apply(view: View, seq: int, changes: Changes) -> View:
    """The view after a delta: what every client does with each message it receives."""
    result = {**view, **changes, "seq": seq}
    if "partitions" in changes:
        result["partitions"] = {**view["partitions"], **changes["partitions"]}
    if "events" in changes:
        result["events"] = view["events"] + changes["events"]
    return result
