"""Upstream requests per build-minute: Buildcast against the seed dashboard's per-tab polling.

    python bench/upstream.py [--quick] [--out bench/results/upstream.json]

What a user gets: a running build of the simulated Build Graph Service (`buildcast
simulate`, its default 1.5 s tick: a few events per step), watched through real
SSE connections on real `buildcast serve --redis` replicas at their default
intervals (`--poll-active 2 --poll-idle 10 --partition-refresh 60`). Every count
is the simulator's own (`GET /_sim/stats`, all endpoints) over a bounded window
of steady state, scaled to a minute: whole poll cycles of the build (from just
after one GET of it to just after another), so each cycle counts once.

Buildcast: per partition count, one deployment per replica count (its own
simulator, private redis-server and replicas, since the simulator counts partition
reads per endpoint, not per build) runs alongside the others, on one build. Viewers
arrive in steps (1, 10, ... 10,000), spread evenly over the replicas by a child
process of raw SSE viewers (bench/_upstream_viewers.py); a step is counted once
each viewer has its snapshot and the build is polled at its usual pace again.
Replicas restart for each partition count, so no poller outlives its build.

The dashboard it replaces (docs/upstream.md, "The load it can take"): each open tab runs
`loadBuild` every 2 s on a timer, whether or not the last one finished: GET the
build, then GET each requested partition's status, one after the other. It is
emulated for real for a few tabs, before any gateway runs; more tabs are computed
from the measured one-tab rate and labelled so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
VIEWERS = Path(__file__).resolve().parent / "_upstream_viewers.py"
BUILDCAST = (sys.executable, "-m", "gateway.cli")
SERVE_READY = re.compile(r"buildcast gateway on (http://\S+?)/ following")
SIMULATE_READY = re.compile(r"simulated Build Graph Service on (http://\S+?)/api/v1/")

SEED_INTERVAL = 2.0  # the seed page's poll of a Planning or Executing build
LOG_LINES = 40  # per job: keeps a 10-partition build Executing through every step
STEADY_GAP = 4.0  # polls at most this far apart: the poller is back at its pace (2 s + a poll)
STEADY_TIMEOUT = 90.0  # a 2,000-partition build's first reads take about 20 s here
POLL_SAMPLE = 0.1  # seconds between reads of the counts while waiting for a poll
OPEN_TIMEOUT = 240.0  # for one step's viewers to have their snapshots
STOP_TIMEOUT = 5.0
SERVED = 0.9  # a seed measurement that served less of its demand is marked saturated


@dataclass(frozen=True)
class Plan:
    viewers: tuple[int, ...]
    replicas: tuple[int, ...]
    partitions: tuple[int, ...]
    seed_tabs: tuple[int, ...]  # measured; the seed's other viewer counts are computed
    window: float  # seconds counted per Buildcast configuration, at least
    seed_window: float  # seconds counted per seed configuration, at least


FULL = Plan((1, 10, 100, 1_000, 10_000), (1, 2, 3), (10, 100, 2_000), (1, 10), 10.0, 6.0)
QUICK = Plan((1, 100), (1, 3), (10, 2_000), (1,), 6.0, 2.0)


STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:4.0f}s] {message}", file=sys.stderr, flush=True)


# --- processes: each on 127.0.0.1, each ended by its PID


class Child:
    """One process we started, with its stderr in a log file for when it fails."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    async def line(self, timeout: float) -> str:
        """Its next stdout line; fails naming the process if none comes in time."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.process.stdout.readline()
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no answer in {timeout:.0f} s{self.tail()}") from None
        if not line:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}){self.tail()}")
        return line.decode()

    async def url(self, ready: re.Pattern[str], timeout: float = 20.0) -> str:
        """The base URL from the line it prints once it listens."""
        while not (match := ready.search(await self.line(timeout))):
            pass
        return match.group(1)

    async def ask(self, total: int) -> dict[str, Any]:
        """A viewers child: `total` viewers open and watching, and its counters. Fails if
        any is not: figures for fewer viewers than the table says would mislead."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"%d\n" % total)
        await self.process.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.line(OPEN_TIMEOUT + 10))
        if answer["ready"] - answer["closed_after_ready"] < total:
            raise RuntimeError(f"{self.name}: {total} viewers wanted, got {answer}{self.tail()}")
        return answer

    def rss(self) -> int:
        """Resident memory in bytes (0 once it has exited)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def warnings(self) -> list[str]:
        """The WARNING and ERROR lines it logged so far (a lease lost, Redis unreachable...)."""
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()
            return [line for line in text if " WARNING " in line or " ERROR " in line]
        return []

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
            return "; its stderr ends:\n" + "\n".join(text) if text else ""
        return ""

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                self.kill()
                await self.process.wait()

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)


class Children:
    """The processes of one phase; leaving the block ends each by its PID, whatever happened."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[Child] = []

    async def start(self, name: str, *args: str, stdin: bool = False) -> Child:
        log = self.log_dir / f"{name}.stderr"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *args,
                cwd=ROOT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        child = Child(name, process, log)
        self._started.append(child)
        return child

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.gather(*(child.stop() for child in self._started))
        finally:  # interrupted while stopping: no child may outlive us
            for child in self._started:
                child.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def redis_server(children: Children, name: str) -> str:
    """A private, memory-only redis-server on a free loopback port; its URL once it answers."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    where = ("--dir", str(children.log_dir), "--logfile", str(children.log_dir / f"{name}.log"))
    await children.start(name, "redis-server", *args, *where)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            pong = await asyncio.wait_for(reader.readline(), 2)
            writer.close()
            if pong == b"+PONG\r\n":
                return f"redis://127.0.0.1:{port}/0"
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} did not answer PING in 10 s")


# --- the simulated upstream


class Upstream:
    """One simulator's control API: builds to create, request counts to read."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=body) as response:
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            return None if response.status == 204 else await response.json()

    async def running_build(self, build_id: str, partitions: int) -> str:
        """A new build, moved on to Executing: one the seed polls every 2 s."""
        spec = {"id": build_id, "partitions": partitions, "log_lines": LOG_LINES}
        await self._call("POST", "/_sim/builds", spec)
        await self._call("POST", f"/_sim/builds/{build_id}/advance", {"steps": 2})
        return build_id

    async def status(self, build_id: str) -> str:
        builds = await self._call("GET", "/_sim/builds")
        return str(next(b["status"] for b in builds if b["build_request_id"] == build_id))

    async def reset(self) -> float:
        await self._call("POST", "/_sim/stats/reset")
        return time.monotonic()

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._call("GET", "/_sim/stats")
        return stats

    async def next_poll(self, build_id: str) -> tuple[dict[str, Any], float]:
        """The counts just after the build's next poll (its GET seen within POLL_SAMPLE s),
        and when; fails if no poll comes within STEADY_TIMEOUT."""
        deadline = time.monotonic() + STEADY_TIMEOUT
        seen = (await self.stats())["builds"].get(build_id, 0)
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SAMPLE)
            stats = await self.stats()
            if stats["builds"].get(build_id, 0) != seen:
                return stats, time.monotonic()
        raise RuntimeError(f"{build_id} was not polled for {STEADY_TIMEOUT:.0f} s")

    async def steady(self, build_id: str) -> bool:
        """Wait until two polls of the build in a row are at most STEADY_GAP apart: its first
        reads (or a crowd's arrival) are over. False if that did not happen in time."""
        deadline = time.monotonic() + STEADY_TIMEOUT
        _, last = await self.next_poll(build_id)
        while time.monotonic() < deadline:
            _, poll = await self.next_poll(build_id)
            if poll - last <= STEADY_GAP:
                return True
            last = poll
        return False

    async def poll_cycles(self, build_id: str, seconds: float) -> dict[str, Any]:
        """The counts over whole poll cycles of the build (a gateway's, or the seed's tabs'),
        at least `seconds` of them: a window that starts and ends just after a GET of the
        build counts each cycle it spans once, with its partition reads."""
        first, started = await self.next_poll(build_id)
        await asyncio.sleep(max(0.0, started + seconds - STEADY_GAP / 2 - time.monotonic()))
        while True:
            last, ended = await self.next_poll(build_id)
            if ended - started >= seconds:
                return {**_minus(last, first), "seconds": ended - started}


def _minus(later: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """Counts between two reads of `/_sim/stats` (its `max_concurrent` is left out)."""
    return {
        "total": later["total"] - earlier["total"],
        "endpoints": {k: n - earlier["endpoints"].get(k, 0) for k, n in later["endpoints"].items()},
        "builds": {k: n - earlier["builds"].get(k, 0) for k, n in later["builds"].items()},
    }


def per_minute(counts: dict[str, Any]) -> float:
    return float(counts["total"]) * 60.0 / float(counts["seconds"])


# --- the seed page, emulated


async def seed_tab(session: aiohttp.ClientSession, url: str, build_id: str) -> None:
    """One open tab: a `loadBuild` every SEED_INTERVAL seconds, on a timer, until cancelled."""
    loads: set[asyncio.Task[None]] = set()
    try:
        while True:
            load = asyncio.create_task(seed_load(session, url, build_id))
            loads.add(load)
            load.add_done_callback(loads.discard)
            await asyncio.sleep(SEED_INTERVAL)
    finally:
        for load in loads:
            load.cancel()
        await asyncio.gather(*loads, return_exceptions=True)


async def seed_load(session: aiohttp.ClientSession, url: str, build_id: str) -> None:
    """The seed's `loadBuild`: the build, then each requested partition's status in turn."""
    async with session.get(f"{url}/api/v1/builds/{quote(build_id, safe='')}") as response:
        build = await response.json()
    for partition in build["requested_partitions"]:
        ref = quote(partition["str"], safe="")
        with contextlib.suppress(aiohttp.ClientError):  # the seed logs it and goes on
            async with session.get(f"{url}/api/v1/partitions/{ref}/status") as response:
                await response.read()


async def measure_seed(upstream: Upstream, plan: Plan) -> list[dict[str, Any]]:
    """For each partition count and measured tab count: the seed's requests per build-minute."""
    rows = []
    connector = aiohttp.TCPConnector(limit=0)  # tabs are browsers: no shared connection cap
    async with aiohttp.ClientSession(connector=connector) as session:
        for partitions in plan.partitions:
            for tabs in plan.seed_tabs:
                build_id = await upstream.running_build(f"seed-p{partitions}-t{tabs}", partitions)
                tasks = [
                    asyncio.create_task(seed_tab(session, upstream.url, build_id))
                    for _ in range(tabs)
                ]
                try:
                    await asyncio.sleep(SEED_INTERVAL)  # every tab under way
                    counts = await upstream.poll_cycles(build_id, plan.seed_window)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                rate = per_minute(counts)
                demand = tabs * (1 + partitions) * 60.0 / SEED_INTERVAL
                rows.append(
                    {"partitions": partitions, "tabs": tabs, "per_build_minute": rate,
                     "demand_per_minute": demand, "counts": counts}
                )  # fmt: skip
                progress(
                    f"seed      {partitions:>5} partitions {tabs:>2} tabs: {rate:>11,.0f} req/min"
                    f" (its demand: {demand:,.0f})"
                )
    return rows


# --- Buildcast


@dataclass
class Deployment:
    """One replica count's simulator, replicas and viewers, all on one build."""

    replicas: int
    upstream: Upstream
    build_id: str
    servers: list[Child]
    viewers: Child

    async def arrive(self, viewers: int) -> dict[str, Any]:
        """Open viewers up to `viewers`, wait for the poller's usual pace: what it all cost."""
        started = await self.upstream.reset()
        opened = await self.viewers.ask(viewers)
        steady = await self.upstream.steady(self.build_id)
        counts = await self.upstream.stats()
        return {
            "viewers": opened,
            "steady": steady,
            "counts": {**counts, "seconds": time.monotonic() - started},
        }

    async def count(self, viewers: int, seconds: float) -> dict[str, Any]:
        """Upstream requests over whole poll cycles, and what the viewers got meanwhile."""
        before = await self.viewers.ask(viewers)
        started = time.monotonic()
        counts = await self.upstream.poll_cycles(self.build_id, seconds)
        after = await self.viewers.ask(viewers)
        deltas = after["deltas"] - before["deltas"]
        return {
            "per_build_minute": per_minute(counts),
            "counts": counts,
            "deltas_per_viewer_minute": deltas * 60 / (time.monotonic() - started) / viewers,
            "viewers_after": after,
            "build_status_after": await self.upstream.status(self.build_id),
            "replica_rss_bytes": [server.rss() for server in self.servers],
            "replica_warnings_so_far": [line for s in self.servers for line in s.warnings()],
        }


async def deploy(
    children: Children, upstream: Upstream, redis: str, replicas: int, partitions: int
) -> Deployment:
    """Replicas on the upstream and Redis, a running build, and the viewers' process for it."""
    name = f"p{partitions}-r{replicas}"
    serve = ("serve", "--upstream", upstream.url, "--redis", redis, "--port", "0")
    # Every viewer comes from 127.0.0.1: lift the per-address and process caps.
    serve += ("--max-connections", "1000000", "--max-connections-per-client", "1000000")
    servers = [
        await children.start(f"serve-{name}-{i}", *BUILDCAST, *serve) for i in range(replicas)
    ]
    gateways = await asyncio.gather(*(server.url(SERVE_READY) for server in servers))
    build_id = await upstream.running_build(f"bc-{name}", partitions)
    viewers = await children.start(
        f"viewers-{name}", sys.executable, str(VIEWERS), build_id, *gateways,
        "--open-timeout", str(OPEN_TIMEOUT), stdin=True,
    )  # fmt: skip
    return Deployment(replicas, upstream, build_id, servers, viewers)


async def measure_buildcast(
    upstreams: Sequence[Upstream], redises: Sequence[str], partitions: int, plan: Plan, logs: Path
) -> list[dict[str, Any]]:
    """For one partition count, every replica count side by side, through the viewer steps."""
    rows = []
    async with Children(logs) as children:
        deployments = await asyncio.gather(
            *(
                deploy(children, upstream, redis, replicas, partitions)
                for upstream, redis, replicas in zip(upstreams, redises, plan.replicas, strict=True)
            )
        )
        for viewers in plan.viewers:
            arrivals = await asyncio.gather(*(d.arrive(viewers) for d in deployments))
            counts = await asyncio.gather(*(d.count(viewers, plan.window) for d in deployments))
            for d, arrival, count in zip(deployments, arrivals, counts, strict=True):
                row = {
                    "viewers": viewers, "replicas": d.replicas, "partitions": partitions,
                    "build_id": d.build_id, **count, "arrival": arrival,
                }  # fmt: skip
                rows.append(row)
                progress(
                    f"buildcast {partitions:>5} partitions {d.replicas} replicas "
                    f"{viewers:>6,} viewers: {row['per_build_minute']:>7,.0f} req/min, "
                    f"{row['deltas_per_viewer_minute']:.0f} deltas/viewer-min "
                    f"(arrival {arrival['counts']['seconds']:.0f} s, "
                    f"{'steady' if arrival['steady'] else 'NOT steady'}; "
                    f"{row['build_status_after']}; "
                    f"{len(row['replica_warnings_so_far'])} replica warnings so far)"
                )
    return rows


# --- the report


def table(buildcast: list[dict[str, Any]], seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: Buildcast's rate, the seed's (measured or computed), ratio."""
    measured = {(s["partitions"], s["tabs"]): s for s in seed}
    rows = []
    for b in buildcast:
        if found := measured.get((b["partitions"], b["viewers"])):
            seed_rate = found["per_build_minute"]
            how = "measured" if seed_rate >= SERVED * found["demand_per_minute"] else "measured*"
        else:
            seed_rate = measured[(b["partitions"], 1)]["per_build_minute"] * b["viewers"]
            how = "computed"
        rows.append(
            {"viewers": b["viewers"], "replicas": b["replicas"], "partitions": b["partitions"],
             "buildcast": b["per_build_minute"], "seed": seed_rate, "seed_how": how,
             "ratio": seed_rate / b["per_build_minute"]}
        )  # fmt: skip
    return sorted(rows, key=lambda r: (r["partitions"], r["replicas"], r["viewers"]))


def notes(plan: Plan) -> dict[str, str]:
    """How the figures were made, printed under the table and kept in the JSON."""
    tabs = " and ".join(map(str, plan.seed_tabs))
    return {
        "buildcast": (
            "`buildcast serve --redis` at its defaults (--poll-active 2 --poll-idle 10 "
            f"--partition-refresh 60); steady state over whole poll cycles (>= {plan.window:g} s) "
            "once the viewers have arrived"
        ),
        "seed": (
            f"per tab every {SEED_INTERVAL:g} s: GET the build, then each partition's status in "
            f"turn; measured with {tabs} tab(s) over whole cycles (>= {plan.seed_window:g} s), "
            "computed = viewers "
            "x the one-tab rate"
        ),
        "upstream": f"buildcast simulate defaults (tick 1.5 s), jobs of {LOG_LINES} log lines",
    }


def render(rows: list[dict[str, Any]], plan: Plan) -> str:
    head = (
        f"{'viewers':>7} {'replicas':>8} {'partitions':>10} {'Buildcast':>10} "
        f"{'seed':>14} {'':9} {'seed/Buildcast':>14}"
    )
    lines = [
        "Upstream requests per build-minute (all endpoints, a running build)",
        head,
        "-" * len(head),
    ]
    lines += [
        f"{r['viewers']:>7,} {r['replicas']:>8} {r['partitions']:>10,} {r['buildcast']:>10,.0f} "
        f"{r['seed']:>14,.0f} {r['seed_how']:9} {r['ratio']:>13,.1f}x"
        for r in rows
    ]
    if any(r["seed_how"] == "measured*" for r in rows):
        lines.append(
            f"* served less than {SERVED:.0%} of the seed's demand (the simulator or the tab "
            "emulator was saturated): the seed would cost more"
        )
    lines += [f"{what}: {how}" for what, how in notes(plan).items()]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "commit": commit,
    }


async def run(plan: Plan) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # as Ctrl-C
    logs = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
    progress(f"process logs in {logs}")
    async with Children(logs) as children, aiohttp.ClientSession() as session:
        simulate = ("simulate", "--port", "0", "--keep-active", "0")
        sims = [
            await children.start(f"simulate-r{r}", *BUILDCAST, *simulate) for r in plan.replicas
        ]
        urls = await asyncio.gather(*(sim.url(SIMULATE_READY) for sim in sims))
        upstreams = [Upstream(session, url) for url in urls]
        redises = [await redis_server(children, f"redis-r{r}") for r in plan.replicas]
        seed = await measure_seed(upstreams[0], plan)
        buildcast = []
        for partitions in plan.partitions:
            buildcast += await measure_buildcast(upstreams, redises, partitions, plan, logs)
    return {"seed": seed, "buildcast": buildcast}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 90 s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "upstream.json")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        with runner:
            raw = runner.run(run(plan))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted; every process it started has been ended")
        return 130
    rows = table(raw["buildcast"], raw["seed"])
    print(render(rows, plan))
    result = {
        "benchmark": "upstream requests per build-minute",
        "plan": asdict(plan),
        "notes": notes(plan),
        "machine": machine(),
        "wall_seconds": time.monotonic() - started,
        "table": rows,
        **raw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    progress(f"wrote {args.out} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
