"""The `buildcast` command: serve, demo, simulate, tail, wait.

Every option can also come from the environment as `BUILDCAST_<OPTION>`
(`--poll-active` is `BUILDCAST_POLL_ACTIVE`); the command line wins. Bad
options, a taken port or an unreachable dependency end with one clear line
and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from aiohttp import web

from gateway import codec
from gateway.app import create_app
from gateway.client import Client, ClientError, Connectivity, OnConnection, Update, View
from gateway.diff import diff
from gateway.errors import BusUnavailable
from gateway.redis_client import connect
from gateway.settings import Settings
from gateway.simulator import Simulator, create_simulator_app

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_GATEWAY = "http://127.0.0.1:8080"

# `buildcast wait`'s exit statuses (PROTOCOL.md).
COMPLETED, FAILED, CANCELLED, TIMED_OUT, UNUSABLE = 0, 1, 2, 3, 4
BUILD_EXIT = {
    "BuildRequestCompleted": COMPLETED,
    "BuildRequestFailed": FAILED,
    "BuildRequestCancelled": CANCELLED,
}


class UsageError(Exception):
    """A bad option or environment value: reported as one line, exit status 2."""


def _env(option: str) -> str:
    return "BUILDCAST_" + option.lstrip("-").replace("-", "_").upper()


def _add(
    parser: argparse.ArgumentParser,
    option: str,
    kind: Callable[[str], Any],
    default: Any,
    help: str,
) -> None:
    env = _env(option)
    parser.add_argument(
        option,
        type=kind,
        default=os.environ.get(env, default),
        help=f"{help} (env {env}; default {default})",
    )


def _flag(parser: argparse.ArgumentParser, option: str, help: str) -> None:
    env = _env(option)
    parser.add_argument(
        option,
        action="store_true",
        default=os.environ.get(env, "").lower() in ("1", "true", "yes", "on"),
        help=f"{help} (env {env}=1)",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    return text.rstrip("/")


def _redis_url(text: str) -> str:
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a redis://, rediss:// or unix:// URL")
    return text


def _listen_options(parser: argparse.ArgumentParser, port: int) -> None:
    _add(parser, "--host", str, "127.0.0.1", "address to listen on")
    _add(parser, "--port", _port, port, "port to listen on")


def _poll_options(parser: argparse.ArgumentParser) -> None:
    _add(parser, "--poll-active", _positive, 2.0, "seconds between polls of a running build")
    _add(parser, "--poll-idle", _positive, 10.0, "seconds between polls of an ended build")
    _add(parser, "--grace", _positive, 30.0, "seconds a poller outlives its last viewer")
    _add(
        parser,
        "--partition-refresh",
        _positive,
        60.0,
        "seconds between background reads of an unfinished partition",
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="buildcast", description=__doc__.splitlines()[0])
    level = _choice(*LOG_LEVELS)
    _add(root, "--log-level", lambda text: level(text.upper()), "INFO", ", ".join(LOG_LEVELS))
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    _add(serve, "--upstream", _url, None, "base URL of the Build Graph Service")
    _add(
        serve,
        "--redis",
        _redis_url,
        None,
        "Redis (or one node of a Redis Cluster) shared by the replicas; none: one replica",
    )
    _listen_options(serve, 8080)
    _poll_options(serve)
    _add(
        serve,
        "--lease-ttl",
        _positive,
        5.0,
        "seconds a dead replica's builds wait before another replica takes them over",
    )

    demo = commands.add_parser(
        "demo", help="a simulated Build Graph Service and the gateway, in one process"
    )
    _listen_options(demo, 8080)
    _poll_options(demo)
    _add(demo, "--seed", int, 7, "seed of the simulated builds")

    simulate = commands.add_parser("simulate", help="the simulated Build Graph Service alone")
    _listen_options(simulate, 8081)
    _add(simulate, "--seed", int, 7, "seed of the simulated builds")
    _add(simulate, "--tick", _positive, 1.5, "seconds between steps of every running build")
    _add(simulate, "--keep-active", int, 4, "running builds to keep alive (0: only those created)")
    _add(simulate, "--spelling", _choice("snake", "camel"), "snake", "field names: snake or camel")
    _add(
        simulate,
        "--enum-style",
        _choice("prefixed", "screaming", "bare"),
        "prefixed",
        "enum values as deployed versions send them: prefixed, screaming or bare",
    )

    tail = commands.add_parser("tail", help="follow one build and print each change, until it ends")
    tail.add_argument("build_id", metavar="BUILD_ID")
    _add(tail, "--gateway", _url, DEFAULT_GATEWAY, "base URL of the gateway")
    _flag(tail, "--json", "one JSON object a line: each message as received, plus buildStatus")

    wait = commands.add_parser(
        "wait",
        help="block until a build ends; exit status 0 Completed, 1 Failed, 2 Cancelled, "
        "3 timed out, 4 not found or unusable gateway",
    )
    wait.add_argument("build_id", metavar="BUILD_ID")
    _add(wait, "--gateway", _url, DEFAULT_GATEWAY, "base URL of the gateway")
    _add(wait, "--timeout", _positive, None, "seconds before giving up with exit status 3")
    _add(
        wait,
        "--partition",
        str,
        None,
        "wait for this requested partition to be Available instead of the build to end",
    )
    return root


def _settings(args: argparse.Namespace, upstream: str, **extra: Any) -> Settings:
    return Settings(
        upstream=upstream,
        **extra,
        host=args.host,
        port=args.port,
        poll_active=args.poll_active,
        poll_idle=args.poll_idle,
        grace=args.grace,
        partition_refresh=args.partition_refresh,
    )


async def _listen(app: web.Application, host: str, port: int) -> web.AppRunner:
    # handler_cancellation: a client that goes away ends its stream's handler at once,
    # so its subscriber and watch are released without waiting for the next write.
    # shutdown_timeout: streams end on shutdown by themselves; this bounds anything else.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return runner


def _bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


async def _until_stopped(*runners: web.AppRunner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


async def serve(args: argparse.Namespace) -> None:
    if not args.upstream:
        raise UsageError(f"--upstream (or {_env('--upstream')}) is required")
    settings = _settings(args, args.upstream, redis=args.redis, lease_ttl=args.lease_ttl)
    redis = None
    if settings.redis:
        try:
            redis = await connect(settings.redis)
        except BusUnavailable as exc:
            raise UsageError(str(exc)) from exc
    runner = await _listen(create_app(settings, redis), settings.host, settings.port)
    shared = f", sharing builds through {settings.redis}" if settings.redis else ""
    print(
        f"buildcast gateway on http://{settings.host}:{_bound_port(runner)}/ "
        f"following {settings.upstream}{shared}",
        flush=True,
    )
    await _until_stopped(runner)


async def simulate(args: argparse.Namespace) -> None:
    sim = Simulator(seed=args.seed)
    app = create_simulator_app(
        sim,
        spelling=args.spelling,
        enum_style=args.enum_style,
        tick=args.tick,
        keep_active=args.keep_active,
    )
    runner = await _listen(app, args.host, args.port)
    print(
        f"simulated Build Graph Service on http://{args.host}:{_bound_port(runner)}/api/v1/",
        flush=True,
    )
    await _until_stopped(runner)


async def demo(args: argparse.Namespace) -> None:
    sim = Simulator(seed=args.seed)
    # Datasets of their own: the lively builds' refs must not overwrite these statuses.
    showcase = [f"playlists/date=2026-11-27/region={region}" for region in ("eu", "us", "apac")]
    showcase.append("top-charts/date=2026-11-27")
    builds = [
        # One build shows every case at once: a failing job, a delegated partition, a
        # log line that would run script if a page rendered it as HTML.
        sim.create_build(
            showcase, fail=[showcase[1]], delegate=[showcase[3]], hostile=True, log_lines=25
        ),
        sim.create_demo_build(),
        sim.create_demo_build(),
    ]
    # A step every 2 s: slow enough to watch, and the showcase runs for about a minute.
    sim_runner = await _listen(create_simulator_app(sim, tick=2.0, keep_active=4), "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{_bound_port(sim_runner)}"
    settings = _settings(args, upstream)
    runner = await _listen(create_app(settings), settings.host, settings.port)
    base = f"http://{settings.host}:{_bound_port(runner)}"
    print(
        f"Buildcast demo: a simulated Build Graph Service at {upstream}, the gateway at {base}/",
        "Open in a browser:",
        f"  {base}/                 home: open a build, see the watched ones",
        *(f"  {base}/builds/{build}" for build in builds),
        f"Follow from a shell:  curl -N {base}/api/v1/builds/{builds[0]}/stream",
        "Press Ctrl+C to stop.",
        sep="\n",
        flush=True,
    )
    await _until_stopped(runner, sim_runner)


# --- tail and wait: clients of a gateway


async def tail(args: argparse.Namespace) -> int:
    show = _Tail(sys.stdout, json_lines=args.json, colour=_colour(sys.stdout))
    try:
        async with Client(args.gateway) as client:
            updates = client.follow(
                args.build_id, until_ended=True, on_connection=_reporter("tail", args.gateway)
            )
            async for update in updates:
                show(update)
    except ClientError as exc:
        print(f"buildcast tail: {exc}", file=sys.stderr)
        return UNUSABLE
    except BrokenPipeError:
        # The reader left (`| head -1`): stop quietly; stdout cannot even be flushed at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def wait(args: argparse.Namespace) -> int:
    build_id, ref = args.build_id, args.partition
    last: View | None = None
    async with Client(args.gateway) as client:
        try:
            async with asyncio.timeout(args.timeout):
                updates = client.follow(build_id, on_connection=_reporter("wait", args.gateway))
                async for update in updates:
                    if update.view is None:
                        continue
                    last = update.view
                    if (outcome := _waited(build_id, ref, last)) is not None:
                        status, line = outcome
                        print(line, file=sys.stderr if status == UNUSABLE else sys.stdout)
                        return status
        except TimeoutError:
            where = (
                "the gateway never answered" if last is None else f"{build_id} is {last['status']}"
            )
            print(f"buildcast wait: gave up after {args.timeout:g} s; {where}", file=sys.stderr)
            return TIMED_OUT
        except ClientError as exc:
            print(f"buildcast wait: {exc}", file=sys.stderr)
            return UNUSABLE
    return UNUSABLE  # not reached: a one-build follow ends only by raising


def _waited(build_id: str, ref: str | None, view: View) -> tuple[int, str] | None:
    """The exit status and line once the wait is over, or None while it goes on."""
    status = view["status"]
    if ref is None:
        code = BUILD_EXIT.get(status)
        return None if code is None else (code, f"{build_id} {status}")
    if ref not in view["requestedPartitions"]:
        return UNUSABLE, f"buildcast wait: {build_id} did not request partition {ref}"
    part = (view["partitions"].get(ref) or {}).get("status")
    line = f"{ref} {part or 'PartitionUnknown'} ({build_id} {status})"
    if part == "PartitionAvailable":
        return COMPLETED, line
    if part == "PartitionFailed":
        return FAILED, line
    code = BUILD_EXIT.get(status)  # the build ended without it Available
    return None if code is None else (CANCELLED if code == CANCELLED else FAILED, line)


def _reporter(command: str, gateway: str) -> OnConnection:
    """One line on stderr when the gateway goes away, one when it is back."""

    def report(change: Connectivity) -> None:
        if change.reachable:
            line = f"gateway {gateway} reachable again"
        else:
            line = f"gateway {gateway} {change.detail}, retrying"
        print(f"buildcast {command}: {line}", file=sys.stderr, flush=True)

    return report


def _colour(stream: TextIO) -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns colours off; so does a pipe."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


# Upstream text (messages, log lines) may hold escape sequences: on a terminal they could
# move the cursor, retitle the window or hide lines. Shown escaped, never interpreted.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_PAINT = {
    "Completed": "32",
    "Available": "32",
    "Failed": "31",
    "Cancelled": "33",
    "Delegated": "35",
    "Building": "36",
    "Executing": "36",
    "Running": "36",
    "Planning": "34",
    "Scheduled": "34",
}
_QUIET_KEYS = frozenset({"seq", "partitions", "events", "updatedAtMs", "createdAtMs"})


def _clean(text: object) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text)).replace("\n", " ")


def _short(status: object) -> str:
    """`PartitionBuilding` -> `Building`: the prefix repeats what the line already says."""
    if not isinstance(status, str):
        return "Unknown"
    for prefix in ("BuildRequest", "Partition", "Job"):
        if status.startswith(prefix) and len(status) > len(prefix):
            return status[len(prefix) :]
    return status


class _Tail:
    """Writes each update as lines: for people (coloured on a terminal), or JSON for jq."""

    def __init__(self, out: TextIO, *, json_lines: bool, colour: bool) -> None:
        self._out = out
        self._json = json_lines
        self._colour = colour
        self._paused = False
        self._logs: dict[str, int] = {}  # log lines already shown, per job run

    def __call__(self, update: Update) -> None:
        if self._json:
            self._write(codec.dumps({**update.message, "buildStatus": update.status}).decode())
            return
        for line in self.lines(update):
            self._write(line)

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()  # PROTOCOL.md: every line as it happens, also into a pipe

    def lines(self, update: Update) -> list[str]:
        lines = []
        if update.kind == "paused":
            self._paused = True
            text = update.message.get("message") or "live updates paused"
            return [f"{self._time(None)}  {self._paint('paused', '33')}  {_clean(text)}"]
        if self._paused:
            self._paused = False
            lines.append(f"{self._time(None)}  {self._paint('live again', '32')}")
        view, previous = update.view, update.previous
        if view is None:
            return lines
        changes = update.changes if update.kind == "delta" or previous is None else None
        if update.kind == "snapshot" and previous is not None:
            changes = diff(previous, view)
        if previous is None or changes is None:
            self._seen_logs(view)
            return [*lines, self._summary(view, again=previous is not None)]
        for event in changes.get("events", []):
            lines += self._event(event)
        for ref, entry in changes.get("partitions", {}).items():
            lines += self._partition(ref, entry, previous["partitions"].get(ref) or {})
        for key, value in changes.items():
            if key not in _QUIET_KEYS:
                lines.append(self._field(key, value, previous.get(key), view))
        return lines

    def _summary(self, view: View, *, again: bool) -> str:
        counts: dict[str, int] = {}
        for entry in view["partitions"].values():
            name = _short((entry or {}).get("status"))
            counts[name] = counts.get(name, 0) + 1
        parts = ", ".join(f"{n} {self._paint_status(name)}" for name, n in counts.items())
        stale = "  (stale: the upstream cannot be read)" if view.get("stale") else ""
        what = "resynchronised: " if again else ""
        return (
            f"{self._time(view.get('updatedAtMs'))}  {what}{_clean(view.get('buildId'))} "
            f"{self._paint_status(_short(view['status']))}  "
            f"{len(view['partitions'])} partitions: {parts or 'none'}  "
            f"{len(view['events'])} events{stale}"
        )

    def _event(self, event: dict[str, Any]) -> list[str]:
        job = event.get("job") if isinstance(event.get("job"), dict) else None
        about = ""
        if job is not None:
            about = (
                f"  {_clean(job.get('jobLabel'))} {self._paint_status(_short(job.get('status')))}"
            )
        elif event.get("partitionRef"):
            about = f"  {_clean(event['partitionRef'])}"
        kind = self._paint(_clean(event.get("eventType")), "1")
        lines = [
            f"{self._time(event.get('timestampMs'))}  {kind}  {_clean(event.get('message'))}{about}"
        ]
        if job is not None and isinstance(job.get("logLines"), list):
            run = str(job.get("jobRunId"))
            shown = self._logs.get(run, 0)
            lines += [f"          | {_clean(text)}" for text in job["logLines"][shown:]]
            self._logs[run] = max(shown, len(job["logLines"]))
        return lines

    def _partition(self, ref: str, entry: dict[str, Any], old: dict[str, Any]) -> list[str]:
        status, was = entry.get("status"), old.get("status")
        delegated = entry.get("delegatedTo")
        if status == was and delegated == old.get("delegatedTo"):
            return []
        to = f" (delegated to {_clean(delegated)})" if delegated else ""
        return [
            f"{self._time(entry.get('updatedAtMs'))}  {_clean(ref)}: "
            f"{self._paint_status(_short(was))} -> {self._paint_status(_short(status))}{to}"
        ]

    def _field(self, key: str, value: Any, was: Any, view: View) -> str:
        when = self._time(view.get("updatedAtMs"))
        if key == "status":
            was, value = self._paint_status(_short(was)), self._paint_status(_short(value))
            return f"{when}  status: {was} -> {value}"
        if key == "stale":
            text = (
                "the upstream cannot be read: showing the last good state"
                if value
                else "the upstream can be read again"
            )
            return f"{when}  {self._paint(text, '33' if value else '32')}"
        return f"{when}  {_clean(key)}: {_clean(codec.dumps(value).decode())}"

    def _seen_logs(self, view: View) -> None:
        for event in view["events"]:
            job = event.get("job")
            if isinstance(job, dict) and isinstance(job.get("logLines"), list):
                run = str(job.get("jobRunId"))
                self._logs[run] = max(self._logs.get(run, 0), len(job["logLines"]))

    def _time(self, ms: object) -> str:
        """Local wall-clock time of the change (its own timestamp when it has one)."""
        at = datetime.fromtimestamp(ms / 1000) if isinstance(ms, int) else datetime.now()
        return self._paint(at.strftime("%H:%M:%S"), "2")

    def _paint_status(self, name: str) -> str:
        return self._paint(name, _PAINT.get(name))

    def _paint(self, text: str, sgr: str | None) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self._colour and sgr else text


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int | None]]] = {
    "serve": serve,
    "demo": demo,
    "simulate": simulate,
    "tail": tail,
    "wait": wait,
}


def _runner() -> asyncio.Runner:
    """uvloop where it is installed (the default on Linux), plain asyncio elsewhere."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per upstream request is noise
    try:
        with _runner() as runner:
            status = runner.run(COMMANDS[args.command](args))
    except UsageError as exc:
        print(f"buildcast {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status or 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
