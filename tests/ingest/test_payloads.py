"""Upstream payloads -> the build view: spellings, enums, timestamps, refs, the view's shape."""

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.ingest.payloads import (
    BuildEvent,
    BuildReader,
    BuildStatusResponse,
    PartitionEventsResponse,
    PartitionStatusResponse,
)
from gateway.ingest.views import (
    LOG_BYTES,
    LOG_LINES,
    EventViews,
    build_view,
    event_view,
    log_tail,
    partition_view,
    partitions_from_events,
)
from gateway.protocol.view import (
    ACTIVE_BUILD_STATUSES,
    TERMINAL_BUILD_STATUSES,
    UNKNOWN_PARTITION,
    BuildRequestStatus,
    JobStatus,
    PartitionStatus,
)

# The upstream's BuildStatusResponse (docs/upstream.md), with every field the models know.
BUILD: dict[str, Any] = {
    "build_request_id": "br-7f3a",
    "status": "BuildRequestExecuting",
    "requested_partitions": [
        {"str": "reviews/date=2026-11-27"},
        {"str": "podcasts/date=2026-11-27"},
    ],
    "created_at": 1795766400000000000,
    "updated_at": 1795766412345678901,
    "events": [
        {
            "event_id": "ev-1",
            "timestamp": 1795766400000000000,
            "event_type": "BuildRequestReceived",
            "message": "Build request received",
        },
        {
            "event_id": "ev-7",
            "timestamp": 1795766405000000000,
            "event_type": "JobEvent",
            "message": "Job started",
            "job": {
                "job_run_id": "jr-2",
                "job_label": "//jobs:ingest_reviews",
                "status": "JobRunning",
                "target_partitions": [{"str": "reviews/date=2026-11-27"}],
                "log_lines": ["fetching 1,204 files", "..."],
            },
        },
        {
            "event_id": "ev-9",
            "timestamp": 1795766406000000000,
            "event_type": "PartitionEvent",
            "message": "Partition delegated",
            "partition_ref": {"str": "podcasts/date=2026-11-27"},
            "partition_status": "PartitionDelegated",
            "delegated_build_request_id": "br-6c01",
        },
    ],
}

PARTITION: dict[str, Any] = {
    "partition_ref": "podcasts/date=2026-11-27",
    "status": "PartitionDelegated",
    "updated_at": 1795766406000000000,
    "build_requests": ["br-7f3a", "br-6c01"],
    "delegated_build_request_id": "br-6c01",
}

DELEGATED = {"status": "PartitionDelegated", "updatedAtMs": 1795766406000, "delegatedTo": "br-6c01"}

EVENT_VIEWS = [
    {
        "eventId": "ev-1",
        "timestampMs": 1795766400000,
        "eventType": "BuildRequestReceived",
        "message": "Build request received",
    },
    {
        "eventId": "ev-7",
        "timestampMs": 1795766405000,
        "eventType": "JobEvent",
        "message": "Job started",
        "job": {
            "jobRunId": "jr-2",
            "jobLabel": "//jobs:ingest_reviews",
            "status": "JobRunning",
            "targetPartitions": ["reviews/date=2026-11-27"],
            "logLines": ["fetching 1,204 files", "..."],
        },
    },
    {
        "eventId": "ev-9",
        "timestampMs": 1795766406000,
        "eventType": "PartitionEvent",
        "message": "Partition delegated",
        "partitionRef": "podcasts/date=2026-11-27",
        "partitionStatus": "PartitionDelegated",
        "delegatedTo": "br-6c01",
    },
]

VIEW = {
    "buildId": "br-7f3a",
    "seq": 42,
    "status": "BuildRequestExecuting",
    "createdAtMs": 1795766400000,
    "updatedAtMs": 1795766412345,
    "requestedPartitions": ["reviews/date=2026-11-27", "podcasts/date=2026-11-27"],
    "partitions": {
        "reviews/date=2026-11-27": UNKNOWN_PARTITION,
        "podcasts/date=2026-11-27": DELEGATED,
    },
    "events": EVENT_VIEWS,
    "stale": False,
    "checkedAtMs": None,
}


def camel(payload: Any) -> Any:
    """`payload` with every key in camelCase, as the TypeScript client spells them."""
    if isinstance(payload, list):
        return [camel(item) for item in payload]
    if isinstance(payload, dict):
        return {
            re.sub(r"_([a-z])", lambda m: m[1].upper(), key): camel(value)
            for key, value in payload.items()
        }
    return payload


def parse_build(payload: Any) -> BuildStatusResponse:
    return BuildStatusResponse.model_validate_json(json.dumps(payload))


def parse_event(**fields: Any) -> BuildEvent:
    return BuildEvent.model_validate_json(json.dumps({"event_id": "e", "timestamp": 0, **fields}))


def test_camel_helper_renames_nested_keys() -> None:
    text = json.dumps(camel(BUILD))
    for key in ("buildRequestId", "jobRunId", "logLines", "delegatedBuildRequestId"):
        assert f'"{key}"' in text
    assert "_" not in "".join(re.findall(r'"(\w+)":', text))


@pytest.mark.parametrize("spell", [lambda p: p, camel], ids=["snake", "camel"])
def test_either_spelling_gives_the_protocol_view(spell: Any) -> None:
    build = parse_build(spell(BUILD))
    assert build_view(build, partitions_from_events(build), seq=42, stale=False) == VIEW


@pytest.mark.parametrize("spell", [lambda p: p, camel], ids=["snake", "camel"])
def test_either_spelling_of_a_partition_status(spell: Any) -> None:
    status = PartitionStatusResponse.model_validate_json(json.dumps(spell(PARTITION)))
    assert partition_view(status) == DELEGATED
    assert status.build_requests == ["br-7f3a", "br-6c01"]


@pytest.mark.parametrize("spell", [lambda p: p, camel], ids=["snake", "camel"])
def test_either_spelling_of_partition_events(spell: Any) -> None:
    payload = {"partition_ref": "podcasts/date=2026-11-27", "events": BUILD["events"]}
    events = PartitionEventsResponse.model_validate_json(json.dumps(spell(payload)))
    assert events.partition_ref == "podcasts/date=2026-11-27"
    assert [event_view(event) for event in events.events] == EVENT_VIEWS


def test_unknown_fields_are_ignored_at_every_level() -> None:
    payload = json.loads(json.dumps(BUILD))
    payload["shiny_new_field"] = {"nested": [1, 2]}
    payload["events"][1]["job"]["config"] = {"args": ["--x"]}
    payload["events"][2]["extra"] = None
    build = parse_build(payload)
    assert build_view(build, partitions_from_events(build), seq=42, stale=False) == VIEW


def _screaming(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


SPELLINGS = [
    (member.value, spelling)
    for enum, prefix in [
        (BuildRequestStatus, "BuildRequest"),
        (PartitionStatus, "Partition"),
        (JobStatus, "Job"),
    ]
    for member in enum
    for spelling in (
        member.value,
        _screaming(member.value),
        member.value.removeprefix(prefix),
        member.value.lower(),
        _screaming(member.value).lower(),
        member.value.removeprefix(prefix).upper(),
    )
]


def _statuses(value: Any) -> tuple[str, str, str | None]:
    """`value` read as a build's, a partition's and a job's status."""
    build = parse_build({**BUILD, "status": value})
    partition = PartitionStatusResponse.model_validate_json(
        json.dumps({**PARTITION, "status": value})
    )
    job = parse_event(job={"status": value}).job
    assert job is not None
    return build.status, partition.status, job.status


@pytest.mark.parametrize(("name", "spelling"), SPELLINGS)
def test_every_enum_spelling_normalises_to_the_prefixed_name(name: str, spelling: str) -> None:
    assert name in _statuses(spelling)


@pytest.mark.parametrize(
    "spelling", ["PartitionAnalyzed", "PARTITION_ANALYZED", "Analyzed", "partition_analyzed"]
)
def test_partition_analyzed_is_partition_scheduled(spelling: str) -> None:
    assert _statuses(spelling)[1] == "PartitionScheduled"


@pytest.mark.parametrize(
    ("number", "names"),
    [
        (1, ("BuildRequestReceived", "PartitionRequested", "JobScheduled")),
        (3, ("BuildRequestExecuting", "PartitionBuilding", "JobCompleted")),
        (6, ("BuildRequestCancelled", "PartitionDelegated", "JobSkipped")),
    ],
)
def test_integer_enums_are_protobuf_numbers(number: int, names: tuple[str, str, str]) -> None:
    assert _statuses(number) == names


@pytest.mark.parametrize(
    ("value", "kept"), [("BuildRequestPaused", "BuildRequestPaused"), (0, "0"), (99, "99")]
)
def test_unknown_enum_values_are_kept_as_strings(value: Any, kept: str) -> None:
    assert _statuses(value) == (kept, kept, kept)


@pytest.mark.parametrize("value", [True, None, {"name": "Executing"}, 3.0])
def test_a_status_that_is_no_name_or_number_is_refused(value: Any) -> None:
    with pytest.raises(ValidationError):
        parse_build({**BUILD, "status": value})


def test_status_sets_split_the_build_statuses() -> None:
    assert set(BuildRequestStatus) == TERMINAL_BUILD_STATUSES | ACTIVE_BUILD_STATUSES
    assert not TERMINAL_BUILD_STATUSES & ACTIVE_BUILD_STATUSES
    assert "BuildRequestCancelled" in TERMINAL_BUILD_STATUSES
    assert parse_build({**BUILD, "status": "PLANNING"}).status in ACTIVE_BUILD_STATUSES


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        ("9007199254740993", 9007199254),  # 2**53 + 1: a float would read ...992
        ("1795766412345678901", 1795766412345),
        ('"1795766412345678901"', 1795766412345),
        ("1795766412345999999", 1795766412345),  # truncated, never rounded up
    ],
)
def test_timestamps_are_exact(raw: str, ms: int) -> None:
    event = BuildEvent.model_validate_json(f'{{"event_id": "e", "timestamp": {raw}}}')
    assert event.timestamp == int(raw.strip('"'))
    assert event_view(event)["timestampMs"] == ms


@pytest.mark.parametrize(
    "raw",
    ["1795766412345678901.0", "1.7957664123456788e18", "12.5", "true", '"1.5e18"', '"12 "', "null"],
)
def test_timestamps_that_are_not_exact_integers_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError, match="integer count of nanoseconds"):
        BuildEvent.model_validate_json(f'{{"event_id": "e", "timestamp": {raw}}}')


@given(st.integers(min_value=0, max_value=2**64))
def test_any_integer_timestamp_becomes_exact_milliseconds(ns: int) -> None:
    event = BuildEvent.model_validate_json(f'{{"eventId": "e", "timestamp": {ns}}}')
    assert event_view(event)["timestampMs"] == ns // 1_000_000


def test_refs_are_accepted_in_either_form_everywhere() -> None:
    mixed = {
        **BUILD,
        "requested_partitions": ["reviews/date=2026-11-27", {"str": "podcasts/date=2026-11-27"}],
    }
    assert parse_build(mixed).requested_partitions == parse_build(BUILD).requested_partitions
    wrapped = {**PARTITION, "partition_ref": {"str": PARTITION["partition_ref"]}}
    assert PartitionStatusResponse.model_validate(
        wrapped
    ) == PartitionStatusResponse.model_validate(PARTITION)
    event = parse_event(partition_ref="a/b", job={"target_partitions": ["c", {"str": "d"}]})
    assert event.partition_ref == "a/b"
    assert event.job is not None and event.job.target_partitions == ["c", "d"]


def test_a_ref_object_without_str_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_event(partition_ref={"string": "a/b"})


def test_missing_optional_fields_have_defaults() -> None:
    minimal = {
        key: BUILD[key] for key in ("build_request_id", "status", "created_at", "updated_at")
    }
    build = parse_build(minimal)
    assert (build.requested_partitions, build.events) == ([], [])
    assert build_view(build, {}, seq=1, stale=True)["partitions"] == {}
    assert event_view(parse_event(event_type="BuildRequestEvent")) == {
        "eventId": "e",
        "timestampMs": 0,
        "eventType": "BuildRequestEvent",
        "message": "",
    }
    assert event_view(parse_event(job={}))["job"] == {
        "jobRunId": None,
        "jobLabel": None,
        "status": None,
        "targetPartitions": [],
        "logLines": [],
    }


@pytest.mark.parametrize(
    ("fields", "event_type"),
    [
        ({"job": {"job_run_id": "jr-1"}}, "JobEvent"),
        ({"job": {"job_run_id": "jr-1"}, "event_type": None}, "JobEvent"),
        ({"job": {"job_run_id": "jr-1"}, "event_type": ""}, "JobEvent"),
        ({"partition_ref": {"str": "a"}, "partition_status": "Building"}, "PartitionEvent"),
        ({"message": "hello"}, "Event"),
        ({"event_type": "QuantumEvent", "partition_ref": "a"}, "QuantumEvent"),
    ],
)
def test_event_type_is_kept_or_inferred(fields: dict[str, Any], event_type: str) -> None:
    assert parse_event(**fields).event_type == event_type
    assert parse_event(**camel(fields)).event_type == event_type


def test_an_unknown_event_type_is_shown_with_its_message() -> None:
    assert event_view(parse_event(event_type="DelegationEvent", message="handed to br-2")) == {
        "eventId": "e",
        "timestampMs": 0,
        "eventType": "DelegationEvent",
        "message": "handed to br-2",
    }


def _partition_event(
    event_id: str, ts: int, ref: str, status: str | None, **more: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "timestamp": ts,
        "partition_ref": {"str": ref},
        "partition_status": status,
        **more,
    }


def test_partitions_from_events_takes_the_latest_event_per_ref() -> None:
    build = parse_build(
        {
            **BUILD,
            "requested_partitions": [{"str": "a"}, {"str": "b"}, {"str": "c"}],
            "events": [
                _partition_event("1", 3_000_000, "a", "PartitionBuilding"),
                _partition_event("2", 1_000_000, "a", "PartitionScheduled"),  # older, listed later
                _partition_event("3", 5_000_000, "b", "PartitionScheduled"),
                _partition_event(
                    "4", 5_000_000, "b", "Delegated", delegated_build_request_id="br-2"
                ),
                _partition_event("5", 9_000_000, "b", None),  # no status: implies nothing
                _partition_event("6", 9_000_000, "elsewhere", "PartitionFailed"),  # not requested
                {"event_id": "7", "timestamp": 9_000_000, "job": {"target_partitions": ["c"]}},
            ],
        }
    )
    assert partitions_from_events(build) == {
        "a": {"status": "PartitionBuilding", "updatedAtMs": 3, "delegatedTo": None},
        "b": {"status": "PartitionDelegated", "updatedAtMs": 5, "delegatedTo": "br-2"},
    }


def test_build_view_has_an_entry_for_every_requested_ref_in_order() -> None:
    refs = ["z", "a", "m/n"]
    build = parse_build({**BUILD, "requested_partitions": refs, "events": []})
    given_entry = {"status": "PartitionAvailable", "updatedAtMs": 7, "delegatedTo": None}
    view = build_view(build, {"a": given_entry, "stranger": given_entry}, seq=3, stale=True)
    assert view["requestedPartitions"] == refs
    assert list(view["partitions"]) == refs
    assert view["partitions"] == {
        "z": UNKNOWN_PARTITION,
        "a": given_entry,
        "m/n": UNKNOWN_PARTITION,
    }
    assert (view["seq"], view["stale"], view["events"]) == (3, True, [])


def test_views_share_no_mutable_state() -> None:
    build = parse_build(BUILD)
    view = build_view(build, {}, seq=1, stale=False)
    view["partitions"]["reviews/date=2026-11-27"]["status"] = "scribbled"
    view["events"][1]["job"]["logLines"].append("scribbled")
    assert UNKNOWN_PARTITION == {"status": None, "updatedAtMs": None, "delegatedTo": None}
    assert build_view(build, {}, seq=1, stale=False)["events"] == EVENT_VIEWS


def test_views_are_plain_json() -> None:
    build = parse_build(BUILD)
    view = build_view(build, partitions_from_events(build), seq=42, stale=False)
    assert json.loads(json.dumps(view)) == view
    assert type(view["status"]) is str


# --- a build read poll after poll: only what is new is validated and converted


def numbered(n: int, message: str = "") -> dict[str, Any]:
    """Event `n`: a partition event every third, else a job event."""
    event: dict[str, Any] = {
        "event_id": f"ev-{n}",
        "timestamp": 1795766400000000000 + n,
        "message": message or f"event {n}",
    }
    ref = {"str": ["reviews/date=2026-11-27", "podcasts/date=2026-11-27"][n % 2]}
    if n % 3 == 0:
        return {**event, "partition_ref": ref, "partition_status": "PartitionBuilding"}
    return {**event, "job": {"job_run_id": f"jr-{n}", "target_partitions": [ref]}}


def body(events: list[dict[str, Any]], *, spaced: bool = False, camel_case: bool = False) -> bytes:
    payload = {**BUILD, "events": events}
    return json.dumps(
        camel(payload) if camel_case else payload, indent=1 if spaced else None
    ).encode()


@st.composite
def bodies(draw: st.DrawFn) -> list[bytes]:
    """A build's successive bodies: mostly appends; sometimes the last, first or all rewritten."""
    events: list[dict[str, Any]] = []
    found = []
    for _ in range(draw(st.integers(1, 8))):
        events = [*events, *(numbered(len(events) + i) for i in range(draw(st.integers(0, 4))))]
        change = draw(st.sampled_from(["append", "append", "last", "first", "fewer", "new"]))
        if events and change == "last":
            events = [*events[:-1], numbered(len(events) - 1, "rewritten")]
        elif events and change == "first":
            events = [numbered(0, "another history"), *events[1:]]
        elif change == "fewer":
            events = events[: draw(st.integers(0, len(events)))]
        elif change == "new":
            events = []
        found.append(body(events, spaced=draw(st.booleans()), camel_case=draw(st.booleans())))
    return found


@given(bodies())
def test_a_reader_gives_what_validating_each_whole_body_gives(found: list[bytes]) -> None:
    reader = BuildReader()
    for raw in found:
        assert reader.read(raw) == BuildStatusResponse.model_validate_json(raw)


def test_a_reader_validates_only_the_events_it_has_not_seen() -> None:
    reader = BuildReader()
    first = reader.read(body([numbered(n) for n in range(1_000)]))
    second = reader.read(body([numbered(n) for n in range(1_005)]))
    assert all(a is b for a, b in zip(first.events, second.events[:1_000], strict=True))
    rewritten = reader.read(body([*(numbered(n) for n in range(1_004)), numbered(1_004, "new")]))
    assert rewritten.events[-1].message == "new"
    assert rewritten.events[0] is not second.events[0], "a rewrite is validated whole"


def test_a_reader_says_where_a_new_event_is_wrong() -> None:
    reader = BuildReader()
    reader.read(body([numbered(n) for n in range(3)]))
    with pytest.raises(ValidationError) as raised:
        reader.read(body([*(numbered(n) for n in range(4)), {**numbered(4), "timestamp": 1.5}]))
    assert raised.value.errors()[0]["loc"] == ("events", 4, "timestamp")
    assert reader.read(body([numbered(n) for n in range(5)])).events[-1].event_id == "ev-4"


def test_event_views_convert_each_event_once_and_start_over_on_a_rewrite() -> None:
    kept = EventViews()
    requested = ["reviews/date=2026-11-27", "podcasts/date=2026-11-27"]
    history: list[list[dict[str, Any]]] = [
        [numbered(n) for n in range(4)],
        [numbered(n) for n in range(9)],
        [*(numbered(n) for n in range(8)), numbered(8, "rewritten")],
        [numbered(n) for n in range(2)],
    ]
    views = []
    for events in history:
        build = parse_build({**BUILD, "events": events})
        kept.update(build.events)
        views.append(kept.views)
        assert views[-1] == [event_view(event) for event in build.events]
        assert kept.partitions(requested) == partitions_from_events(build)
    assert views[1][:4] == views[0] and views[1][0] is views[0][0], "converted once"
    assert views[2][0] is not views[1][0], "converted again after a rewrite"
    views[3].append({"eventId": "scribbled"})
    assert len(kept.views) == 2, "each view has a list of its own"


def test_a_job_log_keeps_its_last_lines_within_the_limits_and_says_how_many_it_left() -> None:
    many = [f"line {n}" for n in range(LOG_LINES + 7)]
    view = event_view(parse_event(job={"log_lines": many}))
    assert view["job"]["logLines"] == many[7:] and view["job"]["truncatedLines"] == 7
    wide = ["é" * 600_000, "tail"]  # 1.2 MB of UTF-8 in its first line alone
    view = event_view(parse_event(job={"log_lines": wide}))
    assert view["job"]["logLines"] == ["tail"] and view["job"]["truncatedLines"] == 1
    view = event_view(parse_event(job={"log_lines": ["short"]}))
    assert "truncatedLines" not in view["job"], "only when something was left out"
    assert sum(len(line.encode()) + 1 for line in log_tail(wide * 3)[0]) <= LOG_BYTES
