"""The simulated Build Graph Service over HTTP: its API (`docs/upstream.md`) and `/_sim/` controls.

The upstream routes answer in the spelling and enum style chosen at creation, with
a strong ETag and `304` on a matching `If-None-Match`. Every upstream request is
counted, may be delayed or answered by an injected fault, and its overlap with
other requests for the same build is measured: tests read in `/_sim/stats` what a
gateway really does to its upstream. The control API is always snake_case JSON and
is neither counted nor faulted.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.protocol.view import BuildRequestStatus, JobStatus, PartitionStatus
from gateway.simulator.model import BuildExists, Simulator, is_valid_build_id, is_valid_ref

log = logging.getLogger(__name__)

ENDPOINTS = ("build", "partition_status", "partition_events")
"""The upstream routes' names, as counted in `/_sim/stats`."""

SPELLINGS = ("snake", "camel")
ENUM_STYLES = ("prefixed", "screaming", "bare")

_ENUM_FIELDS = frozenset({"status", "partition_status", "build_request_status"})
_ENUM_PREFIXES = (
    (BuildRequestStatus, "BuildRequest"),
    (PartitionStatus, "Partition"),
    (JobStatus, "Job"),
)
_WORD_START = re.compile(r"(?<=[a-z])(?=[A-Z])")
_CACHED_BODIES = 32  # builds whose encoded body is kept: at most ~2x a body each


class _Wire:
    """One deployment's wire form: field spelling and enum style, applied while encoding."""

    def __init__(self, spelling: str, enum_style: str) -> None:
        if spelling not in SPELLINGS or enum_style not in ENUM_STYLES:
            raise ValueError(f"spelling is one of {SPELLINGS}, enum_style one of {ENUM_STYLES}")
        self._camel = spelling == "camel"
        self._enums = {
            member.value: _enum_name(member.value, prefix, enum_style)
            for enum, prefix in _ENUM_PREFIXES
            for member in enum
        }
        self._as_is = spelling == "snake" and enum_style == "prefixed"  # the model's own form

    def encode(self, payload: Any) -> bytes:
        if not self._as_is:
            payload = self._convert(payload)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def _convert(self, value: Any) -> Any:
        # Enum values are renamed by field, never by value: a log line may read "JobFailed".
        if isinstance(value, dict):
            return {
                _camel_case(key) if self._camel else key: (
                    self._enums.get(item, item) if key in _ENUM_FIELDS else self._convert(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._convert(item) for item in value]
        return value


def _enum_name(name: str, prefix: str, style: str) -> str:
    if style == "bare":
        return name.removeprefix(prefix)
    if style == "screaming":
        return _WORD_START.sub("_", name).upper()
    return name


@lru_cache(maxsize=256)
def _camel_case(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.capitalize() for word in rest)


@dataclass(eq=False)
class _EncodedBuild:
    first_event_id: str  # tells a build from a later one that reuses its id
    version: int
    events: list[bytes]
    body: bytes
    etag: str


class _BuildBodies:
    """Encoded build bodies, for the `size` builds read most recently.

    Encoding a build of thousands of events is the one costly thing this server
    does. Events are append-only, so a new version encodes only the events added
    since the cached one, and an unchanged build is not encoded at all.
    """

    def __init__(self, wire: _Wire, size: int) -> None:
        self._wire = wire
        self._size = size
        self._entries: OrderedDict[str, _EncodedBuild] = OrderedDict()

    def get(self, sim: Simulator, build_id: str) -> tuple[bytes, str]:
        """The body and ETag of the build's current version; KeyError if unknown."""
        version = sim.version(build_id)
        entry = self._entries.get(build_id)
        if entry is None or entry.version != version:
            entry = self._encode(sim.build_json(build_id), version, entry)
            self._entries[build_id] = entry
        self._entries.move_to_end(build_id)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return entry.body, entry.etag

    def _encode(
        self, build: dict[str, Any], version: int, previous: _EncodedBuild | None
    ) -> _EncodedBuild:
        events = build.pop("events")  # the model puts them last; so does the body
        first = events[0]["event_id"]  # every build has its Received event
        parts = previous.events if previous and previous.first_event_id == first else []
        parts.extend(self._wire.encode(event) for event in events[len(parts) :])
        body = self._wire.encode(build)[:-1] + b',"events":[' + b",".join(parts) + b"]}"
        return _EncodedBuild(first, version, parts, body, _etag(body))


def _etag(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


@dataclass(eq=False)
class _Stats:
    """Upstream requests by endpoint and build, and the most served at once per build."""

    endpoints: Counter[str] = field(default_factory=Counter)
    builds: Counter[str] = field(default_factory=Counter)
    max_concurrent: dict[str, int] = field(default_factory=dict)
    _in_flight: Counter[str] = field(default_factory=Counter)

    @contextlib.contextmanager
    def serving(self, endpoint: str, build_id: str | None) -> Iterator[None]:
        self.endpoints[endpoint] += 1
        if build_id is not None:
            self.builds[build_id] += 1
            self._in_flight[build_id] += 1
            self.max_concurrent[build_id] = max(
                self.max_concurrent.get(build_id, 0), self._in_flight[build_id]
            )
        try:
            yield
        finally:
            if build_id is not None:
                self._in_flight[build_id] -= 1
                if not self._in_flight[build_id]:
                    del self._in_flight[build_id]

    def reset(self) -> None:
        # Requests in flight stay counted as such: they are still being served.
        self.endpoints.clear()
        self.builds.clear()
        self.max_concurrent.clear()

    def json(self) -> dict[str, Any]:
        return {
            "total": sum(self.endpoints.values()),
            "endpoints": {name: self.endpoints[name] for name in ENDPOINTS},
            "builds": dict(self.builds),
            "max_concurrent": dict(self.max_concurrent),
        }


class _ControlBody(BaseModel):
    # Strict: `"4"` is no count and `true` no number; unknown fields are typos, refused.
    model_config = ConfigDict(strict=True, extra="forbid")


class _BuildSpec(_ControlBody):
    partitions: int | list[str] = 4
    id: str | None = None
    fail: list[str] = []
    delegate: list[str] = []
    log_lines: int = 3
    hostile: bool = False


class _Steps(_ControlBody):
    steps: int = Field(1, ge=1, le=100_000)


class _Fault(_ControlBody):
    """What the next `count` upstream requests get (all of them while `count` is None).

    `delay` applies first; then `status` if set, else `body` if set (with status 200
    and a JSON content type, the nastiest case), else the true answer.
    """

    delay: float = Field(0.0, ge=0, le=600)
    status: int | None = Field(None, ge=400, le=599)
    count: int | None = Field(None, ge=1)
    body: str | None = None


@dataclass(eq=False)
class _Service:
    wire: _Wire
    bodies: _BuildBodies
    stats: _Stats = field(default_factory=_Stats)
    fault: _Fault | None = None
    fault_left: int | None = None

    def take_fault(self) -> _Fault | None:
        fault = self.fault
        if fault is not None and self.fault_left is not None:
            self.fault_left -= 1
            if not self.fault_left:
                self.fault = None
        return fault


SIMULATOR = web.AppKey("simulator", Simulator)
_SERVICE = web.AppKey("simulator_service", _Service)


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


# --- the upstream API


@web.middleware
async def _upstream_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, fault and measure the upstream routes; let every other route through."""
    endpoint = request.match_info.route.name
    if endpoint not in ENDPOINTS:
        return await handler(request)
    service = request.app[_SERVICE]
    fault = service.take_fault()
    with service.stats.serving(endpoint, request.match_info.get("build_id")):
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return web.json_response({"error": "injected fault"}, status=fault.status)
            if fault.body is not None:
                return web.Response(text=fault.body, content_type="application/json")
        return await handler(request)


async def _get_build(request: web.Request) -> web.Response:
    build_id = request.match_info["build_id"]
    if not is_valid_build_id(build_id):
        raise _error(web.HTTPBadRequest, "malformed build request id")
    try:
        body, etag = request.app[_SERVICE].bodies.get(request.app[SIMULATOR], build_id)
    except KeyError:
        raise _error(web.HTTPNotFound, f"no build request {build_id}") from None
    return _conditional(request, body, etag)


async def _get_partition_status(request: web.Request) -> web.Response:
    return _partition_reply(request, Simulator.partition_status_json)


async def _get_partition_events(request: web.Request) -> web.Response:
    return _partition_reply(request, Simulator.partition_events_json)


def _partition_reply(
    request: web.Request, read: Callable[[Simulator, str], dict[str, Any]]
) -> web.Response:
    # aiohttp matches `{ref}` on the raw path and then percent-decodes the segment,
    # so an encoded `/` (%2F) stays inside the ref instead of splitting the path.
    ref = request.match_info["ref"]
    if not is_valid_ref(ref):
        raise _error(web.HTTPBadRequest, "malformed partition ref")
    try:
        payload = read(request.app[SIMULATOR], ref)
    except KeyError:
        raise _error(web.HTTPNotFound, f"no partition {ref}") from None
    body = request.app[_SERVICE].wire.encode(payload)
    return _conditional(request, body, _etag(body))


def _conditional(request: web.Request, body: bytes, etag: str) -> web.Response:
    """`304` when If-None-Match names our ETag (weak comparison, RFC 9110), else the body."""
    if any(tag.value in (etag, "*") for tag in request.if_none_match or ()):
        response = web.Response(status=304)
    else:
        response = web.Response(body=body, content_type="application/json")
    response.etag = etag
    return response


# --- the control API


_Spec = TypeVar("_Spec", bound=_ControlBody)


async def _parse(request: web.Request, spec: type[_Spec]) -> _Spec:
    """The request's JSON body as `spec`; an empty body means every default."""
    body = await request.read()
    try:
        return spec.model_validate_json(body if body.strip() else b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise _error(web.HTTPBadRequest, f"{where}: {first['msg']}") from None


def _known_build(request: web.Request) -> str:
    build_id = request.match_info["build_id"]
    if build_id not in request.app[SIMULATOR].build_ids():
        raise _error(web.HTTPNotFound, f"no build request {build_id}")
    return build_id


def _build_reply(sim: Simulator, build_id: str) -> web.Response:
    return web.json_response({"build_request_id": build_id, "status": sim.status(build_id)})


async def _create_build(request: web.Request) -> web.Response:
    spec = await _parse(request, _BuildSpec)
    try:
        build_id = request.app[SIMULATOR].create_build(
            spec.partitions,
            build_id=spec.id,
            fail=spec.fail,
            delegate=spec.delegate,
            log_lines=spec.log_lines,
            hostile=spec.hostile,
        )
    except BuildExists as exc:
        raise _error(web.HTTPConflict, str(exc)) from None
    except ValueError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
    return web.json_response({"build_request_id": build_id}, status=201)


async def _list_builds(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response(
        [{"build_request_id": b, "status": sim.status(b)} for b in sim.build_ids()]
    )


async def _advance(request: web.Request) -> web.Response:
    build_id = _known_build(request)
    steps = (await _parse(request, _Steps)).steps
    request.app[SIMULATOR].advance(build_id, steps)
    return _build_reply(request.app[SIMULATOR], build_id)


async def _finish(request: web.Request) -> web.Response:
    build_id = _known_build(request)
    request.app[SIMULATOR].finish(build_id)
    return _build_reply(request.app[SIMULATOR], build_id)


async def _cancel(request: web.Request) -> web.Response:
    build_id = _known_build(request)
    request.app[SIMULATOR].cancel(build_id)
    return _build_reply(request.app[SIMULATOR], build_id)


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_SERVICE].stats.json())


async def _reset_stats(request: web.Request) -> web.Response:
    request.app[_SERVICE].stats.reset()
    return web.Response(status=204)


async def _set_fault(request: web.Request) -> web.Response:
    fault = await _parse(request, _Fault)
    service = request.app[_SERVICE]
    service.fault, service.fault_left = fault, fault.count
    return web.json_response(fault.model_dump())


async def _clear_fault(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    service.fault = service.fault_left = None
    return web.Response(status=204)


# --- the app


def create_simulator_app(
    sim: Simulator,
    *,
    spelling: str = "snake",
    enum_style: str = "prefixed",
    tick: float | None = None,
    keep_active: int = 0,
) -> web.Application:
    """The simulator's app. With `tick`, a background task ticks `sim` every `tick`
    seconds and, with `keep_active`, keeps that many lively demo builds running."""
    if tick is not None and tick <= 0:
        raise ValueError("tick must be positive")
    if keep_active and tick is None:
        raise ValueError("keep_active needs tick: nothing would move the builds")
    app = web.Application(middlewares=[_upstream_gate])
    app[SIMULATOR] = sim
    wire = _Wire(spelling, enum_style)
    app[_SERVICE] = _Service(wire, _BuildBodies(wire, _CACHED_BODIES))
    app.router.add_get("/api/v1/builds/{build_id}", _get_build, name="build")
    app.router.add_get(
        "/api/v1/partitions/{ref:[^/]+}/status", _get_partition_status, name="partition_status"
    )
    app.router.add_get(
        "/api/v1/partitions/{ref:[^/]+}/events", _get_partition_events, name="partition_events"
    )
    app.router.add_get("/_sim/builds", _list_builds)
    app.router.add_post("/_sim/builds", _create_build)
    app.router.add_post("/_sim/builds/{build_id}/advance", _advance)
    app.router.add_post("/_sim/builds/{build_id}/finish", _finish)
    app.router.add_post("/_sim/builds/{build_id}/cancel", _cancel)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_post("/_sim/stats/reset", _reset_stats)
    app.router.add_post("/_sim/faults", _set_fault)
    app.router.add_delete("/_sim/faults", _clear_fault)
    if tick is not None:
        app.cleanup_ctx.append(_auto_advance(tick, keep_active))
    return app


def _auto_advance(
    tick: float, keep_active: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_tick_forever(app[SIMULATOR], tick, keep_active))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run


async def _tick_forever(sim: Simulator, tick: float, keep_active: int) -> None:
    while True:
        try:
            if keep_active:
                sim.keep_lively(keep_active)
            sim.tick()
        except Exception:
            # A bug in one tick must not freeze a demo for good: log it, try the next.
            log.exception("simulator tick failed")
        await asyncio.sleep(tick)
