"""The rules every party shares: the build-id rule as documented, codes and their statuses."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from gateway.protocol.rules import (
    BUILD_ID_RULE,
    HTTP_STATUS,
    MAX_BUILD_ID,
    PAUSED,
    Code,
    ends_stream,
    is_build_id,
)


def documented(character: str) -> bool:
    """`docs/protocol.md`: no '/', no whitespace, no control or format character."""
    category = unicodedata.category(character)
    return not (character == "/" or character.isspace() or category in ("Cc", "Cf"))


def test_every_character_is_allowed_or_refused_as_documented() -> None:
    # Refused beyond this Python's tables: format characters of later Unicode versions.
    later = range(0x13439, 0x13440)
    wrong = [
        hex(point)
        for point in range(sys.maxunicode + 1)
        if is_build_id(chr(point)) != documented(chr(point)) and point not in later
    ]
    assert not wrong, wrong[:20]


@pytest.mark.parametrize(
    ("build_id", "allowed"),
    [
        ("br-7f3a", True),
        ("a" * MAX_BUILD_ID, True),
        ("a" * (MAX_BUILD_ID + 1), False),
        ("😀" * MAX_BUILD_ID, True),  # 200 code points, whatever their UTF-8 length
        ("", False),
        ("a/b", False),
        ("a b", False),
        ("a\u3000b", False),
        ("br-\u202e1", False),  # a bidi override would show another id than it is
        ("br\u200b-1", False),  # a zero-width space: two ids that look the same
        ("..", True),  # sent upstream as %2E%2E: never a path's parent
        ("{tag}%20é", True),
    ],
)
def test_build_ids_of_every_kind(build_id: str, allowed: bool) -> None:
    assert is_build_id(build_id) is allowed
    assert "1 to 200 characters" in BUILD_ID_RULE


def test_every_code_has_one_http_status_and_only_the_pause_goes_on() -> None:
    assert set(HTTP_STATUS) == set(Code)
    assert {code for code in Code if not ends_stream(code)} == {PAUSED}
    assert HTTP_STATUS[Code.TOO_MANY] == 429 and HTTP_STATUS[Code.NOT_FOUND] == 404
