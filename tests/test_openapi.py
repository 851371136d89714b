"""docs/openapi.yaml is a tested contract, not prose.

It must be valid OpenAPI 3.1, name exactly the routes the app serves, and fit
what the gateway really sends: views, stream messages, WebSocket frames and
error bodies from a gateway in front of the simulator. The document stays open
for clients (they ignore unknown fields and show unlisted statuses); the checks
here close it (`strict`), so the gateway sending anything undocumented fails.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.app import create_app
from gateway.delivery.http_errors import check_build_id
from gateway.errors import InvalidBuildId
from gateway.protocol.resume import parse_cursor, parse_token
from gateway.settings import Settings
from gateway.simulator import Simulator
from tests.helpers.gateways import raw_url
from tests.helpers.sse import Event, Viewer, ended, events

DOCUMENT = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml").read_text()
)
BASE = "urn:buildcast:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

VIEW = "/api/v1/builds/{build_id}"
STREAM = "/api/v1/builds/{build_id}/stream"
MULTI = "/api/v1/stream"
WS = "/api/v1/ws"
REFS = ["reviews/date=2026-11-27", "podcasts/date=2026-11-27", "episodes/date=2026-11-27"]


def escape(segment: str) -> str:
    """One JSON-pointer segment (RFC 6901)."""
    return segment.replace("~", "~0").replace("/", "~1")


def strict(document: dict[str, Any]) -> dict[str, Any]:
    """A copy that refuses what the document does not name: unlisted enum values, and
    properties no schema declares (`unevaluatedProperties: false` on every object).

    A schema extended by `allOf` (SnapshotMessage, in WsSnapshotMessage) cannot be closed
    itself, or the extension's own fields would fail; every `$ref` to a schema outside an
    `allOf` closes it there instead.
    """
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    extended = {part["$ref"] for schema in schemas.values() for part in schema.get("allOf", [])}

    def close(node: Any, *, in_all_of: bool = False, extended_here: bool = False) -> None:
        if isinstance(node, list):
            for item in node:
                close(item, in_all_of=in_all_of)
            return
        if not isinstance(node, dict):
            return
        if ("$ref" in node and not in_all_of) or ("properties" in node and not extended_here):
            node.setdefault("unevaluatedProperties", False)
        for key, value in node.items():
            if key not in ("example", "examples"):  # instances, not schemas
                close(value, in_all_of=key == "allOf")

    for name, schema in schemas.items():
        close(schema, extended_here=f"#/components/schemas/{name}" in extended)
    close(document["paths"])
    close([part for key, part in document["components"].items() if key != "schemas"])
    schemas["UnlistedValue"] = False
    return document


class Contract:
    """The strict document, its pointers and a validator for any schema in it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = strict(document)
        self._registry: Registry[Any] = Registry().with_resource(
            BASE, DRAFT202012.create_resource(self.document)
        )

    def at(self, pointer: str) -> Any:
        node: Any = self.document
        for segment in pointer.split("/")[1:]:
            segment = segment.replace("~1", "/").replace("~0", "~")
            node = node[int(segment)] if isinstance(node, list) else node[segment]
        return node

    def follow(self, pointer: str) -> str:
        """Where a pointer leads once OpenAPI's Reference Objects are followed."""
        while isinstance(ref := self.at(pointer), dict) and "$ref" in ref:
            pointer = ref["$ref"].removeprefix("#")
        return pointer

    def check(self, instance: Any, pointer: str) -> None:
        """Validate against the schema at `pointer`; AssertionError says where it fails."""
        schema = {"$ref": f"{BASE}#{self.follow(pointer)}", "unevaluatedProperties": False}
        errors = list(Draft202012Validator(schema, registry=self._registry).iter_errors(instance))
        # A failed oneOf leaves its fields unevaluated too: name the cause, not that.
        causes = [e for e in errors if e.validator != "unevaluatedProperties"] or errors
        if (error := best_match(causes)) is not None:
            raise AssertionError(f"{error.json_path} against {pointer}: {error.message:.300}")

    def operation(self, path: str, method: str = "get") -> str:
        return f"/paths/{escape(path)}/{method}"

    def response(self, path: str, status: int, method: str = "get") -> str:
        """The documented response for `status`, else the operation's `default`."""
        responses = f"{self.operation(path, method)}/responses"
        documented = self.at(responses)
        assert str(status) in documented or "default" in documented, (
            f"{method.upper()} {path} does not document a {status}"
        )
        key = str(status) if str(status) in documented else "default"
        return self.follow(f"{responses}/{key}")

    async def check_response(
        self, path: str, response: aiohttp.ClientResponse, method: str = "get"
    ) -> Any:
        """The response's status, headers, media type and JSON body fit the document;
        returns the body (the JSON, or None for a stream or a page)."""
        spec = self.response(path, response.status, method)
        for name in self.at(spec).get("headers", {}):
            assert name in response.headers, f"{path} {response.status}: no {name} header"
            self.check(response.headers[name], f"{self.follow(f'{spec}/headers/{name}')}/schema")
        content = self.at(spec).get("content", {})
        if not content:
            assert await response.read() == b"", f"{path} {response.status} has no body"
            return None
        assert response.content_type in content, (
            f"{path} {response.status}: {response.content_type} is not documented"
        )
        if response.content_type != "application/json":
            return None
        body = await response.json()
        self.check(body, f"{spec}/content/application~1json/schema")
        return body

    def stream_item(self, path: str) -> str:
        return self.follow(f"{self.response(path, 200)}/content/text~1event-stream/x-itemSchema")

    def check_stream_event(self, path: str, event: Event) -> None:
        """An SSE event fits the item schema, its data the schema of the data's content."""
        item = self.stream_item(path)
        self.check({"id": event.id, "event": event.event, "data": json.dumps(event.data)}, item)
        self.check(event.data, f"{item}/properties/data/contentSchema")
        assert event.event == event.data["type"]
        if event.event == "snapshot":
            assert event.data["view"]["seq"] == event.data["seq"]
            assert event.data["view"]["buildId"] == event.data["buildId"]

    def websocket(self, part: str) -> str:
        return self.follow(f"{self.operation(WS)}/x-websocket/{part}")


CONTRACT = Contract(DOCUMENT)


def documented_operations() -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    )


@functools.cache
def served_routes() -> frozenset[tuple[str, str]]:
    """(method, path template) of every route of the app, its static files aside."""
    app = create_app(Settings(upstream="http://127.0.0.1:9"))
    return frozenset(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and not route.resource.canonical.startswith("/static")
    )


def unbuffered(path: str) -> bool:
    """A stream or the WebSocket, by what the document says it answers."""
    responses = DOCUMENT["paths"][path]["get"]["responses"]
    return "101" in responses or "text/event-stream" in responses.get("200", {}).get("content", {})


# --- the document itself


def test_the_document_is_openapi_3_1_and_plain_json() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1.")
    # Served as JSON: YAML's own types (integer keys, dates) would not survive.
    assert json.loads(json.dumps(DOCUMENT)) == DOCUMENT


def test_every_served_route_is_documented() -> None:
    undocumented = {route for route in served_routes() if route[0] != "HEAD"} - set(
        documented_operations()
    )
    assert not undocumented, f"routes missing from docs/openapi.yaml: {sorted(undocumented)}"


@pytest.mark.parametrize("operation", documented_operations(), ids=" ".join)
def test_every_documented_operation_is_served(operation: tuple[str, str]) -> None:
    assert operation in served_routes(), f"{operation} is documented but not served"


def test_head_is_answered_where_get_is_except_on_streams() -> None:
    """The document's info says so; aiohttp adds HEAD per route unless told not to."""
    routes = served_routes()
    gets = {path for method, path in routes if method == "GET"}
    heads = {path for method, path in routes if method == "HEAD"}
    assert heads == {path for path in gets if not unbuffered(path)}


def sse_text_events(text: str) -> Iterator[Event]:
    """The events of an SSE text (an example): comments and `retry` skipped."""
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            yield Event(fields.get("id"), fields["event"], json.loads(fields["data"]))


def examples(node: Any, pointer: str = "") -> Iterator[tuple[str, str, Any]]:
    """(where, the pointer of its schema, example) for every example in the document."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from examples(item, f"{pointer}/{index}")
        return
    if not isinstance(node, dict):
        return
    if "schema" in node:  # a media type, parameter or header
        schema = f"{pointer}/schema"
        if "example" in node:
            yield f"{pointer}/example", schema, node["example"]
        for name in node.get("examples", {}):
            where = CONTRACT.follow(f"{pointer}/examples/{escape(name)}")
            yield where, schema, CONTRACT.at(where)["value"]
    elif isinstance(node.get("examples"), list):  # a schema
        for index, example in enumerate(node["examples"]):
            yield f"{pointer}/examples/{index}", pointer, example
    for key, value in node.items():
        if key not in ("example", "examples"):
            yield from examples(value, f"{pointer}/{escape(key)}")


def test_every_example_fits_its_schema() -> None:
    found = list(examples(DOCUMENT))
    assert len(found) > 30
    for where, schema, example in found:
        try:
            CONTRACT.check(example, schema)
        except AssertionError as exc:
            raise AssertionError(f"the example at {where} does not fit: {exc}") from None


@pytest.mark.parametrize("path", [STREAM, MULTI])
def test_stream_examples_are_events_whose_ids_name_their_builds(path: str) -> None:
    media = DOCUMENT["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]
    found = list(sse_text_events(media["example"]))
    assert {event.event for event in found} >= {"snapshot", "delta"}
    for event in found:
        CONTRACT.check_stream_event(path, event)
        assert event.id is not None
        build_id = event.data["buildId"]
        assert build_id in parse_cursor([build_id], event.id), f"{event.id} is not {build_id}'s"


def test_build_id_schema_is_the_gateways_rule() -> None:
    """The pattern refuses exactly the characters the gateway refuses, every code point."""
    pattern = re.compile(DOCUMENT["components"]["schemas"]["BuildId"]["pattern"])

    def gateway_accepts(text: str) -> bool:
        try:
            check_build_id(text)
        except InvalidBuildId:
            return False
        return True

    def documented(text: str) -> bool:
        try:
            CONTRACT.check(text, "/components/schemas/BuildId")
        except AssertionError:
            return False
        return True

    # Runs of 200 code points (a valid length): a run both accept holds no character
    # they disagree on; the others are looked at one character at a time.
    differ = []
    for start in range(0, sys.maxunicode + 1, 200):
        run = "".join(map(chr, range(start, min(start + 200, sys.maxunicode + 1))))
        if bool(pattern.search(run)) and gateway_accepts(run):
            continue
        differ += [hex(ord(c)) for c in run if bool(pattern.search(c)) != gateway_accepts(c)]
    assert not differ, f"the pattern and the gateway disagree on {differ}"
    for text in ["", "a" * 200, "a" * 201, "br-7f3a", "a/b", "a b", "é-ü", "\u3000", "\ufeff"]:
        assert documented(text) == gateway_accepts(text), repr(text)


# --- what the gateway sends


async def tick_until_ended(sim: Simulator, build_id: str, every: float = 0.1) -> None:
    """Move every simulated build (the delegates too) until `build_id` ends."""
    while sim.status(build_id) not in ("BuildRequestCompleted", "BuildRequestFailed"):
        await asyncio.sleep(every)
        sim.tick()


async def test_views_and_stream_messages_fit_the_document(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(
        REFS, build_id="br-7f3a", fail=[REFS[0]], delegate=[REFS[1]], log_lines=2
    )
    view_url = gateway.make_url(f"/api/v1/builds/{build_id}")
    stream_url = str(gateway.make_url(f"/api/v1/builds/{build_id}/stream"))
    async with session.get(stream_url) as response:
        assert await CONTRACT.check_response(STREAM, response) is None
        CONTRACT.check_stream_event(STREAM, await anext(events(response)))

    viewer = Viewer(session, stream_url)
    following = asyncio.create_task(viewer.follow(ended))
    views = []
    while sim.status(build_id) not in ("BuildRequestCompleted", "BuildRequestFailed"):
        async with session.get(view_url) as response:
            views.append(await CONTRACT.check_response(VIEW, response))
        await asyncio.sleep(0.1)
        sim.tick()
    await following
    async with session.get(view_url) as response:
        views.append(await CONTRACT.check_response(VIEW, response))
    async with session.get(gateway.make_url("/api/v1/watched")) as response:
        watched = await CONTRACT.check_response("/api/v1/watched", response)
    watched_ids = [build["buildId"] for build in watched["builds"]]
    assert build_id in watched_ids and watched_ids == sorted(watched_ids)

    for message in viewer.messages:
        CONTRACT.check_stream_event(STREAM, message)
        assert message.id is not None and parse_token(build_id, message.id) is not None
    # Not vacuous: the run went through every optional part of the view.
    kinds = [message.event for message in viewer.messages]
    assert kinds[0] == "snapshot" and "delta" in kinds
    changes = [m.data["changes"] for m in viewer.messages if m.event == "delta"]
    seen = [v["partitions"] for v in views] + [
        c["partitions"] for c in changes if "partitions" in c
    ]
    entries = [entry for partitions in seen for entry in partitions.values()]
    assert {"PartitionDelegated", "PartitionFailed"} <= {e["status"] for e in entries}
    assert any(e["delegatedTo"] for e in entries)
    all_events = views[-1]["events"]
    assert any(e.get("job", {}).get("logLines") for e in all_events)
    assert any("partitionRef" in e and "partitionStatus" in e for e in all_events)
    assert any("delegatedTo" in e for e in all_events)
    assert any("events" in c for c in changes)
    assert views[-1]["status"] == "BuildRequestFailed"


async def test_multi_build_stream_fits_the_document(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(REFS[:2], build_id="br-7f3a")
    url = gateway.make_url("/api/v1/stream").with_query([("build", build_id), ("build", "br-x")])
    async with session.get(url) as response:
        assert await CONTRACT.check_response(MULTI, response) is None
        stream = events(response)
        first, second = await anext(stream), await anext(stream)
    for event in (first, second):
        CONTRACT.check_stream_event(MULTI, event)
    assert (first.event, second.event, second.data["code"]) == ("snapshot", "error", "not_found")
    assert second.data["buildId"] == "br-x"


@pytest.mark.parametrize(
    ("template", "path", "status", "code"),
    [
        (VIEW, "/api/v1/builds/br-x", 404, "not_found"),
        (VIEW, "/api/v1/builds/a%20b", 400, "invalid_build_id"),
        (STREAM, "/api/v1/builds/br-x/stream", 404, "not_found"),
        (STREAM, "/api/v1/builds/a%09b/stream", 400, "invalid_build_id"),
        (MULTI, "/api/v1/stream", 400, "bad_request"),
        (MULTI, "/api/v1/stream?" + "&".join(f"build=b{i}" for i in range(51)), 429, "too_many"),
        (MULTI, "/api/v1/stream?build=a%20b", 400, "invalid_build_id"),
        (WS, "/api/v1/ws", 400, "bad_request"),  # a plain GET, no handshake
    ],
)
async def test_error_bodies_fit_the_document(
    gateway: TestServer,
    session: aiohttp.ClientSession,
    template: str,
    path: str,
    status: int,
    code: str,
) -> None:
    async with session.get(raw_url(gateway, path)) as response:
        assert response.status == status
        body = await CONTRACT.check_response(template, response)
    assert body["error"]["code"] == code


async def test_errors_off_the_operations_fit_the_error_schema(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(gateway.make_url("/no/such/path")) as response:
        assert response.status == 404
        CONTRACT.check(await response.json(), "/components/schemas/Error")
    async with session.post(gateway.make_url("/api/v1/builds/br-7f3a")) as response:
        assert response.status == 405 and "GET" in response.headers["Allow"]
        body = await response.json()
        CONTRACT.check(body, "/components/schemas/Error")
    assert body["error"]["code"] == "method_not_allowed"


async def test_the_gateway_serves_this_document(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(gateway.make_url("/api/v1/openapi.json")) as response:
        assert response.status == 200
        served = await CONTRACT.check_response("/api/v1/openapi.json", response)
    assert served == DOCUMENT


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/v1/watched"])
async def test_operations_endpoints_fit_the_document(
    gateway: TestServer, session: aiohttp.ClientSession, path: str
) -> None:
    async with session.get(gateway.make_url(path)) as response:
        assert response.status == 200
        await CONTRACT.check_response(path, response)


@pytest.mark.parametrize(
    ("path", "template"),
    [("/", "/"), ("/builds/br-7f3a", "/builds/{build_id}"), ("/wall", "/wall")],
)
async def test_pages_fit_the_document(
    gateway: TestServer, session: aiohttp.ClientSession, path: str, template: str
) -> None:
    async with session.get(gateway.make_url(path)) as response:
        assert response.status == 200
        await CONTRACT.check_response(template, response)


# --- the WebSocket


async def test_websocket_frames_fit_the_document(
    sim: Simulator, gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    build_id = sim.create_build(REFS, build_id="br-7f3a", delegate=[REFS[1]], log_lines=1)
    client, server = CONTRACT.websocket("clientFrames"), CONTRACT.websocket("serverMessages")

    async with session.ws_connect(gateway.make_url(WS)) as ws:

        async def send(frame: Any) -> None:
            CONTRACT.check(frame, client)
            await ws.send_json(frame)

        async def receive() -> dict[str, Any]:
            message: dict[str, Any] = await ws.receive_json(timeout=10)
            CONTRACT.check(message, server)
            return message

        await send({"op": "subscribe", "buildId": build_id})
        snapshot = await receive()
        assert snapshot["type"] == "snapshot"
        assert parse_token(build_id, snapshot["id"]) is not None
        ticking = asyncio.create_task(tick_until_ended(sim, build_id))
        while (await receive())["type"] != "delta":
            pass
        await ticking
        await send({"op": "ping"})
        await send({"op": "subscribe", "buildId": "br-x"})
        await send({"op": "unsubscribe", "buildId": build_id})
        # Frames the document refuses: each answered with an error, the socket kept.
        await ws.send_str("not json")
        await ws.send_bytes(b"{}")
        for bad in [{"op": "subscribe", "buildId": "a b"}, {"op": "watch", "buildId": build_id}]:
            with pytest.raises(AssertionError):
                CONTRACT.check(bad, client)
            await ws.send_json(bad)
        answers: list[dict[str, Any]] = []
        while len(answers) < 6:
            if (message := await receive())["type"] in ("pong", "error"):
                answers.append(message)
        await ws.close()
    assert ws.close_code == 1000
    CONTRACT.check(ws.close_code, CONTRACT.websocket("closeCodes"))
    assert [(m["type"], m.get("code"), m.get("buildId")) for m in answers] == [
        ("pong", None, None),
        ("error", "not_found", "br-x"),
        ("error", "bad_request", None),
        ("error", "bad_request", None),
        ("error", "bad_request", "a b"),
        ("error", "bad_request", None),
    ]


async def test_websocket_refusals_fit_the_document(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Origin": "https://evil.example",
    }
    async with session.get(gateway.make_url(WS), headers=handshake) as response:
        assert response.status == 403
        body = await CONTRACT.check_response(WS, response)
    assert body["error"]["code"] == "forbidden"
