"""The Build Graph Service's payloads, validated and normalised on the way in.

The models accept every spelling deployed services send (`docs/upstream.md`):
snake_case or camelCase fields, three spellings of each enumeration, partition refs
as `{"str": ...}` or plain strings, nanosecond timestamps beyond 2**53. They
normalise on the way in, so everything after them sees one form; `views` turns
them into the protocol's view.

A large build's body is thousands of events, of which a poll brings a few new
ones: `BuildReader` validates only those.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Annotated

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

from gateway.protocol.view import BuildRequestStatus, JobStatus, PartitionStatus


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
    protobuf numbers the Rust service's enums carry: members in the order of `docs/upstream.md`
    from 1, 0 being protobuf's "unspecified" (so unknown, kept as "0").
    """
    table: dict[str | int, str] = {
        number: member.value for number, member in enumerate(enum, start=1)
    }
    for name, member in [*((m.value, m) for m in enum), *aliases.items()]:
        table[_key(name)] = table[_key(name.removeprefix(prefix))] = member.value
    return BeforeValidator(partial(_normalise, table))


_BuildStatusName = Annotated[str, _enum_names(BuildRequestStatus, "BuildRequest")]
_PartitionStatusName = Annotated[
    str, _enum_names(PartitionStatus, "Partition", PartitionAnalyzed=PartitionStatus.SCHEDULED)
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
    partition_status: _PartitionStatusName | None = None
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


class BuildStatusResponse(_Upstream):
    """BuildStatusResponse: one build request, its status and all its events."""

    build_request_id: str
    status: _BuildStatusName
    requested_partitions: list[_Ref] = []
    created_at: _Nanos
    updated_at: _Nanos
    events: list[BuildEvent] = []


class PartitionStatusResponse(_Upstream):
    """PartitionStatusResponse: the current status of one partition."""

    partition_ref: _Ref
    status: _PartitionStatusName
    updated_at: _Nanos
    build_requests: list[str] = []
    delegated_build_request_id: str | None = None


class PartitionEventsResponse(_Upstream):
    """PartitionEventsResponse: the events that touched one partition."""

    partition_ref: _Ref
    events: list[BuildEvent] = []


_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_EVENT_LIST = TypeAdapter(list[BuildEvent])


@dataclass(frozen=True, slots=True)
class _Seen:
    build: BuildStatusResponse
    first: bytes  # the raw JSON of its first and last events
    last: bytes


class BuildReader:
    """Parses one build's successive bodies, validating only the events not seen before.

    Pydantic spends about 0.2 s on a body of 10,000 events; msgspec cuts one into
    raw event slices in about 5 ms, without an object per field. A build keeps all
    its events and an event never changes (`docs/upstream.md`), so when a body's first
    event and its event at the count seen last are byte for byte the ones seen,
    the events between are the ones already validated and are reused. Any other
    body (fewer events, a rewrite, other spacing) is validated whole.
    """

    def __init__(self) -> None:
        self._seen: _Seen | None = None

    def read(self, body: bytes) -> BuildStatusResponse:
        """`body` as a BuildStatusResponse; pydantic's ValidationError if it is not one."""
        build = self._read_new_events(body)
        if build is None:
            self._seen = None
            # A body the fast path refused: the whole validation says what is wrong,
            # in the body's own terms (`events.3.timestamp`, not a slice's index).
            build = BuildStatusResponse.model_validate_json(body)
        return build

    def _read_new_events(self, body: bytes) -> BuildStatusResponse | None:
        try:
            fields = _TOP_LEVEL.decode(body)
            events = _RAW_LIST.decode(fields.pop("events", b"[]"))
            head = b",".join(msgspec.json.encode(key) + b":" + raw for key, raw in fields.items())
            build = BuildStatusResponse.model_validate_json(b"{" + head + b"}")
            known = self._known(events)
            new = _EVENT_LIST.validate_json(b"[" + b",".join(events[len(known) :]) + b"]")
        except (msgspec.DecodeError, ValidationError, RecursionError):
            return None  # the whole validation below says what is wrong
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
