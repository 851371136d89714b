"""The rules every party follows: error codes, the build-id rule, the limits clients meet.

One place for them: the server answers with these codes, the Python client
and the pages (`web/protocol.js`, checked against `for_clients()` by a test)
read them. `docs/protocol.md` explains each.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final

from gateway.protocol.view import ACTIVE_BUILD_STATUSES, TERMINAL_BUILD_STATUSES


class Code(StrEnum):
    """The `code` of an error body (`{"error": {"code", "message"}}`) or `error` message."""

    INVALID_BUILD_ID = "invalid_build_id"
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_MANY = "too_many"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    NOT_READY = "not_ready"
    INTERNAL = "internal"


HTTP_STATUS: Final[dict[Code, int]] = {
    Code.INVALID_BUILD_ID: 400,
    Code.BAD_REQUEST: 400,
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.TOO_MANY: 429,
    Code.UPSTREAM_UNAVAILABLE: 503,
    Code.NOT_READY: 503,
    Code.INTERNAL: 500,
}
"""The status of an HTTP answer carrying each code, before any stream starts."""

PAUSED: Final = Code.UPSTREAM_UNAVAILABLE
"""On an open stream, this code is a notice (live updates paused), not an end: the next
snapshot or delta of the build means live again. Every other `error` ends the build's stream."""

GONE: Final[frozenset[Code]] = frozenset({Code.NOT_FOUND, Code.INVALID_BUILD_ID})
"""Codes that say the build can never be followed: a client stops instead of retrying."""


def ends_stream(code: str | None) -> bool:
    """Whether an `error` message with this code ends its build's stream."""
    return code != PAUSED


# --- the build id

MAX_BUILD_ID: Final = 200

FORBIDDEN_IN_BUILD_ID: Final[tuple[tuple[int, int], ...]] = (
    (0x00, 0x20),  # C0 controls and the space
    (0x2F, 0x2F),  # "/": ids travel as one path segment
    (0x7F, 0xA0),  # DEL, C1 controls, no-break space
    (0xAD, 0xAD),  # and from here on: what Python's str.isspace() calls whitespace, and the
    (0x600, 0x605),  # format characters (Unicode's Cf: invisible, bidi overrides), which
    (0x61C, 0x61C),  # let an id look like another one or reorder the text around it
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
"""Code point ranges a build id may not hold. Written out rather than as `\\s` and `\\p{Cf}`,
which Python and JavaScript (and Unicode versions) read differently: both sides build
their pattern from this list, and a test checks it against Python's Unicode tables."""

BUILD_ID_RULE: Final = (
    f"a build id is 1 to {MAX_BUILD_ID} characters with no '/', whitespace, control or"
    " format characters"
)

_BUILD_ID = re.compile(
    "[^"
    + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in FORBIDDEN_IN_BUILD_ID)
    + f"]{{1,{MAX_BUILD_ID}}}"
)


def is_build_id(text: str) -> bool:
    return _BUILD_ID.fullmatch(text) is not None


# --- text from clients

CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters: never in a partition ref, never echoed back as they came."""

MAX_PARTITION_REF: Final = 1000

PARTITION_REF_RULE: Final = (
    f"a partition ref is 1 to {MAX_PARTITION_REF} characters with no control character"
)


def is_partition_ref(text: str) -> bool:
    return 0 < len(text) <= MAX_PARTITION_REF and CONTROL.search(text) is None


# --- limits a client runs into

STREAM_BUILDS: Final = 50
"""Builds one multi-build stream or one WebSocket may follow at once (a wall of 24 fits)."""

MAX_FRAME: Final = 4096
"""Bytes of one WebSocket client frame: an op is tiny, so anything longer is a mistake."""

HEARTBEAT_SECONDS: Final = 15.0
"""The longest silence of an open stream: a client that hears nothing for much longer
may take the connection for dead and resume."""


def for_clients() -> dict[str, Any]:
    """The rules as the pages read them (`web/protocol.js` holds this very object)."""
    return {
        "codes": {code.name: code.value for code in Code},
        "paused": PAUSED.value,
        "gone": sorted(code.value for code in GONE),
        "buildId": {
            "maxLength": MAX_BUILD_ID,
            "forbidden": [list(r) for r in FORBIDDEN_IN_BUILD_ID],
        },
        "activeStatuses": sorted(ACTIVE_BUILD_STATUSES),
        "terminalStatuses": sorted(TERMINAL_BUILD_STATUSES),
        "streamBuilds": STREAM_BUILDS,
        "heartbeatMs": int(HEARTBEAT_SECONDS * 1000),
    }
