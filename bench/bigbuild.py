"""Large builds: which costs grow with the build, and which with the change.

For builds of growing size (partitions / events), one typical change (one
partition moves: five new events, one of them a partition event) goes through
every step of the data path, timed as the gateway does it now and as the
baseline did it (the whole body validated, every event converted, the whole
event list compared, the whole view stored in Redis per publish), in the same
run:

    python bench/bigbuild.py [--quick] [--out bench/results/bigbuild.json]

Redis figures come from a redis-server this script starts on a free loopback
port (no persistence) and stops by its PID. Progress goes to stderr; the table
to stdout; every figure (medians, in ms) to the JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.backends.base import Bus
from gateway.backends.memory import MemoryBus
from gateway.backends.redis.bus import RedisBus
from gateway.backends.redis.connection import connect
from gateway.ingest.payloads import BuildReader, BuildStatusResponse
from gateway.ingest.views import EventViews, build_view, partitions_from_events
from gateway.protocol import messages
from gateway.protocol.diff import apply, diff
from gateway.protocol.messages import Message
from gateway.protocol.view import Changes, View

SIZES = [(10, 50), (100, 500), (500, 2_500), (2_000, 10_000)]
NEW_EVENTS = 5  # per change; every fifth event is a partition event: one partition moves
DELTAS = 120  # published in a row per bus: more than one compaction of the Redis bus's base
T0 = 1_795_766_400_000_000_000
DATASETS = ("reviews", "podcasts", "episodes", "ratings", "listens", "charts")
STATUSES = ("PartitionBuilding", "PartitionAvailable", "PartitionFailed", "PartitionScheduled")
BUILD_ID = "br-big"
EPOCH = "bench"
T = TypeVar("T")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the upstream's bodies, snake_case wire form


def ref(i: int) -> str:
    return f"{DATASETS[i % len(DATASETS)]}/date=2026-11-27/part={i:04d}"


def upstream_event(n: int, partitions: int) -> dict[str, Any]:
    """The `n`th event: a partition event every fifth, else a job event with log lines."""
    target = ref(n * 7 % partitions)
    base = {"event_id": f"ev-{n}", "timestamp": T0 + n * 37_000_000}
    if n % 5 == 0:
        status = STATUSES[n // 5 % len(STATUSES)]
        return {
            **base,
            "event_type": "PartitionEvent",
            "message": f"Partition {status.removeprefix('Partition').lower()}",
            "partition_ref": {"str": target},
            "partition_status": status,
        }
    return {
        **base,
        "event_type": "JobEvent",
        "message": "Job running",
        "job": {
            "job_run_id": f"jr-{n}",
            "job_label": f"//jobs:ingest_{target.split('/')[0]}",
            "status": "JobRunning",
            "target_partitions": [{"str": target}],
            "log_lines": [f"read {n * 13:,} rows from {target}", "validated schema v7"],
        },
    }


def upstream_body(partitions: int, events: int) -> bytes:
    return orjson.dumps(
        {
            "build_request_id": BUILD_ID,
            "status": "BuildRequestExecuting",
            "requested_partitions": [{"str": ref(i)} for i in range(partitions)],
            "created_at": T0,
            "updated_at": T0 + events * 37_000_000,
            "events": [upstream_event(n, partitions) for n in range(1, events + 1)],
        }
    )


# --- timing


def median_ms(runs: int, step: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def median_ms_after(runs: int, prepare: Callable[[], T], step: Callable[[T], object]) -> float:
    """Median ms of `step`, each run from a state that an untimed `prepare` makes."""
    times = []
    for _ in range(runs):
        state = prepare()
        start = time.perf_counter()
        step(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def publish_ms(bus: Bus, deltas: list[tuple[Message, View]]) -> tuple[float, float]:
    """Median and mean ms of publishing `deltas` in a row (the mean carries any compaction)."""
    times = []
    for message, view in deltas:
        start = time.perf_counter()
        stored = await bus.publish(message, view)
        times.append(time.perf_counter() - start)
        if not stored:
            raise RuntimeError(f"the bus refused seq {message.seq}")
    return statistics.median(times) * 1000, statistics.mean(times) * 1000


async def latest_ms(runs: int, bus: Bus) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        if await bus.latest(BUILD_ID) is None:
            raise RuntimeError("the bus has no latest view")
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, stopped by its PID."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (scripts/test.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- one size


BUILD_HEAD = {
    "build_request_id": BUILD_ID,
    "status": "BuildRequestExecuting",
    "created_at": T0,
    "updated_at": T0,
}


def change(view: View, seq: int, partitions: int) -> Changes:
    """The change of `seq`: five new events, and the partition their partition event moves."""
    first = len(view["events"]) + 1
    added = [upstream_event(n, partitions) for n in range(first, first + NEW_EVENTS)]
    moved = [event["partition_ref"] for event in added if "partition_ref" in event]
    build = BuildStatusResponse.model_validate(
        {**BUILD_HEAD, "requested_partitions": moved, "events": added}
    )
    new = build_view(build, partitions_from_events(build), seq=seq, stale=False)
    return {
        "updatedAtMs": new["events"][-1]["timestampMs"],
        "partitions": new["partitions"],
        "events": new["events"],
    }


async def measure(partitions: int, events: int, runs: int, redis_url: str) -> dict[str, Any]:
    before, after = (
        upstream_body(partitions, events),
        upstream_body(partitions, events + NEW_EVENTS),
    )
    old_build = BuildStatusResponse.model_validate_json(before)
    new_build = BuildStatusResponse.model_validate_json(after)
    figures: dict[str, Any] = {"partitions": partitions, "events": events, "body": len(after)}

    # Parse: the whole body validated, against a reader that validated the previous body.
    figures["parse_baseline"] = median_ms(
        runs, lambda: BuildStatusResponse.model_validate_json(after)
    )

    def reader() -> BuildReader:
        reading = BuildReader()
        reading.read(before)
        return reading

    figures["parse_now"] = median_ms_after(runs, reader, lambda reading: reading.read(after))

    # View: every event converted, against the poller's kept event views.
    def whole_view(build: BuildStatusResponse, seq: int) -> View:
        return build_view(build, partitions_from_events(build), seq=seq, stale=False)

    def kept_views() -> EventViews:
        kept = EventViews()
        kept.update(old_build.events)
        return kept

    def next_view(kept: EventViews) -> View:
        kept.update(new_build.events)
        derived = kept.partitions(new_build.requested_partitions)
        return build_view(new_build, derived, seq=2, stale=False, events=kept.views)

    figures["view_baseline"] = median_ms(runs, lambda: whole_view(new_build, 2))
    figures["view_now"] = median_ms_after(runs, kept_views, next_view)

    # Diff: the baseline also compared the whole event list, event by event (what `diff` did).
    old_view, new_view = whole_view(old_build, 1), whole_view(new_build, 2)
    old_events = old_view["events"]

    def whole_diff() -> None:
        diff(old_view, new_view)
        _ = new_view["events"][: len(old_events)] == old_events

    figures["diff_baseline"] = median_ms(runs, whole_diff)
    figures["diff_now"] = median_ms(runs, lambda: diff(old_view, new_view))

    changes = diff(old_view, new_view)
    if changes is None or len(changes["events"]) != NEW_EVENTS:
        raise RuntimeError("the change is not a delta of five events")
    delta = messages.delta(BUILD_ID, EPOCH, 2, changes)
    snapshot = messages.snapshot(BUILD_ID, EPOCH, 2, new_view)
    figures["delta_bytes"], figures["snapshot_bytes"] = len(delta.data), len(snapshot.data)
    figures["encode_delta"] = median_ms(runs, lambda: messages.delta(BUILD_ID, EPOCH, 2, changes))
    figures["encode_snapshot"] = median_ms(
        runs, lambda: messages.snapshot(BUILD_ID, EPOCH, 2, new_view)
    )
    figures["apply_delta"] = median_ms(
        runs, lambda: apply(old_view, 2, orjson.loads(orjson.dumps(changes)))
    )

    # Publish: DELTAS changes in a row on each bus, from a snapshot at seq 1.
    chain: list[tuple[Message, View]] = []
    view = old_view
    for seq in range(2, DELTAS + 2):
        step = change(view, seq, partitions)
        view = apply(view, seq, step)
        chain.append((messages.delta(BUILD_ID, EPOCH, seq, step), view))
    first = messages.snapshot(BUILD_ID, EPOCH, 1, old_view)

    memory = MemoryBus()
    await memory.publish(first, old_view)
    figures["publish_memory"], _ = await publish_ms(memory, chain)

    connection = await connect(redis_url)
    try:
        for label, bus in [
            ("baseline", RedisBus(connection, compact_every=0)),  # the whole view per publish
            ("now", RedisBus(connection)),
        ]:
            await connection.commands.flushdb()
            await bus.publish(first, old_view)
            median, mean = await publish_ms(bus, chain)
            figures[f"publish_redis_{label}"], figures[f"publish_redis_mean_{label}"] = median, mean
            # Not subscribed: nothing cached, each call reads (and rebuilds) the view.
            figures[f"latest_redis_{label}"] = await latest_ms(runs, bus)
            rebuilt = await bus.latest(BUILD_ID)
            if (
                rebuilt is None
                or rebuilt.data != messages.snapshot(BUILD_ID, EPOCH, view["seq"], view).data
            ):
                raise RuntimeError(f"Redis ({label}) rebuilt another view than the published one")
    finally:
        await connection.close()

    for label in ("baseline", "now"):
        figures[f"cycle_memory_{label}"] = (
            sum(
                figures[k]
                for k in (f"parse_{label}", f"view_{label}", f"diff_{label}", "encode_delta")
            )
            + figures["publish_memory"]
        )
        figures[f"cycle_redis_{label}"] = (
            figures[f"cycle_memory_{label}"]
            - figures["publish_memory"]
            + figures[f"publish_redis_mean_{label}"]
        )
    return figures


# --- the report

ROWS: list[tuple[str, str | tuple[str, str], str]] = [  # (label, key or a ratio, format)
    ("upstream body (bytes)", "body", "{:,.0f}"),
    ("snapshot (bytes)", "snapshot_bytes", "{:,.0f}"),
    ("delta (bytes)", "delta_bytes", "{:,.0f}"),
    ("  delta / snapshot size", ("delta_bytes", "snapshot_bytes"), "{:.5f}"),
    ("parse body, baseline (ms)", "parse_baseline", "{:.2f}"),
    ("parse body, now (ms)", "parse_now", "{:.2f}"),
    ("  now / baseline", ("parse_now", "parse_baseline"), "{:.3f}"),
    ("build view, baseline (ms)", "view_baseline", "{:.2f}"),
    ("build view, now (ms)", "view_now", "{:.2f}"),
    ("  now / baseline", ("view_now", "view_baseline"), "{:.3f}"),
    ("diff, baseline (ms)", "diff_baseline", "{:.3f}"),
    ("diff, now (ms)", "diff_now", "{:.3f}"),
    ("  now / baseline", ("diff_now", "diff_baseline"), "{:.3f}"),
    ("encode delta (ms)", "encode_delta", "{:.3f}"),
    ("encode snapshot (ms)", "encode_snapshot", "{:.3f}"),
    ("  delta / snapshot cost", ("encode_delta", "encode_snapshot"), "{:.5f}"),
    ("apply delta, client (ms)", "apply_delta", "{:.3f}"),
    ("publish, memory bus (ms)", "publish_memory", "{:.3f}"),
    (
        "publish, Redis, baseline: view per delta (ms, mean)",
        "publish_redis_mean_baseline",
        "{:.3f}",
    ),
    ("publish, Redis, now: base + log (ms, mean)", "publish_redis_mean_now", "{:.3f}"),
    ("publish, Redis, now (ms, median)", "publish_redis_now", "{:.3f}"),
    (
        "  now / baseline (mean)",
        ("publish_redis_mean_now", "publish_redis_mean_baseline"),
        "{:.3f}",
    ),
    ("latest, Redis, baseline (ms, uncached)", "latest_redis_baseline", "{:.2f}"),
    ("latest, Redis, now (ms, uncached)", "latest_redis_now", "{:.2f}"),
    ("poll cycle, memory bus, baseline (ms)", "cycle_memory_baseline", "{:.2f}"),
    ("poll cycle, memory bus, now (ms)", "cycle_memory_now", "{:.2f}"),
    ("  now / baseline", ("cycle_memory_now", "cycle_memory_baseline"), "{:.3f}"),
    ("poll cycle, Redis bus, baseline (ms)", "cycle_redis_baseline", "{:.2f}"),
    ("poll cycle, Redis bus, now (ms)", "cycle_redis_now", "{:.2f}"),
    ("  now / baseline", ("cycle_redis_now", "cycle_redis_baseline"), "{:.3f}"),
]


def table(results: list[dict[str, Any]]) -> str:
    heads = [f"{r['partitions']:,}p / {r['events']:,}e" for r in results]
    width = max(len(label) for label, _, _ in ROWS)
    lines = [" " * width + "".join(f"{head:>18}" for head in heads)]
    for label, key, form in ROWS:
        cells = []
        for figures in results:
            value = figures[key[0]] / figures[key[1]] if isinstance(key, tuple) else figures[key]
            cells.append(f"{form.format(value):>18}")
        lines.append(f"{label:<{width}}" + "".join(cells))
    return "\n".join(lines)


async def run(sizes: list[tuple[int, int]], runs: int, redis_url: str) -> list[dict[str, Any]]:
    results = []
    for partitions, events in sizes:
        progress(f"{partitions:,} partitions, {events:,} events: {runs} runs per step ...")
        results.append(await measure(partitions, events, runs, redis_url))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per step instead of 9")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bigbuild.json"))
    options = parser.parse_args()
    runs = 3 if options.quick else 9
    with redis_server() as url:
        results = asyncio.run(run(SIZES, runs, url))
    print(table(results))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "machine": platform.machine()}
    report = {"runs": runs, "deltas_published": DELTAS, "machine": machine, "sizes": results}
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"written to {options.out}")


if __name__ == "__main__":
    main()
