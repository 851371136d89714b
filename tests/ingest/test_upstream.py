"""The upstream client against plain-function fake upstreams (httpx.MockTransport)."""

import json
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway import __version__
from gateway.errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.ingest.payloads import BuildReader
from gateway.ingest.upstream import Fetched, UpstreamClient

Handler = Callable[[httpx.Request], httpx.Response]

BUILD = {
    "build_request_id": "br-x",
    "status": "BUILD_REQUEST_EXECUTING",
    "requested_partitions": [{"str": "a/b"}],
    "created_at": 1795766400000000000,
    "updated_at": 1795766412345678901,
    "events": [],
}
PARTITION = {"partitionRef": "a/b", "status": "Available", "updatedAt": 1795766406000000000}


def client_for(handler: Handler, base_url: str = "http://bgs.test") -> UpstreamClient:
    return UpstreamClient(base_url, transport=httpx.MockTransport(handler))


def answering(status: int, body: bytes | str = b"", **headers: str) -> Handler:
    return lambda request: httpx.Response(status, content=body, headers=headers)


def recording(requests: list[httpx.Request], body: object) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=body, headers={"ETag": '"v1"'})

    return handler


async def test_build_is_read_with_its_etag_and_headers() -> None:
    requests: list[httpx.Request] = []
    async with client_for(recording(requests, BUILD)) as client:
        fetched = await client.build("br-x")
    assert fetched.etag == '"v1"'
    assert fetched.body is not None
    assert (fetched.body.status, fetched.body.updated_at) == (
        "BuildRequestExecuting",
        1795766412345678901,
    )
    [request] = requests
    assert request.url.raw_path == b"/api/v1/builds/br-x"
    assert request.headers["User-Agent"] == f"buildcast/{__version__}"
    assert "If-None-Match" not in request.headers


async def test_timeouts_are_separate_for_connect_and_read() -> None:
    requests: list[httpx.Request] = []
    client = UpstreamClient(
        "http://bgs.test",
        timeout=3.0,
        connect_timeout=0.5,
        transport=httpx.MockTransport(recording(requests, BUILD)),
    )
    async with client:
        await client.build("br-x")
    assert requests[0].extensions["timeout"] == {
        "connect": 0.5,
        "read": 3.0,
        "write": 3.0,
        "pool": 3.0,
    }


REF = "reviews/date=2026-11-27/region=eu 100%é"
ENCODED_REF = "reviews%2Fdate%3D2026-11-27%2Fregion%3Deu%20100%25%C3%A9"


@pytest.mark.parametrize(
    ("call", "raw_path"),
    [
        (lambda c: c.partition_status(REF), f"/api/v1/partitions/{ENCODED_REF}/status"),
        (lambda c: c.partition_events(REF), f"/api/v1/partitions/{ENCODED_REF}/events"),
        (lambda c: c.build("br 7/a%2Fb?é#"), "/api/v1/builds/br%207%2Fa%252Fb%3F%C3%A9%23"),
        # httpx removes `.` and `..` segments: unencoded, `..` would read /api/v1.
        (lambda c: c.build(".."), "/api/v1/builds/%2E%2E"),
        (lambda c: c.partition_status("."), "/api/v1/partitions/%2E/status"),
        (lambda c: c.build("..."), "/api/v1/builds/..."),
        (lambda c: c.build("v1.2"), "/api/v1/builds/v1.2"),
    ],
)
async def test_ids_travel_as_one_encoded_segment(
    call: Callable[[UpstreamClient], Awaitable[object]], raw_path: str
) -> None:
    requests: list[httpx.Request] = []
    body = {**BUILD, **PARTITION, "events": []}
    async with client_for(recording(requests, body)) as client:
        await call(client)
    assert requests[0].url.raw_path == raw_path.encode()


async def test_a_base_url_path_is_kept() -> None:
    requests: list[httpx.Request] = []
    async with client_for(recording(requests, BUILD), "http://bgs.test/bgs/") as client:
        await client.build("br/x")
    assert requests[0].url.raw_path == b"/bgs/api/v1/builds/br%2Fx"


def conditional(request: httpx.Request) -> httpx.Response:
    """An upstream whose only version of everything is ETag "v1"."""
    if request.headers.get("If-None-Match") == '"v1"':
        return httpx.Response(304, headers={"ETag": '"v1"'})
    body = BUILD if "/builds/" in request.url.path else PARTITION
    return httpx.Response(200, json=body, headers={"ETag": '"v1"'})


async def test_a_known_etag_gets_not_modified() -> None:
    async with client_for(conditional) as client:
        assert await client.build("br-x", etag='"v1"') == Fetched(None, '"v1"')
        assert await client.partition_status("a/b", etag='"v1"') == Fetched(None, '"v1"')
        changed = await client.partition_status("a/b", etag='"v0"')
    assert changed.etag == '"v1"'
    assert changed.body is not None and changed.body.status == "PartitionAvailable"


async def test_not_modified_without_an_etag_header_keeps_ours() -> None:
    async with client_for(answering(304)) as client:
        assert await client.build("br-x", etag='"v7"') == Fetched(None, '"v7"')


async def test_partition_events_parse() -> None:
    body = {"partition_ref": "a/b", "events": [{"event_id": "e", "timestamp": 1, "message": "m"}]}
    async with client_for(answering(200, json.dumps(body))) as client:
        events = await client.partition_events("a/b")
    assert events.partition_ref == "a/b"
    assert [event.message for event in events.events] == ["m"]


@pytest.mark.parametrize(
    ("handler", "error", "message"),
    [
        (answering(404), UpstreamNotFound, "no build request br-x upstream"),
        (answering(400), UpstreamBadRequest, "upstream rejected build request br-x as malformed"),
        (
            answering(500),
            UpstreamUnavailable,
            "upstream answered 500 Internal Server Error for build request br-x",
        ),
        (
            answering(503),
            UpstreamUnavailable,
            "upstream answered 503 Service Unavailable for build request br-x",
        ),
        (answering(302, Location="/elsewhere"), UpstreamUnavailable, "upstream answered 302 Found"),
        # A 304 answers a conditional request only: this one sent no ETag.
        (answering(304), UpstreamUnavailable, "upstream answered 304 Not Modified"),
        (
            answering(200, b'{"build_request_id": "br-x",'),
            UpstreamInvalid,
            "invalid answer for build request br-x: not JSON",
        ),
        (answering(200, b"<html>oops</html>"), UpstreamInvalid, "not JSON"),
        (
            answering(200, json.dumps({**BUILD, "created_at": None})),
            UpstreamInvalid,
            "br-x: created_at: Value error, a timestamp must be an integer count of nanoseconds",
        ),
        (
            answering(200, b'{"status": "Executing"}'),
            UpstreamInvalid,
            "build_request_id: Field required",
        ),
        (answering(200, b"[]"), UpstreamInvalid, "invalid answer for build request br-x"),
    ],
)
async def test_http_failures_become_upstream_errors(
    handler: Handler, error: type[UpstreamError], message: str
) -> None:
    async with client_for(handler) as client:
        with pytest.raises(UpstreamError) as raised:
            await client.build("br-x")
    assert raised.type is error
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def failing(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "kind", "message"),
    [
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            UpstreamUnavailable,
            "cannot connect to upstream for partition a/b",
        ),
        (
            httpx.ConnectTimeout("timed out"),
            UpstreamTimeout,
            "upstream did not accept a connection within 2.0s for partition a/b",
        ),
        (
            httpx.ReadTimeout("timed out"),
            UpstreamTimeout,
            "upstream timed out after 5.0s for partition a/b",
        ),
        (
            httpx.PoolTimeout("timed out"),
            UpstreamTimeout,
            "upstream timed out after 5.0s for partition a/b",
        ),
        (
            httpx.ReadError("[Errno 104] Connection reset by peer"),
            UpstreamUnavailable,
            "upstream connection failed for partition a/b",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected"),
            UpstreamUnavailable,
            "upstream connection failed for partition a/b",
        ),
    ],
)
async def test_transport_failures_become_unavailable(
    exc: Exception, kind: type[UpstreamError], message: str
) -> None:
    """Timeouts are told apart (they are counted apart), but all are unavailable to callers."""
    async with client_for(failing(exc)) as client:
        with pytest.raises(UpstreamUnavailable) as raised:
            await client.partition_status("a/b")
    assert raised.type is kind
    assert str(raised.value) == message
    assert raised.value.__cause__ is exc


async def test_a_real_refused_connection_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with UpstreamClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(UpstreamUnavailable, match="cannot connect to upstream"):
            await client.build("br-x")


async def test_a_pollers_reader_parses_only_new_events_and_still_refuses_bad_ones() -> None:
    events = [{"event_id": f"ev-{n}", "timestamp": 1795766400000000000 + n} for n in range(4)]
    answers = iter(
        [
            {**BUILD, "events": events[:2]},
            {**BUILD, "events": events[:3]},
            {**BUILD, "events": [*events[:3], {**events[3], "timestamp": 1.5}]},
        ]
    )
    reader = BuildReader()
    async with client_for(lambda request: httpx.Response(200, json=next(answers))) as client:
        first = (await client.build("br-x", reader=reader)).body
        second = (await client.build("br-x", reader=reader)).body
        assert first is not None and second is not None
        assert second.events[0] is first.events[0], "validated once"
        with pytest.raises(UpstreamInvalid, match=r"events\.3\.timestamp"):
            await client.build("br-x", reader=reader)
