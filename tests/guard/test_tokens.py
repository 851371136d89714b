"""Access tokens: what is a valid token, and which builds it opens."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from gateway.errors import Unauthorized
from gateway.guard.tokens import MAX_TOKEN_BYTES, grant, mint, verify

SECRET = "s" * 32


def forged(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.{base64.urlsafe_b64encode(signature).decode()}"


def test_a_minted_token_opens_the_builds_its_patterns_name() -> None:
    token = mint(SECRET, ["nightly-*", "br-7f3?"], ttl=60, subject="wall-3")
    granted = verify(token, SECRET, leeway=0)
    assert granted.subject == "wall-3"
    assert granted.expires_at == pytest.approx(time.time() + 60, abs=2)
    assert [granted.allows(b) for b in ("nightly-2026", "nightly-", "br-7f3a", "br-7f3ab")] == [
        True,
        True,
        True,
        False,
    ]
    assert not granted.allows("x-nightly-1"), "a pattern matches the whole id"
    assert grant(["a.b"], 0).allows("a.b") and not grant(["a.b"], 0).allows("axb"), "only * and ?"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "not a valid token"),
        ("garbage", "not a valid token"),
        (jwt.encode({"builds": ["*"], "exp": 2**40}, "x" * 32, "HS256"), "not a valid token"),
        (jwt.encode({"builds": ["*"], "exp": 2**40}, SECRET * 2, "HS512"), "not a valid token"),
        (forged({"alg": "none", "typ": "JWT"}, {"builds": ["*"], "exp": 2**40}), "not a valid"),
        (jwt.encode({"builds": ["*"]}, SECRET, "HS256"), "not a valid token"),
        (jwt.encode({"builds": ["*"], "exp": int(time.time()) - 10}, SECRET, "HS256"), "expired"),
        (jwt.encode({"builds": "*", "exp": 2**40}, SECRET, "HS256"), "builds is a list"),
        (jwt.encode({"builds": [], "exp": 2**40}, SECRET, "HS256"), "1 to 100"),
        (jwt.encode({"builds": ["*"] * 101, "exp": 2**40}, SECRET, "HS256"), "1 to 100"),
        (jwt.encode({"builds": ["a b"], "exp": 2**40}, SECRET, "HS256"), "whitespace"),
        (jwt.encode({"builds": [7], "exp": 2**40}, SECRET, "HS256"), "a string"),
        (jwt.encode({"builds": ["*"], "exp": 2**40, "sub": 7}, SECRET, "HS256"), "not a valid"),
        ("x" * (MAX_TOKEN_BYTES + 1), "at most 4096 bytes"),
    ],
    ids=[
        "empty",
        "garbage",
        "another secret",
        "HS512",
        "alg none",
        "no exp",
        "expired",
        "builds not a list",
        "no pattern",
        "101 patterns",
        "whitespace",
        "pattern not text",
        "sub not text",
        "over 4 KiB",
    ],
)
def test_anything_else_is_no_token(token: str, why: str) -> None:
    with pytest.raises(Unauthorized, match=why):
        verify(token, SECRET, leeway=5)


def test_an_expiry_a_few_seconds_past_is_forgiven_within_the_leeway() -> None:
    token = jwt.encode({"builds": ["*"], "exp": int(time.time()) - 2}, SECRET, "HS256")
    assert verify(token, SECRET, leeway=5).allows("any")
    with pytest.raises(Unauthorized, match="expired"):
        verify(token, SECRET, leeway=0)


def test_minting_refuses_what_verifying_would() -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        mint(SECRET, [], ttl=60)
    with pytest.raises(ValueError, match="over 4096 bytes"):
        mint(SECRET, ["b" * 200 + str(n) for n in range(40)], ttl=60)
