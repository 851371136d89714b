"""Hand-made views for unit tests: small, valid, and easy to vary."""

from __future__ import annotations

from typing import Any


def a_view(build_id: str, seq: int, status: str = "BuildRequestExecuting") -> dict[str, Any]:
    """A view of one building partition, at `seq`."""
    return {
        "buildId": build_id,
        "seq": seq,
        "status": status,
        "createdAtMs": 1,
        "updatedAtMs": seq,
        "requestedPartitions": ["p/1"],
        "partitions": {
            "p/1": {"status": "PartitionBuilding", "updatedAtMs": 1, "delegatedTo": None}
        },
        "events": [],
        "stale": False,
        "checkedAtMs": None,
    }
