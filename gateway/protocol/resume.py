"""Resume tokens: the opaque SSE `id:` a client hands back as `Last-Event-ID`.

A token is `EPOCH.SEQ.TAG`: the position in the build's sequence and a short
hash of the build id. The tag makes a token name its build, so a token pasted
into another build's stream is refused (that client gets a snapshot) instead
of silently resuming at a wrong place. Tokens use only `[0-9a-z.]`, so they are
safe in an SSE field (no CR/LF injection) and in a query string.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_EPOCH = re.compile(r"[0-9a-z]{1,32}")
_SEQ = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is in a build's sequence of messages."""

    epoch: str
    seq: int


def new_epoch() -> str:
    return secrets.token_hex(4)


def build_tag(build_id: str) -> str:
    return hashlib.blake2b(build_id.encode(), digest_size=4).hexdigest()


def token(build_id: str, at: Position) -> str:
    return f"{at.epoch}.{at.seq}.{build_tag(build_id)}"


def parse_token(build_id: str, text: str | None) -> Position | None:
    """The position a token names, or None for a missing, garbage or foreign token."""
    if not text:
        return None
    parts = text.split(".")
    if len(parts) != 3:
        return None
    epoch, seq, tag = parts
    if not (_EPOCH.fullmatch(epoch) and _SEQ.fullmatch(seq)) or tag != build_tag(build_id):
        return None
    return Position(epoch, int(seq))


MAX_CURSOR_TOKENS = 256
"""Tokens read from one cursor: more than any stream holds, few enough to read cheaply."""


def cursor(build_ids: list[str], positions: dict[str, Position]) -> str:
    """A multi-build stream's resume id: the token of each build with a position, `~`-joined.

    Each token names its build, so a cursor resumes whatever builds a stream asks
    for again, in any order, and ignores the rest; a one-build cursor is a token.
    """
    return "~".join(token(b, positions[b]) for b in build_ids if b in positions)


def parse_cursor(build_ids: list[str], text: str | None) -> dict[str, Position]:
    """The position of each of `build_ids` that the cursor names; garbage names none."""
    if not text:
        return {}
    tokens = text.split("~", MAX_CURSOR_TOKENS)[:MAX_CURSOR_TOKENS]
    by_tag = {part.rpartition(".")[2]: part for part in tokens}
    found: dict[str, Position] = {}
    for build_id in build_ids:
        at = parse_token(build_id, by_tag.get(build_tag(build_id)))
        if at is not None:
            found[build_id] = at
    return found
