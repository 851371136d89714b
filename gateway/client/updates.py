"""What a caller of `Client.follow()` reads: updates, and news of the connection."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.protocol.view import TERMINAL_BUILD_STATUSES, Changes, View

UpdateKind = Literal["snapshot", "delta", "paused", "gone"]


@dataclass(frozen=True, slots=True)
class Update:
    """One message of one build, applied.

    `kind` is the message's: `snapshot` (a whole view: the first one, or a resync),
    `delta`, `paused` (the `upstream_unavailable` notice: live updates stop until the
    next snapshot or delta) or `gone` (a build of a multi-build follow that ended with
    an `error`, see `code`; a one-build follow raises instead).
    """

    build_id: str
    kind: UpdateKind
    view: View | None
    """The build's whole view after this message; None only for a build gone before any view."""
    changes: Changes
    """What this message changed in `view`: a delta's changes; for a snapshot, what differs
    from the view before it (all of it for a first snapshot); {} for a notice."""
    previous: View | None
    """The view before this message (None before the first snapshot)."""
    message: dict[str, Any]
    """The message as received (the protocol's JSON)."""
    event_id: str | None
    """The SSE `id:` it came with: the stream's resume cursor."""

    @property
    def seq(self) -> int | None:
        return None if self.view is None else int(self.view["seq"])

    @property
    def status(self) -> str | None:
        return None if self.view is None else str(self.view["status"])

    @property
    def ended(self) -> bool:
        """The build reached a final status (Completed, Failed, Cancelled)."""
        return self.status in TERMINAL_BUILD_STATUSES

    @property
    def code(self) -> str | None:
        """The `error` code of a `paused` or `gone` update."""
        code = self.message.get("code")
        return code if isinstance(code, str) else None


@dataclass(frozen=True, slots=True)
class Connectivity:
    """A change in whether the gateway can be followed, told once per outage and recovery."""

    reachable: bool
    detail: str
    """Why not, in words ("unreachable (connection refused)", "answered HTTP 503 ..."); or ""."""


OnConnection = Callable[[Connectivity], None]


def backoff(
    attempt: int, retry: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before reconnect `attempt` (1, 2, ...): `retry` doubled per attempt, at most
    `cap`, jittered down to half so that a crowd cut off at once spreads its return."""
    ceiling = min(cap, retry * 2.0 ** min(attempt - 1, 30))
    return ceiling * (0.5 + 0.5 * rand())


def report_connectivity(command: str, gateway: str) -> OnConnection:
    """One line on stderr when the gateway goes away, one when it is back."""

    def report(change: Connectivity) -> None:
        if change.reachable:
            line = f"gateway {gateway} reachable again"
        else:
            line = f"gateway {gateway} {change.detail}, retrying"
        print(f"buildcast {command}: {line}", file=sys.stderr, flush=True)

    return report
