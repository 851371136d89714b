"""Resume tokens and cursors: each names its build, and garbage resumes nothing."""

from __future__ import annotations

from gateway.protocol.resume import Position, cursor, parse_cursor, parse_token, token


def test_tokens_name_their_build() -> None:
    at = Position("ab12", 42)
    assert parse_token("br-1", token("br-1", at)) == at
    assert parse_token("br-2", token("br-1", at)) is None
    for garbage in (
        "",
        "x",
        "ab12.42",
        "AB.1.x",
        "ab12.-1." + token("br-1", at).split(".")[2],
        "a.1.b.c",
        "ab12.99999999999999999999.00000000",
        "é.1.0",
    ):
        assert parse_token("br-1", garbage) is None


def test_a_cursor_resumes_the_builds_it_names_in_any_order() -> None:
    at = {"br-1": Position("e1", 4), "br-2": Position("e2", 9)}
    text = cursor(["br-1", "br-2"], at)
    assert parse_cursor(["br-2", "br-1", "br-3"], text) == at, "another order, one more build"
    assert parse_cursor(["br-1"], text) == {"br-1": at["br-1"]}
    assert cursor(["br-1"], at) == token("br-1", at["br-1"]), "one build: its token"
    for garbage in ("", "~~~", "x~y", "~".join([text] * 100)):
        assert set(parse_cursor(["br-9"], garbage)) == set()


def test_a_cursor_of_more_builds_resumes_a_stream_of_fewer() -> None:
    at = {f"br-{i}": Position("e", i + 1) for i in range(5)}
    text = cursor(list(at), at)
    assert parse_cursor(["br-3", "br-4"], text) == {"br-3": at["br-3"], "br-4": at["br-4"]}
