"""The `buildcast` command: serve, demo, simulate, tail, wait.

Every option can also come from the environment as `BUILDCAST_<OPTION>`
(`--poll-active` is `BUILDCAST_POLL_ACTIVE`); the command line wins. Bad
options, a taken port or an unreachable dependency end with one clear line
and a non-zero exit, never a traceback.

`tail` and `wait` are clients of a running gateway (`gateway.client`): they
reconnect and resume by themselves, and say so in one line when it is away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import MISSING
from typing import Any

from aiohttp import web

from gateway import __version__, aio, logs, settings, workers
from gateway.app import create_app, metrics_app
from gateway.backends.redis.connection import connect, redacted
from gateway.errors import BusUnavailable
from gateway.guard.runner import Runner
from gateway.ops import access
from gateway.ops.drain import drain
from gateway.settings import Settings
from gateway.simulator import Simulator, create_simulator_app

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
DEFAULT_GATEWAY = "http://127.0.0.1:8080"
REDIS_WAIT = 10.0
"""Seconds `serve` waits for Redis at start (compose may start it a moment later)."""

SERVE_SETTINGS = (
    "upstream",
    "redis",
    "host",
    "port",
    "poll_active",
    "poll_idle",
    "grace",
    "partition_refresh",
    "lease_ttl",
    "allowed_origins",
    "auth_secret",
    "max_builds",
    "max_connections",
    "max_connections_per_client",
    "trusted_proxies",
    "upstream_max_bytes",
    "drain_seconds",
    "metrics_port",
)
DEMO_SETTINGS = ("host", "port", "poll_active", "poll_idle", "grace", "partition_refresh")


class UsageError(Exception):
    """A bad option or environment value: reported as one line, exit status 2."""


def _env(flag: str) -> str:
    return "BUILDCAST_" + flag.lstrip("-").replace("-", "_").upper()


def _argument(parse: settings.Parse) -> Callable[[str], Any]:
    """`parse` as argparse wants it: its ValueError's words become argparse's message."""

    def argument(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return argument


def _add(
    parser: argparse.ArgumentParser,
    flag: str,
    parse: settings.Parse,
    default: Any,
    help: str,
    dest: str | None = None,
) -> None:
    """An option whose value comes from the command line, else its environment variable."""
    env = _env(flag)
    shown = "" if default in (None, ()) else f"; default {default}"
    parser.add_argument(
        flag,
        dest=dest or flag.lstrip("-").replace("-", "_"),
        metavar=_METAVARS.get(parse, flag.lstrip("-").split("-")[-1].upper()),
        type=_argument(parse),
        default=os.environ.get(env, default),
        help=f"{help} (env {env}{shown})",
    )


_METAVARS: dict[settings.Parse, str] = {
    settings.seconds: "S",
    settings.tcp_port: "PORT",
    settings.count: "N",
    settings.http_url: "URL",
    settings.redis_url: "URL",
    settings.origins: "ORIGIN,...",
    settings.window: "S",
}


def _settings_options(
    parser: argparse.ArgumentParser, names: Sequence[str], **defaults: Any
) -> None:
    """The options of these settings, their help and defaults read from `Settings`."""
    known = settings.options()
    for name in names:
        setting = known[name]
        default = defaults.get(name, setting.default)
        default = None if default is MISSING else default
        _add(
            parser,
            settings.flag_of(setting),
            setting.metadata["parse"],
            default,
            setting.metadata["help"],
            dest=name,
        )


def _flag(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    env = _env(flag)
    parser.add_argument(
        flag,
        action="store_true",
        default=os.environ.get(env, "").lower() in ("1", "true", "yes", "on"),
        help=f"{help} (env {env}=1)",
    )


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _log_level(text: str) -> str:
    return _choice(*LOG_LEVELS)(text.upper())


GLOBAL_OPTIONS = {
    "--log-level": (_log_level, "INFO", "LEVEL", ", ".join(LOG_LEVELS)),
    "--log-format": (
        _choice(*LOG_FORMATS),
        "text",
        "FORMAT",
        "text, or json: one object a line (ts, level, logger, msg and fields)",
    ),
}
"""Options of every command, accepted before the command or after it."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="buildcast", description=__doc__.splitlines()[0])
    root.add_argument("--version", action="version", version=f"buildcast {__version__}")
    for flag, (parse, default, _, help) in GLOBAL_OPTIONS.items():
        _add(root, flag, parse, default, help)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        # The global options after the command too; there they win over those before.
        for flag, (parse, _, metavar, _) in GLOBAL_OPTIONS.items():
            sub.add_argument(
                flag,
                dest="command_" + flag[2:].replace("-", "_"),
                metavar=metavar,
                type=_argument(parse),
                help="as before the command",
            )
        return sub

    serve = command("serve", "run the gateway")
    _settings_options(serve, SERVE_SETTINGS)
    _add(
        serve,
        "--workers",
        settings.count,
        1,
        "processes serving the port, one per core (more than 1 needs --redis)",
    )

    demo = command("demo", "a simulated Build Graph Service and the gateway, in one process")
    _settings_options(demo, DEMO_SETTINGS)
    _add(demo, "--seed", int, 7, "seed of the simulated builds")

    simulate = command("simulate", "the simulated Build Graph Service alone")
    _settings_options(simulate, ("host", "port"), port=8081)
    _add(simulate, "--seed", int, 7, "seed of the simulated builds")
    _add(simulate, "--tick", settings.seconds, 1.5, "seconds between steps of every running build")
    _add(simulate, "--keep-active", int, 4, "running builds to keep alive (0: only those created)")
    _add(simulate, "--spelling", _choice("snake", "camel"), "snake", "field names: snake or camel")
    _add(
        simulate,
        "--enum-style",
        _choice("prefixed", "screaming", "bare"),
        "prefixed",
        "enum values as deployed versions send them: prefixed, screaming or bare",
    )

    token = command("token", "mint an access token for some builds (prints it)")
    _settings_options(token, ("auth_secret",))
    _add(
        token,
        "--builds",
        _patterns,
        None,
        "comma-separated build ids or patterns (* any run, ? one character) it grants",
    )
    _add(token, "--ttl", settings.duration, 8 * 3600.0, "how long it is valid (90s, 30m, 8h, 7d)")
    _add(token, "--sub", str, None, "who holds it, as logs name them")

    tail = command("tail", "follow one build and print each change, until it ends")
    tail.add_argument("build_id", metavar="BUILD_ID")
    _add(tail, "--gateway", settings.http_url, DEFAULT_GATEWAY, "base URL of the gateway")
    _add(tail, "--token", str, None, "access token, when the gateway asks for one")
    _flag(tail, "--json", "one JSON object a line: each message as received, plus buildStatus")
    _flag(
        tail,
        "--exit-status",
        "exit as wait does: 0 Completed, 1 Failed, 2 Cancelled, 4 not found or unusable gateway",
    )

    wait = command(
        "wait",
        "block until a build ends; exit status 0 Completed, 1 Failed, 2 Cancelled, "
        "3 timed out, 4 not found or unusable gateway",
    )
    wait.add_argument("build_id", metavar="BUILD_ID")
    _add(wait, "--gateway", settings.http_url, DEFAULT_GATEWAY, "base URL of the gateway")
    _add(wait, "--token", str, None, "access token, when the gateway asks for one")
    _add(wait, "--timeout", settings.seconds, None, "seconds before giving up with exit status 3")
    _add(
        wait,
        "--partition",
        str,
        None,
        "wait for this requested partition to be Available instead of the build to end",
    )
    return root


def _settings(args: argparse.Namespace, names: Sequence[str], **given: Any) -> Settings:
    """The Settings of these options, as parsed; `given` fixes others (the demo's upstream)."""
    values = {name: getattr(args, name) for name in names if name in vars(args)}
    return Settings(**{**values, **given})


async def _listen(
    app: web.Application,
    host: str,
    port: int,
    reuse_port: bool = False,
    header_timeout: float = 10.0,
    access_log: bool = False,
) -> web.AppRunner:
    # handler_cancellation: a client that goes away ends its stream's handler at once,
    # so its subscriber and watch are released without waiting for the next write.
    # shutdown_timeout: streams end on shutdown by themselves; this bounds anything else.
    # keepalive_timeout: a connection without a whole request this long after it opened or
    # after its last answer is closed (aiohttp >= 3.14.4): a slow-headers client cannot
    # hold it. Malformed requests are logged as one line (`server_log`).
    runner = Runner(
        app,
        handler_cancellation=True,
        access_log=access.log if access_log else None,
        access_log_class=access.AccessLogger,
        shutdown_timeout=5,
        keepalive_timeout=header_timeout,
        logger=logs.server_log,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return runner


def _bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


async def _until_stopped(
    *runners: web.AppRunner, draining: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Wait for SIGTERM or SIGINT, then run `draining` (a second signal cuts it short), then
    stop the runners."""
    signals: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        await signals.get()
        if draining is not None:
            drained = asyncio.ensure_future(draining())
            second = asyncio.ensure_future(signals.get())
            await asyncio.wait((drained, second), return_when=asyncio.FIRST_COMPLETED)
            if second.done():
                logging.getLogger(__name__).warning("a second signal: stopping now")
            await aio.stop([drained, second])
    finally:
        for runner in runners:
            await runner.cleanup()


def _check_serve(args: argparse.Namespace) -> None:
    if not args.upstream:
        raise UsageError(f"--upstream (or {_env('--upstream')}) is required")
    if args.workers > 1 and not args.redis:
        raise UsageError(
            "--workers needs --redis: each worker is a replica, and replicas share builds "
            "only through Redis"
        )


def _open_files_limit() -> int:
    """Raise this process's open-file limit to the most allowed: each viewer holds a socket.

    Many systems start processes at 1,024, which would refuse the 1,025th viewer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(args: argparse.Namespace, worker: int = 0) -> None:
    """One gateway process; `worker` numbers it among `--workers` (0: the only one)."""
    _check_serve(args)
    logging.getLogger(__name__).info("open files allowed: %d", _open_files_limit())
    config = _settings(args, SERVE_SETTINGS)
    redis = None
    if config.redis:
        try:
            redis = await connect(config.redis, within=REDIS_WAIT)
        except BusUnavailable as exc:
            raise UsageError(str(exc)) from exc
    app = create_app(config, redis)
    runner = await _listen(
        app,
        config.host,
        config.port,
        reuse_port=worker > 0,
        header_timeout=config.header_timeout,
        access_log=True,
    )
    runners = [runner]
    if config.metrics_port is not None:
        try:
            # Each worker is a replica with metrics of its own: worker n serves them on
            # --metrics-port + n - 1, so that each can be scraped.
            port = config.metrics_port + max(0, worker - 1) if config.metrics_port else 0
            runners.append(await _listen(metrics_app(app), config.host, port))
        except UsageError:
            await runner.cleanup()
            raise
    shared = f", sharing builds through {redacted(config.redis)}" if config.redis else ""
    who = f" (worker {worker} of {args.workers}, pid {os.getpid()})" if worker else ""
    metrics = f", metrics on port {_bound_port(runners[-1])}" if len(runners) > 1 else ""
    print(
        f"buildcast gateway on http://{config.host}:{_bound_port(runner)}/ "
        f"following {config.upstream}{shared}{metrics}{who}",
        flush=True,
    )
    await _until_stopped(
        *runners, draining=functools.partial(drain, app, runner, config.drain_seconds)
    )


def serve_workers(args: argparse.Namespace) -> int:
    """`serve --workers N`: the port reserved here, N spawned workers serving it."""
    _check_serve(args)
    try:
        reserved = workers.reserve(args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc
    with reserved:
        args.port = reserved.getsockname()[1]
        # Workers drain on the supervisor's SIGTERM: it waits the window, and a little more.
        stop_timeout = args.drain_seconds + workers.STOP_TIMEOUT
        return workers.supervise(args.workers, functools.partial(_worker, args), stop_timeout)


def _worker(args: argparse.Namespace, number: int) -> None:
    """A spawned worker process: one `serve`, its errors reported as `main` would."""
    os.setpgrp()  # signals come from the supervisor only (see gateway.workers)
    _log(args.log_level, args.log_format)
    try:
        with _runner() as runner:
            runner.run(serve(args, number))
    except UsageError as exc:
        print(f"buildcast serve: {exc}", file=sys.stderr)
        sys.exit(workers.USAGE_ERROR)
    except KeyboardInterrupt:
        pass


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
    config = _settings(args, DEMO_SETTINGS, upstream=upstream)
    runner = await _listen(create_app(config), config.host, config.port, access_log=True)
    base = f"http://{config.host}:{_bound_port(runner)}"
    print(
        f"Buildcast demo: a simulated Build Graph Service at {upstream}, the gateway at {base}/",
        "Open in a browser:",
        f"  {base}/                 home: open a build, see the watched ones",
        *(f"  {base}/builds/{build}" for build in builds),
        f"  {base}/wall?{'&'.join(f'build={b}' for b in builds)}",
        "      the wall display, for a team screen (/wall alone: every watched build)",
        f"Follow from a shell:  curl -N {base}/api/v1/builds/{builds[0]}/stream",
        f"                      buildcast tail {builds[0]} --gateway {base}",
        "Press Ctrl+C to stop.",
        sep="\n",
        flush=True,
    )
    await _until_stopped(runner, sim_runner)


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


async def token(args: argparse.Namespace) -> int:
    """Print a token: on stdout alone, so `TOKEN=$(buildcast token ...)` takes just it."""
    from gateway.guard.tokens import mint

    if not args.auth_secret:
        raise UsageError(f"--auth-secret (or {_env('--auth-secret')}) is required")
    if not args.builds:
        raise UsageError("--builds names the builds it grants, as 'nightly-*' or 'a,b'")
    try:
        minted = mint(args.auth_secret, args.builds, args.ttl, args.sub)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(minted)
    return 0


async def tail(args: argparse.Namespace) -> int:
    from gateway.client.tail import tail  # the client loads only for the commands that use it

    return await tail(
        args.build_id,
        args.gateway,
        json_lines=args.json,
        token=args.token,
        exit_status=args.exit_status,
    )


async def wait(args: argparse.Namespace) -> int:
    from gateway.client.wait import wait

    return await wait(args.build_id, args.gateway, args.timeout, args.partition, token=args.token)


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int | None]]] = {
    "serve": serve,
    "demo": demo,
    "simulate": simulate,
    "token": token,
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


def _log(level: str, form: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logs.JSON() if form == "json" else logs.TEXT)
    handler.addFilter(logs.Escape())  # clients' text cannot forge or hide a line
    handler.addFilter(logs.Throttle())  # nor flood the log with lines about random ids
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per upstream request is noise


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for flag in GLOBAL_OPTIONS:
        name = flag[2:].replace("-", "_")
        setattr(args, name, getattr(args, "command_" + name) or getattr(args, name))
    _log(args.log_level, args.log_format)
    try:
        if args.command == "serve" and args.workers > 1:
            return serve_workers(args)
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
