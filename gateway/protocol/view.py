"""The build view: what a client knows of one build, and the statuses it names.

A view is a JSON-ready dict with camelCase keys, times in integer milliseconds:

    {"buildId", "seq", "status", "createdAtMs", "updatedAtMs", "requestedPartitions",
     "partitions": {ref: {"status", "updatedAtMs", "delegatedTo"}}, "events": [...], "stale"}

Statuses are the Build Graph Service's names, normalised to their prefixed form
(`docs/upstream.md`); a status this version does not know is kept as it came.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, TypeGuard

View = dict[str, Any]
"""A build's view, or any JSON-ready dict of the protocol (an event, a summary)."""

Changes = dict[str, Any]
"""A delta's `changes`: top-level keys replace, `partitions` merges by ref, `events` appends."""


class BuildRequestStatus(StrEnum):
    RECEIVED = "BuildRequestReceived"
    PLANNING = "BuildRequestPlanning"
    EXECUTING = "BuildRequestExecuting"
    COMPLETED = "BuildRequestCompleted"
    FAILED = "BuildRequestFailed"
    CANCELLED = "BuildRequestCancelled"


class PartitionStatus(StrEnum):
    REQUESTED = "PartitionRequested"
    SCHEDULED = "PartitionScheduled"
    BUILDING = "PartitionBuilding"
    AVAILABLE = "PartitionAvailable"
    FAILED = "PartitionFailed"
    DELEGATED = "PartitionDelegated"


class JobStatus(StrEnum):
    SCHEDULED = "JobScheduled"
    RUNNING = "JobRunning"
    COMPLETED = "JobCompleted"
    FAILED = "JobFailed"
    CANCELLED = "JobCancelled"
    SKIPPED = "JobSkipped"


TERMINAL_BUILD_STATUSES: Final[frozenset[str]] = frozenset(
    {BuildRequestStatus.COMPLETED, BuildRequestStatus.FAILED, BuildRequestStatus.CANCELLED}
)
ACTIVE_BUILD_STATUSES: Final[frozenset[str]] = frozenset(
    {BuildRequestStatus.RECEIVED, BuildRequestStatus.PLANNING, BuildRequestStatus.EXECUTING}
)
FINAL_PARTITION_STATUSES: Final[frozenset[str]] = frozenset(
    {PartitionStatus.AVAILABLE, PartitionStatus.FAILED}
)

UNKNOWN_PARTITION: Final[View] = {"status": None, "updatedAtMs": None, "delegatedTo": None}
"""The entry of a requested ref whose status is not known yet. Copy it, never mutate it."""


def summarize(view: View) -> View:
    """What a list of builds shows of one: status, freshness, partition counts."""
    statuses = [p["status"] for p in view["partitions"].values()]
    return {
        "buildId": view["buildId"],
        "status": view["status"],
        "updatedAtMs": view["updatedAtMs"],
        "stale": view["stale"],
        "partitions": {
            "total": len(statuses),
            "available": statuses.count(PartitionStatus.AVAILABLE),
            "failed": statuses.count(PartitionStatus.FAILED),
        },
    }


def is_view(value: object) -> TypeGuard[View]:
    """Whether a received value has the shape of a view (what a client relies on)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("seq"), int)
        and isinstance(value.get("partitions"), dict)
        and isinstance(value.get("events"), list)
        and "status" in value
    )


def is_changes(value: object) -> TypeGuard[Changes]:
    """Whether a received value has the shape of a delta's changes."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("partitions", {}), dict)
        and isinstance(value.get("events", []), list)
    )
