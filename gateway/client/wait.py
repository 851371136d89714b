"""`buildcast wait`: block until a build (or one partition) ends; its end is the exit status.

The statuses are the protocol's (`docs/protocol.md`): 0 Completed, 1 Failed,
2 Cancelled, 3 timed out, 4 not found or unusable gateway. The wait follows
the build through `Client`, which reconnects and resumes by itself.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.client.connection import Client
from gateway.client.errors import ClientError
from gateway.client.updates import report_connectivity
from gateway.protocol.view import BuildRequestStatus, PartitionStatus, View

COMPLETED, FAILED, CANCELLED, TIMED_OUT, UNUSABLE = 0, 1, 2, 3, 4
BUILD_EXIT = {
    BuildRequestStatus.COMPLETED: COMPLETED,
    BuildRequestStatus.FAILED: FAILED,
    BuildRequestStatus.CANCELLED: CANCELLED,
}


async def wait(
    build_id: str,
    gateway: str,
    timeout: float | None,
    ref: str | None,
    *,
    token: str | None = None,
) -> int:
    last: View | None = None
    async with Client(gateway, token=token) as client:
        try:
            async with asyncio.timeout(timeout):
                updates = client.follow(
                    build_id, on_connection=report_connectivity("wait", gateway)
                )
                async for update in updates:
                    if update.view is None:
                        continue
                    last = update.view
                    if (outcome := _waited(build_id, ref, last)) is not None:
                        status, line = outcome
                        print(line, file=sys.stderr if status == UNUSABLE else sys.stdout)
                        return status
        except TimeoutError:
            where = (
                "the gateway never answered" if last is None else f"{build_id} is {last['status']}"
            )
            print(f"buildcast wait: gave up after {timeout:g} s; {where}", file=sys.stderr)
            return TIMED_OUT
        except ClientError as exc:
            print(f"buildcast wait: {exc}", file=sys.stderr)
            return UNUSABLE
    return UNUSABLE  # not reached: a one-build follow ends only by raising


def _waited(build_id: str, ref: str | None, view: View) -> tuple[int, str] | None:
    """The exit status and line once the wait is over, or None while it goes on."""
    status = view["status"]
    if ref is None:
        code = BUILD_EXIT.get(status)
        return None if code is None else (code, f"{build_id} {status}")
    if ref not in view["requestedPartitions"]:
        return UNUSABLE, f"buildcast wait: {build_id} did not request partition {ref}"
    part = (view["partitions"].get(ref) or {}).get("status")
    line = f"{ref} {part or 'PartitionUnknown'} ({build_id} {status})"
    if part == PartitionStatus.AVAILABLE:
        return COMPLETED, line
    if part == PartitionStatus.FAILED:
        return FAILED, line
    code = BUILD_EXIT.get(status)  # the build ended without it Available
    return None if code is None else (CANCELLED if code == CANCELLED else FAILED, line)
