"""Whatever the upstream sends, the parser returns a model or raises pydantic's ValidationError,
and the client returns or raises an UpstreamError: never a KeyError, TypeError, ...

Bodies are built field by field: each field right, wrong in type, missing, spelled in
snake_case or camelCase or both; enums in every spelling, unknown names and numbers;
timestamps as huge integers, floats, digit strings; refs in both forms; unknown fields;
nesting up to the depth pydantic refuses; and raw bytes, truncated JSON, NaN. The client
is driven through `httpx.MockTransport`: fuzzed statuses, headers and bodies, and the
transport's own failures. Every property runs a bounded number of examples.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from gateway import errors
from gateway.ingest import payloads
from gateway.ingest.upstream import Fetched, UpstreamClient
from gateway.protocol.view import BuildRequestStatus, JobStatus, PartitionStatus

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSER_DEPTH = 300
"""Nesting the properties go up to: past pydantic's limit (255 levels), well under Python's
recursion limit (1,000 frames, the caller's included): deeper bodies have tests of their own
(`test_deep_nesting_in_a_build_is_a_validation_error`)."""


# --- JSON text, including what `json.dumps` will not write


@dataclass(frozen=True)
class Literal:
    """JSON text placed as is: a 5,000-digit number, `NaN`, a nesting 300 deep."""

    text: str


def encode(value: Any) -> str:
    if isinstance(value, Literal):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(item) for item in value) + "]"
    return json.dumps(value)


def nested(depth: int) -> Literal:
    return Literal("[" * depth + "]" * depth)


big_numbers = st.one_of(
    st.integers(min_value=-(2**200), max_value=2**200),
    st.integers(min_value=1, max_value=6000).map(lambda n: Literal("9" * n)),  # past 4,300
    st.sampled_from([Literal("1e400"), Literal("-0"), Literal("NaN"), Literal("Infinity")]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_numbers,
    st.floats(),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
) | st.integers(min_value=1, max_value=PARSER_DEPTH).map(nested)


def spellings(enum: type[Any], prefix: str) -> list[str]:
    """Every spelling deployed services send: prefixed, bare, SCREAMING, in any case."""
    names = []
    for member in enum:
        bare = member.value.removeprefix(prefix)
        names += [member.value, bare, bare.upper(), member.value.lower()]
        names.append(
            "".join(f"_{c}" if c.isupper() else c for c in member.value).strip("_").upper()
        )
    return names


def enum_values(enum: type[Any], prefix: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(spellings(enum, prefix)),
        st.integers(min_value=-3, max_value=len(enum) + 3),  # protobuf numbers, 0 and beyond
        st.text(max_size=12).map(lambda text: f"Vendor{text}"),  # unknown: kept as is
    )


@dataclass(frozen=True)
class Field:
    """A field's right values (for the model) and its wrong ones."""

    right: st.SearchStrategy[Any]
    wrong: st.SearchStrategy[Any] = json_values


TEXT = Field(st.text(max_size=30))
TIMESTAMP = Field(
    st.integers(min_value=0, max_value=2**64) | st.integers(0, 2**70).map(str),
    st.one_of(big_numbers, st.floats(), st.text(max_size=12), st.booleans(), json_values),
)
REF = Field(st.text(max_size=30) | st.fixed_dictionaries({"str": st.text(max_size=30)}))


def listed(field: Field, size: int = 3) -> Field:
    return Field(
        st.lists(field.right, max_size=size), json_values | st.lists(field.wrong, max_size=2)
    )


@st.composite
def payload(draw: st.DrawFn, fields: dict[str, Field]) -> dict[str, Any]:
    """An object of `fields`: each usually right, in either spelling or both, sometimes
    missing or wrong; plus unknown fields."""
    found: dict[str, Any] = {}
    for name, field in fields.items():
        how = draw(st.sampled_from(["snake"] * 5 + ["camel"] * 3 + ["both", "missing", "wrong"]))
        values = field.wrong if how == "wrong" else field.right
        if how in ("snake", "both", "wrong"):
            found[name] = draw(values)
        if how in ("camel", "both") and to_camel(name) != name:
            found[to_camel(name)] = draw(values)
    found.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return found


JOB = {
    "job_run_id": TEXT,
    "job_label": TEXT,
    "status": Field(enum_values(JobStatus, "Job")),
    "target_partitions": listed(REF),
    "log_lines": listed(TEXT),
}
EVENT = {
    "event_id": TEXT,
    "timestamp": TIMESTAMP,
    "message": TEXT,
    "job": Field(payload(JOB)),
    "partition_ref": REF,
    "partition_status": Field(enum_values(PartitionStatus, "Partition")),
    "delegated_build_request_id": TEXT,
    "event_type": TEXT,
}
BUILD = {
    "build_request_id": TEXT,
    "status": Field(enum_values(BuildRequestStatus, "BuildRequest")),
    "requested_partitions": listed(REF, 4),
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "events": listed(Field(payload(EVENT)), 4),
}
PARTITION = {
    "partition_ref": REF,
    "status": Field(enum_values(PartitionStatus, "Partition")),
    "updated_at": TIMESTAMP,
    "build_requests": listed(TEXT),
    "delegated_build_request_id": TEXT,
}
EVENTS = {"partition_ref": REF, "events": listed(Field(payload(EVENT)))}


def bodies(fields: dict[str, Field]) -> st.SearchStrategy[bytes]:
    """A payload's bytes (mostly), or the same cut short, any JSON, or any bytes at all."""
    whole = payload(fields).map(lambda value: encode(value).encode())
    return st.one_of(
        whole,
        whole,
        whole,
        st.tuples(whole, st.integers(min_value=0)).map(
            lambda cut: cut[0][: cut[1] % (len(cut[0]) + 1)]
        ),
        json_values.map(lambda value: encode(value).encode()),
        st.binary(max_size=64),
    )


# --- the parsers


def parses_or_refuses(parse: Callable[[bytes], Any], body: bytes) -> Any:
    """The model, or None when pydantic refused the body: nothing else may come out."""
    try:
        model = parse(body)
    except ValidationError:
        event("refused")
        return None
    event("parsed")
    return model


@FUZZ
@given(bodies(BUILD))
def test_a_build_body_is_a_model_or_a_validation_error(body: bytes) -> None:
    build = parses_or_refuses(payloads.BuildReader().read, body)
    assert build is None or isinstance(build, payloads.BuildStatusResponse)
    whole = parses_or_refuses(payloads.BuildStatusResponse.model_validate_json, body)
    assert build == whole, "the fast path and the whole validation agree"


@FUZZ
@given(bodies(PARTITION))
def test_a_partition_status_body_is_a_model_or_a_validation_error(body: bytes) -> None:
    found = parses_or_refuses(payloads.PartitionStatusResponse.model_validate_json, body)
    assert found is None or isinstance(found, payloads.PartitionStatusResponse)


@FUZZ
@given(bodies(EVENTS))
def test_a_partition_events_body_is_a_model_or_a_validation_error(body: bytes) -> None:
    found = parses_or_refuses(payloads.PartitionEventsResponse.model_validate_json, body)
    assert found is None or isinstance(found, payloads.PartitionEventsResponse)


@settings(FUZZ, max_examples=60)
@given(st.lists(bodies(BUILD), min_size=2, max_size=5))
def test_a_reader_that_saw_other_bodies_reads_each_as_a_fresh_one_would(
    sequence: list[bytes],
) -> None:
    """The reader reuses the events it validated before: never wrongly."""
    reader = payloads.BuildReader()
    for body in sequence:
        assert parses_or_refuses(reader.read, body) == parses_or_refuses(
            payloads.BuildReader().read, body
        )


VALID_BUILD: dict[str, Any] = {
    "build_request_id": "br-7f3a",
    "status": "BuildRequestExecuting",
    "requested_partitions": [{"str": "reviews/date=2026-11-27"}],
    "created_at": 1795766400000000000,
    "updated_at": 1795766412345678901,
    "events": [
        {
            "event_id": "ev-1",
            "timestamp": 1795766400000000000,
            "event_type": "JobEvent",
            "message": "Job started",
            "job": {"job_run_id": "jr-2", "status": "JobRunning", "log_lines": ["x"]},
        }
    ],
}


def camel_case(value: Any) -> Any:
    if isinstance(value, dict):
        return {to_camel(key): camel_case(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_case(item) for item in value]
    return value


@FUZZ
@given(st.lists(st.booleans(), min_size=6, max_size=6), st.text(max_size=12))
def test_spellings_mixed_field_by_field_read_the_same_and_unknown_statuses_stay(
    camel: list[bool], unknown: str
) -> None:
    status = f"Vendor{unknown}"
    build = {**VALID_BUILD, "status": status}
    mixed = {
        (to_camel(key) if use else key): (camel_case(value) if use else value)
        for (key, value), use in zip(build.items(), camel, strict=True)
    }
    read = payloads.BuildReader().read(json.dumps(mixed).encode())
    assert read == payloads.BuildReader().read(json.dumps(build).encode())
    assert read.status == status, "an unknown enum value is kept as it came"


@pytest.mark.parametrize(
    "timestamp", ["1795766400.5", "1.7957664e18", "1795766400000000000.0", "true", "null"]
)
def test_a_timestamp_that_is_no_integer_is_refused(timestamp: str) -> None:
    body = json.dumps(VALID_BUILD).replace("1795766400000000000", timestamp, 1).encode()
    with pytest.raises(ValidationError):
        payloads.BuildReader().read(body)


@pytest.mark.parametrize("digits", [20, 300, 4000])
def test_huge_integer_timestamps_are_kept_exactly(digits: int) -> None:
    huge = "9" * digits
    body = json.dumps(VALID_BUILD).replace("1795766400000000000", huge, 1).encode()
    assert payloads.BuildReader().read(body).created_at == int(huge)


DEEP = [1000, 5000, 100_000]


@pytest.mark.parametrize("depth", DEEP)
def test_deep_nesting_in_a_partition_status_is_a_validation_error(depth: int) -> None:
    body = encode({"partition_ref": "r", "status": "s", "updated_at": 1, "x": nested(depth)})
    with pytest.raises(ValidationError):
        payloads.PartitionStatusResponse.model_validate_json(body.encode())


@pytest.mark.parametrize("depth", DEEP)
def test_deep_nesting_in_a_build_is_a_validation_error(depth: int) -> None:
    body = encode({**VALID_BUILD, "x": nested(depth)})
    with pytest.raises(ValidationError):
        payloads.BuildReader().read(body.encode())


# --- the client, through a mock transport


FAILURES = [
    httpx.ConnectError("refused"),
    httpx.ConnectTimeout("no SYN-ACK"),
    httpx.ReadTimeout("silence"),
    httpx.ReadError("reset"),
    httpx.WriteError("broken pipe"),
    httpx.PoolTimeout("pool full"),
    httpx.RemoteProtocolError("not HTTP"),
    httpx.DecodingError("bad gzip"),
    httpx.TooManyRedirects("loop"),
]

header_names = st.sampled_from(
    [b"Content-Type", b"ETag", b"Content-Encoding", b"Content-Length", b"X-Junk", b"Vary"]
)
header_values = st.one_of(
    st.sampled_from([b"gzip", b"deflate", b"br", b"zstd", b"identity", b"application/json"]),
    st.binary(max_size=20).filter(lambda value: b"\r" not in value and b"\n" not in value),
)
content_lengths = st.one_of(
    st.integers(min_value=0, max_value=2**70).map(lambda n: str(n).encode()),
    st.text(alphabet="0123456789 -+abc,", max_size=8).map(str.encode),  # what h11 lets through
)
headers = st.lists(
    st.one_of(
        st.tuples(header_names, header_values),
        st.tuples(st.just(b"Content-Length"), content_lengths),
    ),
    max_size=4,
)
statuses = st.one_of(
    st.sampled_from([200, 200, 200, 304, 400, 404, 500, 503]), st.integers(100, 599)
)


@dataclass(frozen=True)
class Upstream:
    """What the mock upstream answers: a failure, or a status, headers and a body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    failure: Exception | None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.failure is not None:
            raise self.failure
        return httpx.Response(self.status, headers=self.headers, content=self.body)


def upstreams(fields: dict[str, Field]) -> st.SearchStrategy[Upstream]:
    failure = st.none() | st.none() | st.none() | st.sampled_from(FAILURES)
    return st.builds(Upstream, statuses, headers, bodies(fields), failure)


async def ask(upstream: Upstream, call: str, etag: str | None, max_bytes: int) -> Any:
    client = UpstreamClient(
        "http://upstream.test",
        transport=httpx.MockTransport(upstream.handle),
        max_bytes=max_bytes,
        timeout=1,
        deadline=2,
    )
    try:
        if call == "build":
            return await client.build("br-7f3a", etag=etag)
        if call == "partition_status":
            return await client.partition_status("reviews/date=2026-11-27", etag=etag)
        return await client.partition_events("reviews/date=2026-11-27")
    finally:
        await client.aclose()


def outcome(upstream: Upstream, call: str, etag: str | None, max_bytes: int = 1 << 20) -> Any:
    """The client's answer or error; any other exception fails the test."""
    try:
        result = asyncio.run(ask(upstream, call, etag, max_bytes))
    except errors.UpstreamError as exc:
        result = exc
    if currently_in_test_context():
        event(type(result).__name__)  # for --hypothesis-show-statistics
    return result


def check(upstream: Upstream, call: str, etag: str | None, result: Any) -> None:
    """The error (or answer) the status calls for."""
    status = upstream.status
    encoded = upstream.body and any(name == b"Content-Encoding" for name, _ in upstream.headers)
    transient = (errors.UpstreamUnavailable, errors.UpstreamTimeout)
    if upstream.failure is not None or (encoded and type(result) in transient):
        # The transport failed, or could not decode the body (MockTransport reads it whole).
        assert type(result) in transient, result
    elif status == 304 and etag is not None and call != "partition_events":
        assert isinstance(result, Fetched) and result.body is None, result
    elif status == 404:
        assert isinstance(result, errors.UpstreamNotFound), result
    elif status == 400:
        assert isinstance(result, errors.UpstreamBadRequest), result
    elif not 200 <= status < 300:
        assert type(result) is errors.UpstreamUnavailable, result
    else:  # a body: the model, or it was not one (or too large)
        assert isinstance(
            result, Fetched | payloads.PartitionEventsResponse | errors.UpstreamInvalid
        ), result


etags = st.none() | st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=10
)


@FUZZ
@given(upstreams(BUILD), etags, st.sampled_from([64, 1 << 20]))
def test_the_client_reading_a_build_raises_only_upstream_errors(
    upstream: Upstream, etag: str | None, max_bytes: int
) -> None:
    result = outcome(upstream, "build", etag, max_bytes)
    check(upstream, "build", etag, result)
    if isinstance(result, Fetched) and result.body is not None:
        assert isinstance(result.body, payloads.BuildStatusResponse)


@FUZZ
@given(upstreams(PARTITION), etags)
def test_the_client_reading_a_partition_status_raises_only_upstream_errors(
    upstream: Upstream, etag: str | None
) -> None:
    result = outcome(upstream, "partition_status", etag)
    check(upstream, "partition_status", etag, result)
    if isinstance(result, Fetched) and result.body is not None:
        assert isinstance(result.body, payloads.PartitionStatusResponse)


@FUZZ
@given(upstreams(EVENTS))
def test_the_client_reading_partition_events_raises_only_upstream_errors(
    upstream: Upstream,
) -> None:
    check(upstream, "partition_events", None, outcome(upstream, "partition_events", None))


def test_a_body_over_the_limit_is_invalid_whatever_its_declared_length() -> None:
    body = json.dumps(VALID_BUILD).encode()
    for declared in ([], [(b"Content-Length", b"10")], [(b"Content-Length", b"99999999999")]):
        upstream = Upstream(200, declared, body, None)
        assert isinstance(outcome(upstream, "build", None, max_bytes=64), errors.UpstreamInvalid)


def test_a_content_length_of_superscript_digits_is_an_upstream_error() -> None:
    upstream = Upstream(200, [(b"Content-Length", "²".encode())], b"{}", None)
    assert isinstance(outcome(upstream, "build", None), errors.UpstreamError)


def test_a_deeply_nested_build_is_an_upstream_error() -> None:
    body = encode({**VALID_BUILD, "x": nested(5000)}).encode()
    upstream = Upstream(200, [], body, None)
    assert isinstance(outcome(upstream, "build", None), errors.UpstreamInvalid)
