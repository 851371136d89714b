"""A stream ends when its token does: one timer per connection, armed when it opens.

Checked once, at the expiry itself, never per message. The client learns it
from an `error` with code `unauthorized` on each build, gets a new token and
resumes with its cursor: nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.guard.http import Access
from gateway.protocol.rules import Code

EXPIRED = "the token expired: get a new one and resume"


def expire_at(who: Access, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """Call `callback` when `who`'s token expires; None without access control."""
    if who.grant is None:
        return None
    delay = max(0.0, who.grant.expires_at - time.time())
    return asyncio.get_running_loop().call_later(delay, callback)


def expired(build_id: str) -> dict[str, Any]:
    """The `error` that ends a build's stream when the token expired."""
    return {"type": "error", "buildId": build_id, "code": Code.UNAUTHORIZED, "message": EXPIRED}
