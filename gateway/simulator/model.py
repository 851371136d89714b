"""The simulated builds: a pure, deterministic state machine, no I/O.

Everything random comes from one `random.Random(seed)` and every timestamp from
the injected clock, so a seed, a clock and a sequence of calls give the same JSON
every time. Events are append-only: an event dict, once emitted, is never mutated,
so builds and partitions share them and the server can cache a body per version.

One `advance` step is one small visible change:

    Received -> Planning   (a PartitionRequested or PartitionDelegated event per ref)
    Planning -> Executing
    Executing              every job in flight moves one stage, then one new job
                           starts if fewer than PARALLEL_JOBS are in flight:
                           JobScheduled -> JobRunning (a log line per step)
                           -> JobCompleted / JobFailed (plus an error line)
    last ref terminal      -> BuildRequestCompleted, or BuildRequestFailed if any failed

A step costs O(PARALLEL_JOBS) except the planning step, which is O(refs).
"""

import itertools
import random
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from gateway.protocol.rules import is_build_id
from gateway.protocol.view import TERMINAL_BUILD_STATUSES as TERMINAL
from gateway.protocol.view import BuildRequestStatus, JobStatus, PartitionStatus

# The wire vocabulary is the Build Graph Service's (`docs/upstream.md`), shared with the gateway.
Event = dict[str, Any]
"""One BuildEvent in its snake_case wire form. Shared and never mutated once emitted."""


_OUTCOMES = {  # a partition's terminal statuses, each with the message of its event
    PartitionStatus.AVAILABLE: "Partition available",
    PartitionStatus.FAILED: "Partition failed",
}

PARALLEL_JOBS = 3
"""Jobs in flight per build: with one start per step, it bounds the work of a step."""

MAX_PARTITIONS = 100_000
MAX_LOG_LINES = 1_000

HOSTILE_LOG_LINE = "<img src=x onerror=alert(1)>"
"""A log line a page must show as text; demo builds print it now and then."""

_DATASETS = ("reviews", "podcasts", "episodes", "ratings", "listens", "charts")
_REGIONS = ("eu", "us", "apac", "latam")
_FIRST_DAY = date(2026, 11, 27)
_LOG_TEMPLATES = (
    "fetching {n:,} files",
    "read {n:,} rows from {ref}",
    "dropped {n:,} duplicate records",
    "validated schema v{small}",
    "joined {n:,} rows against dim_users",
    "wrote {small} parquet files ({n:,} KiB)",
    "retrying shard {small} after a timeout",
)
_ERROR_TEMPLATES = (
    "error: source returned HTTP 503 while reading {ref}",
    "error: schema mismatch: column 'rating' is string, expected int64",
    "error: out of memory after {n:,} rows",
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NON_WORD = re.compile(r"\W+")


class BuildExists(ValueError):
    """`create_build` was given the id of a build that already exists."""


def is_valid_build_id(build_id: str) -> bool:
    """The gateway's rule (`gateway.protocol.rules`): the simulator refuses what it would."""
    return is_build_id(build_id)


def is_valid_ref(ref: str) -> bool:
    """A non-empty ref without control characters (`/`, `%`, spaces, non-ASCII are fine)."""
    return bool(ref) and not _CONTROL.search(ref)


@dataclass(eq=False)
class _Job:
    run_id: str
    label: str
    ref: str
    plan: list[str]  # every line the job prints; events carry plan[:shown]
    fails: bool
    status: JobStatus = JobStatus.SCHEDULED
    shown: int = 0


@dataclass(eq=False)
class _Build:
    id: str
    refs: tuple[str, ...]
    created_at: int
    fail: frozenset[str]
    log_lines: int
    hostile: bool  # the next job started prints HOSTILE_LOG_LINE first
    status: BuildRequestStatus = BuildRequestStatus.RECEIVED
    updated_at: int = 0
    version: int = 0  # the number of its latest event
    requested: list[dict[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delegates: dict[str, str] = field(default_factory=dict)  # ref -> build building it for us
    pending: deque[str] = field(default_factory=deque)  # refs whose job has not started
    running: dict[str, _Job] = field(default_factory=dict)
    outcomes: dict[str, PartitionStatus] = field(default_factory=dict)  # terminal refs
    watchers: dict[str, list[str]] = field(default_factory=dict)  # ref -> builds waiting on it


@dataclass(eq=False)
class _Partition:
    """One ref across every build that requested it.

    Its status is that of its latest partition event, with one exception: while the
    ref is delegated to a build, that build's own progress does not mask the
    delegation (the example of `docs/upstream.md`); the delegate's outcome ends it.
    """

    ref: str
    status: PartitionStatus
    updated_at: int
    build_requests: list[str] = field(default_factory=list)
    delegated_to: str | None = None
    events: list[tuple[str, Event]] = field(default_factory=list)  # (build id, event)

    def record(self, build_id: str, event: Event) -> None:
        self.events.append((build_id, event))
        status = event.get("partition_status")
        if status is None or (build_id == self.delegated_to and status not in _OUTCOMES):
            return
        self.status, self.updated_at = status, event["timestamp"]
        self.delegated_to = event.get("delegated_build_request_id")

    def forget(self, build_id: str) -> None:
        self.build_requests.remove(build_id)
        self.events = [(owner, event) for owner, event in self.events if owner != build_id]


class Simulator:
    """Builds, partitions and their events, moved forward only by explicit calls."""

    def __init__(self, seed: int = 0, clock: Callable[[], int] = time.time_ns) -> None:
        self._rng = random.Random(seed)
        self._clock = clock
        self._builds: dict[str, _Build] = {}
        self._partitions: dict[str, _Partition] = {}
        self._event_numbers = itertools.count(1)
        self._job_numbers = itertools.count(1)
        self._ref_numbers = itertools.count()

    # --- creating and moving builds

    def create_build(
        self,
        partitions: int | Sequence[str] = 4,
        *,
        build_id: str | None = None,
        fail: Sequence[str] = (),
        delegate: Sequence[str] = (),
        log_lines: int = 3,
        hostile: bool = False,
    ) -> str:
        """A new build in BuildRequestReceived; its id.

        `partitions` is a count of fresh demo refs or the refs themselves. Jobs of
        `fail` refs fail. Each `delegate` ref is built by a new build of its own,
        which this one waits for. `hostile` makes the first job print
        HOSTILE_LOG_LINE. Raises BuildExists, or ValueError for bad arguments.
        """
        refs = self._fresh_refs(partitions) if isinstance(partitions, int) else _refs(partitions)
        fail_set, delegated = frozenset(fail), tuple(dict.fromkeys(delegate))
        if stray := (fail_set | set(delegated)) - set(refs):
            raise ValueError(f"fail and delegate must name requested refs, not {sorted(stray)}")
        if not 0 <= log_lines <= MAX_LOG_LINES:
            raise ValueError(f"log_lines must be 0 to {MAX_LOG_LINES}")
        build_id = self._claim_id(build_id)
        now = self._clock()
        build = _Build(
            id=build_id,
            refs=refs,
            created_at=now,
            updated_at=now,
            fail=fail_set - set(delegated),
            log_lines=log_lines,
            hostile=hostile,
            requested=[{"str": ref} for ref in refs],
            pending=deque(ref for ref in refs if ref not in delegated),
        )
        self._builds[build_id] = build
        for ref in refs:
            partition = self._partitions.setdefault(
                ref, _Partition(ref, PartitionStatus.REQUESTED, now)
            )
            partition.build_requests.append(build_id)
        self._emit(build, "BuildRequestReceived", "Build request received")
        for ref in delegated:
            build.delegates[ref] = self.create_build(
                [ref], fail=[ref] if ref in fail_set else (), log_lines=log_lines
            )
        return build_id

    def create_demo_build(self) -> str:
        """A lively build for demos: 3 to 12 refs, now and then a failure, a delegation
        or a hostile log line."""
        rng = self._rng
        refs = self._fresh_refs(rng.randint(3, 12))
        failing, delegated = rng.sample(refs, 2)
        return self.create_build(
            refs,
            fail=[failing] if rng.random() < 0.25 else (),
            delegate=[delegated] if rng.random() < 0.3 else (),
            log_lines=rng.randint(1, 5),
            hostile=rng.random() < 0.1,
        )

    def advance(self, build_id: str, steps: int = 1) -> None:
        """Move one build `steps` steps; a terminal build stays as it is. KeyError if unknown."""
        build = self._get(build_id)
        for _ in range(steps):
            if build.status in TERMINAL:
                break
            self._step(build)

    def finish(self, build_id: str) -> None:
        """Advance until terminal, finishing the builds it waits for when only they are left."""
        build = self._get(build_id)
        while build.status not in TERMINAL:
            version = build.version
            self._step(build)
            if build.version == version:
                for delegate_id in {
                    build.delegates[ref] for ref in build.delegates if ref not in build.outcomes
                }:
                    self.finish(delegate_id)

    def cancel(self, build_id: str) -> None:
        """End a build as BuildRequestCancelled; builds waiting on its refs see them fail."""
        build = self._get(build_id)
        if build.status in TERMINAL:
            return
        for job in build.running.values():
            job.status = JobStatus.CANCELLED
            self._job_event(build, job, "Job cancelled")
        build.running.clear()
        build.pending.clear()
        self._set_status(build, BuildRequestStatus.CANCELLED, "Build request cancelled")
        for ref in list(build.watchers):
            self._notify(build, ref, PartitionStatus.FAILED)

    def tick(self) -> None:
        """Advance every non-terminal build one step, oldest first (the auto mode)."""
        for build in list(self._builds.values()):
            self._step(build)

    def keep_lively(self, active: int, *, keep_ended: int = 50) -> None:
        """Create demo builds until `active` are running; forget the oldest ended builds
        beyond `keep_ended`, so a demo running for days stays small."""
        while sum(b.status not in TERMINAL for b in self._builds.values()) < active:
            self.create_demo_build()
        ended = [b for b in self._builds.values() if b.status in TERMINAL]
        for build in ended[: max(len(ended) - keep_ended, 0)]:
            del self._builds[build.id]
            for ref in build.refs:
                partition = self._partitions[ref]
                partition.forget(build.id)
                if not partition.build_requests:
                    del self._partitions[ref]

    # --- reading, in the snake_case wire form

    def build_ids(self) -> list[str]:
        return list(self._builds)

    def status(self, build_id: str) -> str:
        return self._get(build_id).status

    def version(self, build_id: str) -> int:
        """Changes with every change of the build's JSON, and is never reused, not even by
        a later build of the same id: a cache key for its body."""
        return self._get(build_id).version

    def build_json(self, build_id: str) -> dict[str, Any]:
        """BuildStatusResponse. Its events and refs are shared: read, never mutate them."""
        build = self._get(build_id)
        return {
            "build_request_id": build.id,
            "status": build.status,
            "requested_partitions": list(build.requested),
            "created_at": build.created_at,
            "updated_at": build.updated_at,
            "events": list(build.events),
        }

    def partition_status_json(self, ref: str) -> dict[str, Any]:
        """PartitionStatusResponse; KeyError if no build requested `ref`."""
        partition = self._partitions[ref]
        return {
            "partition_ref": ref,
            "status": partition.status,
            "updated_at": partition.updated_at,
            "build_requests": list(partition.build_requests),
            "delegated_build_request_id": partition.delegated_to,
        }

    def partition_events_json(self, ref: str) -> dict[str, Any]:
        """PartitionEventsResponse; KeyError if no build requested `ref`."""
        events = [event for _, event in self._partitions[ref].events]
        return {"partition_ref": ref, "events": events}

    # --- the state machine

    def _get(self, build_id: str) -> _Build:
        return self._builds[build_id]

    def _step(self, build: _Build) -> None:
        match build.status:
            case BuildRequestStatus.RECEIVED:
                self._plan(build)
            case BuildRequestStatus.PLANNING:
                self._set_status(build, BuildRequestStatus.EXECUTING, "Build request executing")
                self._settle(build)  # every ref may already be done by delegates
            case BuildRequestStatus.EXECUTING:
                for job in list(build.running.values()):
                    self._progress(build, job)
                if build.pending and len(build.running) < PARALLEL_JOBS:
                    self._start(build, build.pending.popleft())
                self._settle(build)

    def _plan(self, build: _Build) -> None:
        self._set_status(build, BuildRequestStatus.PLANNING, "Build request planning")
        for ref in build.refs:
            delegate_id = build.delegates.get(ref)
            if delegate_id is None:
                self._partition_event(build, ref, PartitionStatus.REQUESTED, "Partition requested")
                continue
            self._partition_event(
                build,
                ref,
                PartitionStatus.DELEGATED,
                "Partition delegated",
                delegated_build_request_id=delegate_id,
            )
            delegate = self._builds.get(delegate_id)
            outcome = _outcome(delegate, ref)
            if outcome is not None:
                self._resolve(build, ref, outcome)
            elif delegate is not None:
                delegate.watchers.setdefault(ref, []).append(build.id)

    def _start(self, build: _Build, ref: str) -> None:
        plan = [self._log_line(_LOG_TEMPLATES, ref) for _ in range(build.log_lines)]
        if build.hostile:
            plan.insert(0, HOSTILE_LOG_LINE)
            build.hostile = False
        job = _Job(f"jr-{next(self._job_numbers)}", _job_label(ref), ref, plan, ref in build.fail)
        build.running[ref] = job
        self._job_event(build, job, "Job scheduled")
        self._partition_event(build, ref, PartitionStatus.SCHEDULED, "Partition scheduled")

    def _progress(self, build: _Build, job: _Job) -> None:
        if job.status is JobStatus.SCHEDULED:
            job.status, job.shown = JobStatus.RUNNING, min(1, len(job.plan))
            self._job_event(build, job, "Job started")
            self._partition_event(build, job.ref, PartitionStatus.BUILDING, "Partition building")
        elif job.shown < len(job.plan):
            job.shown += 1
            self._job_event(build, job, "Job running")
        elif job.fails:
            job.plan.append(self._log_line(_ERROR_TEMPLATES, job.ref))
            job.status, job.shown = JobStatus.FAILED, len(job.plan)
            self._end_job(build, job, PartitionStatus.FAILED)
        else:
            job.status = JobStatus.COMPLETED
            self._end_job(build, job, PartitionStatus.AVAILABLE)

    def _end_job(self, build: _Build, job: _Job, outcome: PartitionStatus) -> None:
        del build.running[job.ref]
        self._job_event(build, job, "Job failed" if job.fails else "Job completed")
        self._resolve(build, job.ref, outcome)
        self._notify(build, job.ref, outcome)

    def _resolve(self, build: _Build, ref: str, outcome: PartitionStatus) -> None:
        """Record a ref's terminal status in `build`, and end the build if it was the last."""
        if build.status in TERMINAL:
            return
        message = _OUTCOMES[outcome]
        if ref in build.delegates:
            message += f" (built by {build.delegates[ref]})"
        self._partition_event(build, ref, outcome, message)
        build.outcomes[ref] = outcome
        self._settle(build)

    def _notify(self, delegate: _Build, ref: str, outcome: PartitionStatus) -> None:
        """Pass a ref's outcome to the builds that delegated it to `delegate`."""
        for waiting_id in delegate.watchers.pop(ref, ()):
            if (waiting := self._builds.get(waiting_id)) is not None:
                self._resolve(waiting, ref, outcome)

    def _settle(self, build: _Build) -> None:
        if build.status is BuildRequestStatus.EXECUTING and len(build.outcomes) == len(build.refs):
            if PartitionStatus.FAILED in build.outcomes.values():
                self._set_status(build, BuildRequestStatus.FAILED, "Build request failed")
            else:
                self._set_status(build, BuildRequestStatus.COMPLETED, "Build request completed")

    # --- events

    def _emit(self, build: _Build, event_type: str, message: str, **fields: Any) -> Event:
        # max(): timestamps never go back within a build, whatever the clock does.
        now = max(self._clock(), build.updated_at)
        number = next(self._event_numbers)
        event: Event = {
            "event_id": f"ev-{number}",
            "timestamp": now,
            "event_type": event_type,
            "message": message,
            **fields,
        }
        build.events.append(event)
        build.updated_at = now
        build.version = number
        return event

    def _set_status(self, build: _Build, status: BuildRequestStatus, message: str) -> None:
        build.status = status
        self._emit(build, "BuildRequestEvent", message, build_request_status=status)

    def _partition_event(
        self, build: _Build, ref: str, status: PartitionStatus, message: str, **fields: Any
    ) -> None:
        event = self._emit(
            build,
            "PartitionEvent",
            message,
            partition_ref={"str": ref},
            partition_status=status,
            **fields,
        )
        self._partitions[ref].record(build.id, event)

    def _job_event(self, build: _Build, job: _Job, message: str) -> None:
        run = {
            "job_run_id": job.run_id,
            "job_label": job.label,
            "status": job.status,
            "target_partitions": [{"str": job.ref}],
            "log_lines": job.plan[: job.shown],  # a copy: the event keeps the lines of its moment
        }
        self._partitions[job.ref].record(build.id, self._emit(build, "JobEvent", message, job=run))

    # --- names and text

    def _claim_id(self, wanted: str | None) -> str:
        if wanted is None:
            while (candidate := f"br-{self._rng.getrandbits(32):08x}") in self._builds:
                pass
            return candidate
        if not is_valid_build_id(wanted):
            raise ValueError("a build id is 1 to 200 characters without /, spaces or controls")
        if wanted in self._builds:
            raise BuildExists(f"build {wanted} exists")
        return wanted

    def _fresh_refs(self, count: int) -> tuple[str, ...]:
        if not 1 <= count <= MAX_PARTITIONS:
            raise ValueError(f"a build requests 1 to {MAX_PARTITIONS} partitions")
        return tuple(_demo_ref(next(self._ref_numbers)) for _ in range(count))

    def _log_line(self, templates: Sequence[str], ref: str) -> str:
        template = self._rng.choice(templates)
        return template.format(
            n=self._rng.randint(2, 90_000), small=self._rng.randint(2, 40), ref=ref
        )


def _outcome(delegate: _Build | None, ref: str) -> PartitionStatus | None:
    """What a delegate made of `ref` so far: its outcome, FAILED if it ended without one
    (cancelled, or forgotten), None while it still works on it."""
    if delegate is not None and ref in delegate.outcomes:
        return delegate.outcomes[ref]
    if delegate is None or delegate.status in TERMINAL:
        return PartitionStatus.FAILED
    return None


def _refs(partitions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(partitions, str):
        raise ValueError("partitions is a count or a list of refs, not one string")
    refs = tuple(partitions)
    if not 1 <= len(refs) <= MAX_PARTITIONS:
        raise ValueError(f"a build requests 1 to {MAX_PARTITIONS} partitions")
    if not all(isinstance(ref, str) and is_valid_ref(ref) for ref in refs):
        raise ValueError("a ref is a non-empty string without control characters")
    if len(set(refs)) != len(refs):
        raise ValueError("a build requests each ref once")
    return refs


def _demo_ref(number: int) -> str:
    """The `number`th ref of an endless, duplicate-free series of realistic refs."""
    per_day = len(_DATASETS) * len(_REGIONS)
    dataset = _DATASETS[number % len(_DATASETS)]
    region = _REGIONS[number // len(_DATASETS) % len(_REGIONS)]
    day = _FIRST_DAY + timedelta(days=number // per_day)
    return f"{dataset}/date={day.isoformat()}/region={region}"


def _job_label(ref: str) -> str:
    dataset = _NON_WORD.sub("_", ref.split("/", 1)[0]).strip("_") or "partition"
    return f"//jobs:ingest_{dataset}"
