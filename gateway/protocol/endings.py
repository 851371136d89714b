"""Why the gateway ends a stream or a socket, and what the client should do then.

The one catalogue of endings. SSE has no close code: its client learns the
same from what happens (a closed connection it reopens with `Last-Event-ID`,
or an `error` message that ends the stream). WebSocket clients read the code.

| ending     | when                                      | WebSocket | client             |
| ---------- | ----------------------------------------- | --------- | ------------------ |
| SHUTDOWN   | the replica stops (SIGTERM, a drain)      | 1001      | reconnect at once  |
| TOO_SLOW   | its queue filled, or a write stalled      | 1013      | reconnect, resume  |
| BUS_LOST   | a gap that Redis cannot fill now          | 1013      | reconnect, resume  |
| BUG        | an unexpected error inside the connection | 1011      | reconnect, resume  |
| TOKEN_EXPIRED | its access token expired (`unauthorized` first) | 1008 | new token, resume |
| FLOOD      | over 20 frames a second, or unread replies | 1008      | reconnect slower   |
| BUILD_GONE | the build does not exist upstream any more | `error`  | stop following it  |

"Resume" is `Last-Event-ID` (SSE) or `since` (WebSocket): the missed deltas,
or a snapshot where the history no longer reaches back. The EventSource's
`retry:` (2 s) paces SSE reconnects; WebSocket clients back off themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class CloseCode(IntEnum):
    """The RFC 6455 close codes the gateway sends."""

    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


@dataclass(frozen=True, slots=True)
class Ending:
    code: CloseCode
    reason: str  # sent with the close frame: short, for logs on the client side
    name: str  # the access log's `ended`


SHUTDOWN = Ending(CloseCode.GOING_AWAY, "server shutdown", "shutdown")
TOO_SLOW = Ending(CloseCode.TRY_AGAIN_LATER, "too slow: resume with since", "too slow")
BUS_LOST = Ending(CloseCode.TRY_AGAIN_LATER, "live updates lost: resume with since", "bus lost")
BUG = Ending(CloseCode.INTERNAL_ERROR, "internal error", "error")
TOKEN_EXPIRED = Ending(
    CloseCode.POLICY_VIOLATION, "token expired: resume with a new one", "token expired"
)
FLOOD = Ending(CloseCode.POLICY_VIOLATION, "too many frames: slow down", "flood")

# How else a stream or socket ends, as the access log names it.
CLIENT_LEFT = "client left"  # the client closed the connection (or a WebSocket close frame)
BUILDS_ENDED = "builds ended"  # each of its builds ended its stream (gone upstream)
