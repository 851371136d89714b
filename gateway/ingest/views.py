"""Upstream payloads -> the protocol's build view (`gateway.protocol.view`).

Pure functions and one small cache: a payload in, the JSON-ready view of
`docs/protocol.md` out (camelCase keys, integer milliseconds). A large build's
body is thousands of events, of which a poll brings a few new ones:
`EventViews` converts only those.
"""

from collections.abc import Iterable, Mapping

from gateway.ingest.payloads import BuildEvent, BuildStatusResponse, PartitionStatusResponse
from gateway.protocol.view import UNKNOWN_PARTITION, View


def _ms(nanoseconds: int) -> int:
    return nanoseconds // 1_000_000  # integer division: a float would round beyond 2**53


def _partition_entry(status: str | None, updated_at: int, delegated_to: str | None) -> View:
    return {"status": status, "updatedAtMs": _ms(updated_at), "delegatedTo": delegated_to}


LOG_LINES = 5000
LOG_BYTES = 1 << 20
"""The most of a job run's log one event of the view keeps: its last lines, within both."""


def log_tail(lines: list[str]) -> tuple[list[str], int]:
    """The last lines of a log that fit LOG_LINES and LOG_BYTES, and how many were left out."""
    budget, count = LOG_BYTES, 0
    for line in reversed(lines[-LOG_LINES:]):
        budget -= len(line.encode()) + 1  # and its newline
        if budget < 0:
            break
        count += 1
    return lines[len(lines) - count :], len(lines) - count


def event_view(event: BuildEvent) -> View:
    """One event of the view; job and partition keys only where the event has them."""
    view: View = {
        "eventId": event.event_id,
        "timestampMs": _ms(event.timestamp),
        "eventType": event.event_type,
        "message": event.message,
    }
    if (job := event.job) is not None:
        lines, truncated = log_tail(job.log_lines)
        view["job"] = {
            "jobRunId": job.job_run_id,
            "jobLabel": job.job_label,
            "status": job.status,
            "targetPartitions": list(job.target_partitions),
            "logLines": lines,
        }
        if truncated:
            view["job"]["truncatedLines"] = truncated
    optional = {
        "partitionRef": event.partition_ref,
        "partitionStatus": event.partition_status,
        "delegatedTo": event.delegated_build_request_id,
    }
    view.update((key, value) for key, value in optional.items() if value is not None)
    return view


def partition_view(status: PartitionStatusResponse) -> View:
    """A partition's entry in the view, from its status response."""
    return _partition_entry(status.status, status.updated_at, status.delegated_build_request_id)


def partitions_from_events(build: BuildStatusResponse) -> dict[str, View]:
    """The entry each requested ref's latest partition event implies.

    Lets a ref show something before its own status request returns. An event counts
    when it names a ref and a partition status, whatever its type. "Latest" is by
    timestamp, ties going to the later event, so an unsorted upstream still works.
    """
    latest: dict[str, BuildEvent] = {}
    _keep_latest(latest, build.events)
    return _implied(latest, build.requested_partitions)


def _keep_latest(latest: dict[str, BuildEvent], events: Iterable[BuildEvent]) -> None:
    for event in events:
        ref = event.partition_ref
        if ref is None or event.partition_status is None:
            continue
        if ref not in latest or event.timestamp >= latest[ref].timestamp:
            latest[ref] = event


def _implied(latest: Mapping[str, BuildEvent], requested: Iterable[str]) -> dict[str, View]:
    return {
        ref: _partition_entry(e.partition_status, e.timestamp, e.delegated_build_request_id)
        for ref in requested
        if (e := latest.get(ref)) is not None
    }


class EventViews:
    """A build's events as its views show them, kept from one poll to the next.

    The upstream only appends events (`docs/upstream.md`), so each poll converts only the
    events after the last one converted; if that one is gone or differs, all of
    them again. The event dicts are shared by every view built from them: a view
    is never mutated once built.
    """

    def __init__(self) -> None:
        self._events: list[BuildEvent] = []
        self._views: list[View] = []
        self._latest: dict[str, BuildEvent] = {}  # per ref, as in `partitions_from_events`

    def update(self, events: list[BuildEvent]) -> None:
        """Take a new body's events."""
        count = len(self._events)
        if count and (len(events) < count or events[count - 1] != self._events[count - 1]):
            self._views, self._latest, count = [], {}, 0
        added = events[count:]
        self._views.extend(event_view(event) for event in added)
        _keep_latest(self._latest, added)
        self._events = events

    @property
    def views(self) -> list[View]:
        """The events of the view, as a list of its own (appending to it changes no view)."""
        return list(self._views)

    def partitions(self, requested: Iterable[str]) -> dict[str, View]:
        """`partitions_from_events` of the events taken so far."""
        return _implied(self._latest, requested)


def build_view(
    build: BuildStatusResponse,
    partitions: Mapping[str, View],
    *,
    seq: int,
    stale: bool,
    events: list[View] | None = None,
) -> View:
    """The protocol's build view: an entry in `partitions` for every requested ref, in order.

    `events` are the build's events already converted (`EventViews.views`); without
    them, each one is converted here.
    """
    return {
        "buildId": build.build_request_id,
        "seq": seq,
        "status": build.status,
        "createdAtMs": _ms(build.created_at),
        "updatedAtMs": _ms(build.updated_at),
        "requestedPartitions": list(build.requested_partitions),
        "partitions": {
            ref: dict(partitions.get(ref, UNKNOWN_PARTITION)) for ref in build.requested_partitions
        },
        "events": [event_view(event) for event in build.events] if events is None else events,
        "stale": stale,
        "checkedAtMs": None,
    }
