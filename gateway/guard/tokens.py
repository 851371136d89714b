"""Access tokens: JWTs signed HS256 that name the builds their holder may watch.

    {"builds": ["nightly-*", "br-7f3a"], "exp": 1795770000, "sub": "wall-3rd-floor"}

`builds` holds 1 to 100 glob patterns, `*` for any run of characters and `?`
for one; `exp` is required (a token that never expires cannot be revoked);
`sub`, optional, names the holder in logs. Only HS256 is accepted: a token
signed otherwise, or with `alg: none`, is no token. Minting needs the same
secret (`buildcast token`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from gateway.errors import Unauthorized

ALGORITHM = "HS256"
MAX_TOKEN_BYTES = 4096
MAX_PATTERNS = 100
MAX_PATTERN = 256

_WILDCARDS = {"*": ".*", "?": "."}
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token allows: the builds it names, until when, for whom."""

    patterns: tuple[str, ...]
    expires_at: float  # Unix time, seconds
    subject: str | None
    _builds: re.Pattern[str]

    def allows(self, build_id: str) -> bool:
        return self._builds.fullmatch(build_id) is not None


def grant(patterns: Sequence[str], expires_at: float, subject: str | None = None) -> Grant:
    """The grant of these patterns; ValueError for patterns a token may not hold."""
    if not 1 <= len(patterns) <= MAX_PATTERNS:
        raise ValueError(f"name 1 to {MAX_PATTERNS} build patterns")
    for pattern in patterns:
        if not isinstance(pattern, str) or not 1 <= len(pattern) <= MAX_PATTERN:
            raise ValueError(f"a build pattern is a string of 1 to {MAX_PATTERN} characters")
        if _UNSAFE.search(pattern):
            raise ValueError("a build pattern holds no whitespace or control character")
    regex = "|".join(
        "".join(_WILDCARDS.get(char) or re.escape(char) for char in pattern) for pattern in patterns
    )
    return Grant(tuple(patterns), expires_at, subject, re.compile(f"(?s:{regex})"))


def verify(token: str, secret: str, leeway: float) -> Grant:
    """The grant a token carries; Unauthorized if it is missing, forged, expired or malformed."""
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"a token holds at most {MAX_TOKEN_BYTES} bytes")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp"]},
            leeway=leeway,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token expired: get a new one") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("not a valid token") from None
    subject = claims.get("sub")
    patterns = claims.get("builds")
    try:
        if subject is not None and not isinstance(subject, str):
            raise ValueError("sub is a string")
        if not isinstance(patterns, list):
            raise ValueError("builds is a list of patterns")
        return grant(patterns, float(claims["exp"]), subject)
    except ValueError as exc:
        raise Unauthorized(f"not a valid token: {exc}") from None


def mint(
    secret: str,
    patterns: Sequence[str],
    ttl: float,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A token for `patterns`, valid `ttl` seconds from `now`; ValueError for bad patterns."""
    issued = time.time() if now is None else now
    grant(patterns, issued + ttl, subject)  # refuses what `verify` would refuse
    claims: dict[str, object] = {"builds": list(patterns), "iat": int(issued)}
    claims["exp"] = int(issued + ttl)
    if subject is not None:
        claims["sub"] = subject
    token: str = jwt.encode(claims, secret, algorithm=ALGORITHM)
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise ValueError(f"that token would be over {MAX_TOKEN_BYTES} bytes: name fewer builds")
    return token
