"""docs/openapi.yaml, fuzzed against a live gateway over real HTTP with schemathesis.

tests/test_openapi.py checks the document against answers the tests chose; here
schemathesis generates the requests from the document itself: build ids of any
Unicode the pattern allows (and, in its negative mode, ids and parameters that break
it), lists of builds for the wall, headers; and the other methods on those paths (405
with `Allow`). Only GET operations that answer and end: the SSE streams and the
WebSocket never end, so they are left out.

Each answer must be no 5xx, have a documented status, content type and headers, fit
its schema, and every error must be the protocol's JSON body. The gateway is a real
`buildcast serve` in front of `buildcast simulate`: schemathesis calls with `requests`,
which would block an in-process server's event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.settings import API_DOCUMENT
from tests.helpers.procs import Procs

STREAMS = ["streamBuild", "streamBuilds", "openWebSocket"]
MALFORMED = {"error": {"code": "bad_request", "message": "malformed HTTP request"}}
LINE_LIMIT = 8190  # aiohttp's longest request line or header, in bytes

schema = (
    schemathesis.openapi.from_path(API_DOCUMENT).include(method="GET").exclude(operation_id=STREAMS)
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway's base URL, in front of a simulator with running builds."""
    with Procs(tmp_path_factory.mktemp("schema-fuzz")) as procs:
        simulator = procs.simulate("--keep-active", "2", "--tick", "0.5")
        gateway = procs.serve(simulator.url)
        yield gateway.url
        assert "Traceback" not in gateway.stderr(), gateway.describe()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,  # one request each over loopback; the whole run is bounded by the count
    suppress_health_check=[HealthCheck.too_slow],
)
def test_every_get_answer_fits_the_document(
    case: schemathesis.Case, live: str, http: requests.Session
) -> None:
    response = case.call(base_url=live, session=http, timeout=10)
    if response.status_code >= 400:
        assert response.headers.get("content-type", [""])[0].startswith("application/json")
        body = json.loads(response.content)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        if body == MALFORMED:
            # The HTTP parser's answer, before any route: on every path, so the document
            # does not list it. Only a request over its limits may get it.
            request = response.request
            longest = max([len(request.path_url), *map(len, request.headers.values())])
            assert longest > LINE_LIMIT, f"{request.method} {request.url} refused as malformed"
            return
    case.validate_response(response, checks=CHECKS)
