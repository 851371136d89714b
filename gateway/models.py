"""Upstream payloads -> the normalised build view.

The models accept every spelling deployed Build Graph Services send (UPSTREAM.md):
snake_case or camelCase fields, three spellings of each enumeration, partition refs
as `{"str": ...}` or plain strings, nanosecond timestamps beyond 2**53. They
normalise on the way in, so everything after them sees one form.

The view functions below them are pure: a model in, the JSON-ready dict of
PROTOCOL.md "The build view" out (camelCase keys, integer milliseconds).

A large build's body is thousands of events, of which a poll brings a few new
ones: `BuildReader` validates only those, and `EventViews` converts only those.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Final

import msgspec
from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

View = dict[str, Any]
"""A JSON-ready dict with PROTOCOL.md's camelCase keys."""


class BuildRequestStatus(StrEnum):
    RECEIVED = "BuildRequestReceived"
    PLANNING = "BuildRequestPlanning"
    EXECUTING = "BuildRequestExecuting"
    COMPLETED = "BuildRequestCompleted"
    FAILED = "BuildRequestFailed"
    CANCELLED = "BuildRequestCancelled"


class PartitionState(StrEnum):
    """UPSTREAM.md's PartitionStatus (renamed here: `PartitionStatus` is the response model)."""

    REQUESTED = "PartitionRequested"
    SCHEDULED = "PartitionScheduled"
    BUILDING = "PartitionBuilding"
    AVAILABLE = "PartitionAvailable"
    FAILED = "PartitionFailed"
    DELEGATED = "PartitionDelegated"


class JobStatus(StrEnum):
    SCHEDULED = "JobScheduled"
    RUNNING = "JobRunning"
    COMPLETED = "JobCompleted"
    FAILED = "JobFailed"
    CANCELLED = "JobCancelled"
    SKIPPED = "JobSkipped"


TERMINAL_BUILD_STATUSES: Final[frozenset[str]] = frozenset(
    {BuildRequestStatus.COMPLETED, BuildRequestStatus.FAILED, BuildRequestStatus.CANCELLED}
)
ACTIVE_BUILD_STATUSES: Final[frozenset[str]] = frozenset(
    {BuildRequestStatus.RECEIVED, BuildRequestStatus.PLANNING, BuildRequestStatus.EXECUTING}
)


def _key(name: str) -> str:
    """The lookup form of a spelling: `BUILD_REQUEST_EXECUTING` and `buildRequestExecuting` meet."""
    return name.replace("_", "").lower()


def _normalise(table: Mapping[str | int, str], value: object) -> object:
    """The prefixed name for a known spelling; an unknown name or number is kept, as a string."""
    if isinstance(value, str):
        return table.get(_key(value), value)
    if type(value) is int:  # not `isinstance`: JSON `true` is no enum index
        return table.get(value, str(value))
    return value  # neither name nor number: the `str` validation rejects it


def _enum_names(enum: type[StrEnum], prefix: str, **aliases: StrEnum) -> BeforeValidator:
    """Normalises to `enum`'s prefixed names, through a table of every accepted spelling.

    Names are matched in any case, prefixed or bare. Integers are read as the
    protobuf numbers the Rust service's enums carry: members in UPSTREAM.md's order
    from 1, 0 being protobuf's "unspecified" (so unknown, kept as "0").
    """
    table: dict[str | int, str] = {
        number: member.value for number, member in enumerate(enum, start=1)
    }
    for name, member in [*((m.value, m) for m in enum), *aliases.items()]:
        table[_key(name)] = table[_key(name.removeprefix(prefix))] = member.value
    return BeforeValidator(partial(_normalise, table))


_BuildStatusName = Annotated[str, _enum_names(BuildRequestStatus, "BuildRequest")]
_PartitionStateName = Annotated[
    str, _enum_names(PartitionState, "Partition", PartitionAnalyzed=PartitionState.SCHEDULED)
]
_JobStatusName = Annotated[str, _enum_names(JobStatus, "Job")]


def _ref(value: object) -> object:
    """A partition ref: `{"str": ref}` in builds and events, a plain string in statuses."""
    if isinstance(value, dict) and "str" in value:
        return value["str"]
    return value


_Ref = Annotated[str, BeforeValidator(_ref)]

_DIGITS = re.compile(r"-?[0-9]+")


def _nanoseconds(value: object) -> int:
    """An exact integer count of nanoseconds: a JSON integer or a decimal string.

    JSON floats are refused, integral or not: the parser has already rounded them to
    53 bits, and any float large enough to be a timestamp in nanoseconds (beyond
    2**53, i.e. after April 1970) may have lost digits that nothing can tell apart.
    The service sends integers; a float means a serialiser that already lost data.
    """
    if type(value) is int:  # not `isinstance`: JSON `true` is no timestamp
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise ValueError("a timestamp must be an integer count of nanoseconds")


_Nanos = Annotated[int, PlainValidator(_nanoseconds)]


class _Upstream(BaseModel):
    """An upstream payload: either spelling of every field, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(
            validation_alias=lambda name: AliasChoices(name, to_camel(name))
        ),
        extra="ignore",
        frozen=True,
    )


class JobRun(_Upstream):
    job_run_id: str | None = None
    job_label: str | None = None
    status: _JobStatusName | None = None
    target_partitions: list[_Ref] = []
    log_lines: list[str] = []


class BuildEvent(_Upstream):
    event_id: str
    timestamp: _Nanos
    message: str = ""
    job: JobRun | None = None
    partition_ref: _Ref | None = None
    partition_status: _PartitionStateName | None = None
    delegated_build_request_id: str | None = None
    # Declared last: its validator infers a missing type from the fields above.
    event_type: str = Field(default="", validate_default=True)

    @field_validator("event_type", mode="before")
    @classmethod
    def _infer_type(cls, value: object, info: ValidationInfo) -> object:
        """A missing or empty type is inferred from the content; any other is kept as is."""
        if value:
            return value
        if info.data.get("job") is not None:
            return "JobEvent"
        if info.data.get("partition_ref") is not None:
            return "PartitionEvent"
        return "Event"  # nothing to infer from: a neutral name, not a guess


class BuildStatus(_Upstream):
    """BuildStatusResponse: one build request, its status and all its events."""

    build_request_id: str
    status: _BuildStatusName
    requested_partitions: list[_Ref] = []
    created_at: _Nanos
    updated_at: _Nanos
    events: list[BuildEvent] = []


class PartitionStatus(_Upstream):
    """PartitionStatusResponse: the current status of one partition."""

    partition_ref: _Ref
    status: _PartitionStateName
    updated_at: _Nanos
    build_requests: list[str] = []
    delegated_build_request_id: str | None = None


class PartitionEvents(_Upstream):
    """PartitionEventsResponse: the events that touched one partition."""

    partition_ref: _Ref
    events: list[BuildEvent] = []


_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_EVENT_LIST = TypeAdapter(list[BuildEvent])


@dataclass(frozen=True, slots=True)
class _Seen:
    build: BuildStatus
    first: bytes  # the raw JSON of its first and last events
    last: bytes


class BuildReader:
    """Parses one build's successive bodies, validating only the events not seen before.

    Pydantic spends about 0.2 s on a body of 10,000 events; msgspec cuts one into
    raw event slices in about 5 ms, without an object per field. A build keeps all
    its events and an event never changes (UPSTREAM.md), so when a body's first
    event and its event at the count seen last are byte for byte the ones seen,
    the events between are the ones already validated and are reused. Any other
    body (fewer events, a rewrite, other spacing) is validated whole.
    """

    def __init__(self) -> None:
        self._seen: _Seen | None = None

    def read(self, body: bytes) -> BuildStatus:
        """`body` as a BuildStatus; pydantic's ValidationError if it is not one."""
        build = self._read_new_events(body)
        if build is None:
            self._seen = None
            # A body the fast path refused: the whole validation says what is wrong,
            # in the body's own terms (`events.3.timestamp`, not a slice's index).
            build = BuildStatus.model_validate_json(body)
        return build

    def _read_new_events(self, body: bytes) -> BuildStatus | None:
        try:
            fields = _TOP_LEVEL.decode(body)
            events = _RAW_LIST.decode(fields.pop("events", b"[]"))
            head = b",".join(msgspec.json.encode(key) + b":" + raw for key, raw in fields.items())
            build = BuildStatus.model_validate_json(b"{" + head + b"}")
            known = self._known(events)
            new = _EVENT_LIST.validate_json(b"[" + b",".join(events[len(known) :]) + b"]")
        except (msgspec.DecodeError, ValidationError):
            return None
        build = build.model_copy(update={"events": [*known, *new]})
        self._seen = _Seen(build, bytes(events[0]), bytes(events[-1])) if events else None
        return build

    def _known(self, events: list[msgspec.Raw]) -> list[BuildEvent]:
        """The events validated before that `events` starts with: all those seen last, or none."""
        seen = self._seen
        if seen is None:
            return []
        count = len(seen.build.events)
        if len(events) < count or bytes(events[count - 1]) != seen.last:
            return []
        return seen.build.events if bytes(events[0]) == seen.first else []


UNKNOWN_PARTITION: Final[View] = {"status": None, "updatedAtMs": None, "delegatedTo": None}
"""The entry of a requested ref whose status is not known yet. Copy it, never mutate it."""


def _ms(nanoseconds: int) -> int:
    return nanoseconds // 1_000_000  # integer division: a float would round beyond 2**53


def _partition_entry(status: str | None, updated_at: int, delegated_to: str | None) -> View:
    return {"status": status, "updatedAtMs": _ms(updated_at), "delegatedTo": delegated_to}


def event_view(event: BuildEvent) -> View:
    """One event of the view; job and partition keys only where the event has them."""
    view: View = {
        "eventId": event.event_id,
        "timestampMs": _ms(event.timestamp),
        "eventType": event.event_type,
        "message": event.message,
    }
    if (job := event.job) is not None:
        view["job"] = {
            "jobRunId": job.job_run_id,
            "jobLabel": job.job_label,
            "status": job.status,
            "targetPartitions": list(job.target_partitions),
            "logLines": list(job.log_lines),
        }
    optional = {
        "partitionRef": event.partition_ref,
        "partitionStatus": event.partition_status,
        "delegatedTo": event.delegated_build_request_id,
    }
    view.update((key, value) for key, value in optional.items() if value is not None)
    return view


def partition_view(status: PartitionStatus) -> View:
    """A partition's entry in the view, from its status response."""
    return _partition_entry(status.status, status.updated_at, status.delegated_build_request_id)


def partitions_from_events(build: BuildStatus) -> dict[str, View]:
    """The entry each requested ref's latest partition event implies.

    Lets a ref show something before its own status request returns. An event counts
    when it names a ref and a partition status, whatever its type. "Latest" is by
    timestamp, ties going to the later event, so an unsorted upstream still works.
    """
    latest: dict[str, BuildEvent] = {}
    _keep_latest(latest, build.events)
    return _implied(latest, build.requested_partitions)


def _keep_latest(latest: dict[str, BuildEvent], events: Iterable[BuildEvent]) -> None:
    for event in events:
        ref = event.partition_ref
        if ref is None or event.partition_status is None:
            continue
        if ref not in latest or event.timestamp >= latest[ref].timestamp:
            latest[ref] = event


def _implied(latest: Mapping[str, BuildEvent], requested: Iterable[str]) -> dict[str, View]:
    return {
        ref: _partition_entry(e.partition_status, e.timestamp, e.delegated_build_request_id)
        for ref in requested
        if (e := latest.get(ref)) is not None
    }


class EventViews:
    """A build's events as its views show them, kept from one poll to the next.

    The upstream only appends events (UPSTREAM.md), so each poll converts only the
    events after the last one converted; if that one is gone or differs, all of
    them again. The event dicts are shared by every view built from them: a view
    is never mutated once built.
    """

    def __init__(self) -> None:
        self._events: list[BuildEvent] = []
        self._views: list[View] = []
        self._latest: dict[str, BuildEvent] = {}  # per ref, as in `partitions_from_events`

    def update(self, events: list[BuildEvent]) -> None:
        """Take a new body's events."""
        count = len(self._events)
        if count and (len(events) < count or events[count - 1] != self._events[count - 1]):
            self._views, self._latest, count = [], {}, 0
        added = events[count:]
        self._views.extend(event_view(event) for event in added)
        _keep_latest(self._latest, added)
        self._events = events

    @property
    def views(self) -> list[View]:
        """The events of the view, as a list of its own (appending to it changes no view)."""
        return list(self._views)

    def partitions(self, requested: Iterable[str]) -> dict[str, View]:
        """`partitions_from_events` of the events taken so far."""
        return _implied(self._latest, requested)


def build_view(
    build: BuildStatus,
    partitions: Mapping[str, View],
    *,
    seq: int,
    stale: bool,
    events: list[View] | None = None,
) -> View:
    """PROTOCOL.md's build view: an entry in `partitions` for every requested ref, in order.

    `events` are the build's events already converted (`EventViews.views`); without
    them, each one is converted here.
    """
    return {
        "buildId": build.build_request_id,
        "seq": seq,
        "status": build.status,
        "createdAtMs": _ms(build.created_at),
        "updatedAtMs": _ms(build.updated_at),
        "requestedPartitions": list(build.requested_partitions),
        "partitions": {
            ref: dict(partitions.get(ref, UNKNOWN_PARTITION)) for ref in build.requested_partitions
        },
        "events": [event_view(event) for event in build.events] if events is None else events,
        "stale": stale,
    }


def summarize(view: View) -> View:
    """What a list of builds shows of one: status, freshness, partition counts."""
    statuses = [p["status"] for p in view["partitions"].values()]
    return {
        "buildId": view["buildId"],
        "status": view["status"],
        "updatedAtMs": view["updatedAtMs"],
        "stale": view["stale"],
        "partitions": {
            "total": len(statuses),
            "available": statuses.count(PartitionState.AVAILABLE),
            "failed": statuses.count(PartitionState.FAILED),
        },
    }
