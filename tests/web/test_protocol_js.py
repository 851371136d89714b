"""web/protocol.js: the pages' copy of the protocol's rules, and what they build from it.

The rules object is checked against `gateway.protocol.rules.for_clients()` without a
browser; what the page derives from it (the build id rule, applying a delta) is run in
Chromium and compared with what the server does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import Page

from gateway.protocol.diff import apply
from gateway.protocol.rules import MAX_BUILD_ID, for_clients, is_build_id
from tests.helpers.browser import WEB, small_view

PROTOCOL_JS = WEB / "protocol.js"
BEGIN, END = "/* rules: begin */", "/* rules: end */"


def rules_in_protocol_js() -> Any:
    text = PROTOCOL_JS.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "one rules object, marked once"
    return json.loads(text[text.index(BEGIN) + len(BEGIN) : text.index(END)])


def test_the_pages_rules_are_the_gateways() -> None:
    assert rules_in_protocol_js() == for_clients()


@pytest.mark.browser
async def test_is_build_id_agrees_with_the_gateway_on_every_character(page: Page) -> None:
    await page.add_script_tag(path=str(PROTOCOL_JS))
    # Every BMP code point as a one-character id, but lone surrogates: no URL can carry one.
    refused = await page.evaluate(
        """() => {
            const refused = [];
            for (let c = 0; c < 0x10000; c += 1) {
                const surrogate = c >= 0xd800 && c <= 0xdfff;
                if (!surrogate && !isBuildId(String.fromCharCode(c))) refused.push(c);
            }
            return refused;
        }"""
    )
    surrogates = range(0xD800, 0xE000)
    expected = [c for c in range(0x10000) if c not in surrogates and not is_build_id(chr(c))]
    assert 0x20 in expected and 0x3000 in expected and 0x41 not in expected
    assert refused == expected

    cases = {
        "a" * MAX_BUILD_ID: True,
        "a" * (MAX_BUILD_ID + 1): False,
        "": False,
        "a/b": False,
        "a b": False,
        "a\tb": False,
        "😀" * MAX_BUILD_ID: True,  # 200 code points, 400 UTF-16 units
        "😀" * (MAX_BUILD_ID + 1): False,
        "<b>br-evil<i>": True,
        "br-7f3a": True,
        "\ufeff": False,  # a format character; JavaScript's \s has it, Python's isspace() not
        "\u200b": False,  # a zero-width space: an id that looks like another one
        "br-\u202eevil": False,  # a bidi override reorders the text around it
    }
    answers = await page.evaluate("(ids) => ids.map(isBuildId)", list(cases))
    assert answers == [is_build_id(text) for text in cases] == list(cases.values())


@pytest.mark.browser
async def test_apply_delta_agrees_with_the_gateways_apply(page: Page) -> None:
    await page.add_script_tag(path=str(PROTOCOL_JS))
    view = small_view()
    deltas: list[tuple[int, dict[str, Any]]] = [
        (6, {"status": "BuildRequestPlanning", "updatedAtMs": 1_795_766_413_000}),
        (
            7,
            {
                "partitions": {
                    "a/date=1": {
                        "status": "PartitionAvailable",
                        "updatedAtMs": 1_795_766_414_000,
                        "delegatedTo": None,
                    }
                },
                "events": [
                    {"eventId": "ev-2", "timestampMs": 1, "eventType": "X", "message": "two"},
                    {"eventId": "ev-3", "timestampMs": 2, "eventType": "X", "message": "three"},
                ],
            },
        ),
        (8, {"requestedPartitions": ["a/date=1"], "stale": True}),
    ]
    applied = await page.evaluate(
        """([view, deltas]) => {
            for (const [seq, changes] of deltas) applyDelta(view, seq, changes);
            return view;
        }""",
        [view, deltas],
    )
    for seq, changes in deltas:
        view = apply(view, seq, changes)
    assert applied == view
