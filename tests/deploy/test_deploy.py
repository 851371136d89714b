"""The deployment files agree with the code they deploy.

Docker does not run here. Instead, every command, option, variable, health check and
probe named in deploy/Dockerfile, docker-compose.yml and deploy/k8s/ is checked
against the real CLI parser and a real gateway, and deploy/nginx.conf is run by the
real nginx in front of a stand-in gateway. A typo in any of them would otherwise
only show once deployed: a container that exits at start, a probe that never
passes, a variable silently ignored, event streams stuck in a proxy's buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.app import create_app
from gateway.cli import parser
from gateway.settings import Settings, options
from gateway.simulator import Simulator, create_simulator_app
from tests.helpers.deploy import (
    DEPLOY,
    NGINX_CONF,
    ROOT,
    buildcast_services,
    compose,
    dockerfile_stages,
    final_stage,
    free_port,
    image_command,
    image_env,
    loopback_nginx_conf,
    nginx_command,
    nginx_upstream_servers,
    running_nginx,
    service_invocation,
)
from tests.helpers.sse import events

UNREACHABLE_UPSTREAM = "http://127.0.0.1:9"  # the discard port: nothing answers
HEARTBEAT = Settings(upstream=UNREACHABLE_UPSTREAM).heartbeat


# --- the CLI, as a container runs it


def commands() -> dict[str, argparse.ArgumentParser]:
    """`buildcast`'s subcommands, from the real parser."""
    root = parser()
    (subparsers,) = (a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def env_name(option: str) -> str:
    return "BUILDCAST_" + option.removeprefix("--").replace("-", "_").upper()


NOT_OPTIONS = ("--help", "--version")


def variables(command: str) -> dict[str, str]:
    """Every BUILDCAST_* variable `buildcast COMMAND` reads, with its option."""
    options = [*parser()._option_string_actions, *commands()[command]._option_string_actions]
    return {env_name(o): o for o in options if o.startswith("--") and o not in NOT_OPTIONS}


def invoke(
    argv: Sequence[str], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> argparse.Namespace:
    """`buildcast ARGV` as the CLI reads it in an environment holding `env`.

    Fails when a BUILDCAST_* variable is one the command does not read (the CLI
    ignores it silently) or when the CLI refuses an argument or a value.
    """
    assert argv and argv[0] in commands(), f"buildcast has no command {argv[:1]}"
    unknown = {name for name in env if name.startswith("BUILDCAST_")} - set(variables(argv[0]))
    assert not unknown, f"`buildcast {argv[0]}` reads no {sorted(unknown)}"
    with monkeypatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("BUILDCAST_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                return parser().parse_args(list(argv))  # defaults come from the environment
        except SystemExit:
            pytest.fail(f"buildcast {shlex.join(argv)} with {dict(env)}: {errors.getvalue()}")


# --- deploy/Dockerfile


def image_healthcheck() -> list[str]:
    (healthcheck,) = final_stage("HEALTHCHECK")
    _, _, command = healthcheck.partition(" CMD ")
    test: list[str] = json.loads(command)
    return ["CMD", *test]  # as compose writes a health check


def image_uid() -> int:
    (user,) = final_stage("USER")
    return int(user.split(":")[0])


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, with /) out of the build context."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        # A pattern matches a path or one of its parents; `**/` also matches no folder.
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            excluded = not keep
    return excluded


def test_the_image_is_slim_python_and_runs_unprivileged() -> None:
    for stage in dockerfile_stages():
        base = stage[0].args.split()[0]
        assert re.fullmatch(r"python:3\.1[12]-slim", base), base
    uid = image_uid()
    assert uid != 0
    assert image_env()["BUILDCAST_HOST"] == "0.0.0.0"  # reachable from outside the container
    port = image_env().get("BUILDCAST_PORT", "8080")
    assert final_stage("EXPOSE") == [port] == ["8080"]


def test_the_build_context_holds_what_the_image_copies_and_nothing_local() -> None:
    sources = [
        source
        for stage in dockerfile_stages()
        for i in stage
        if i.name == "COPY" and "--from" not in i.args
        for source in i.args.split()[:-1]
    ]
    # setuptools needs the readme; the wheel built from them carries web/ (the pages).
    assert {"pyproject.toml", "README.md", "gateway", "web"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not dockerignored(relative), f".dockerignore drops {relative}"
    for local in (".venv", ".git", "tests/artifacts", "gateway/__pycache__", "x.egg-info"):
        assert dockerignored(local), f".dockerignore lets {local} into the build context"


def test_the_image_runs_the_buildcast_command(monkeypatch: pytest.MonkeyPatch) -> None:
    (entrypoint,) = final_stage("ENTRYPOINT")
    # Exec form: buildcast is PID 1 and receives SIGTERM itself.
    assert json.loads(entrypoint) == ["buildcast"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "buildcast" in scripts
    args = invoke(image_command(), image_env(), monkeypatch)
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8080)


async def run_check(test: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run a `python -c` health check as Docker would, with this interpreter."""
    assert test[:3] == ["CMD", "python", "-c"], test
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        test[3],
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 15)


async def test_the_image_healthcheck_passes_on_a_live_gateway_even_with_the_upstream_down(
    aiohttp_server: Any,
) -> None:
    """Liveness must not depend on the upstream, or an upstream outage restarts every gateway."""
    test = image_healthcheck()
    assert "/healthz" in test[3]
    gateway: TestServer = await aiohttp_server(create_app(Settings(upstream=UNREACHABLE_UPSTREAM)))
    assert await run_check(test, {"BUILDCAST_PORT": str(gateway.port)}) == 0
    assert await run_check(test, {"BUILDCAST_PORT": str(free_port())}) != 0


# --- docker-compose.yml


def test_compose_runs_the_topology_in_dependency_order() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "simulator", "gateway-1", "gateway-2", "nginx"}
    assert services["redis"]["image"] == "redis:7-alpine"
    assert services["nginx"]["image"] == "nginx:1.27-alpine"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert (ROOT / "deploy" / "nginx.conf").is_file()
    assert "8080:8080" in services["nginx"]["ports"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on no service {dependency}"
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    for gateway in ("gateway-1", "gateway-2"):
        assert set(services[gateway]["depends_on"]) == {"redis", "simulator"}
    assert set(services["nginx"]["depends_on"]) == {"gateway-1", "gateway-2"}


def test_compose_commands_and_variables_are_the_cli_s(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    invoked = {
        name: invoke(*service_invocation(service), monkeypatch)
        for name, service in buildcast_services().items()
    }
    assert {name: args.command for name, args in invoked.items()} == {
        "simulator": "simulate",
        "gateway-1": "serve",
        "gateway-2": "serve",
    }
    simulator = invoked["simulator"]
    assert simulator.host == "0.0.0.0"
    for name in ("gateway-1", "gateway-2"):
        args = invoked[name]
        assert args.host == "0.0.0.0"
        # Both replicas poll the simulator and share the one Redis.
        upstream, bus = urlsplit(args.upstream), urlsplit(args.redis)
        assert (upstream.hostname, upstream.port) == ("simulator", simulator.port)
        assert bus.hostname in services and services[bus.hostname]["image"].startswith("redis:")
        assert (bus.port or 6379) == 6379
    # nginx proxies to exactly these gateways, on the ports they listen on.
    servers = nginx_upstream_servers(NGINX_CONF.read_text())
    assert sorted(servers) == sorted(
        (name, args.port) for name, args in invoked.items() if args.command == "serve"
    )


async def test_compose_health_checks_pass_on_live_services(aiohttp_server: Any) -> None:
    """Each check, run as written but against a loopback port, passes on the live service."""
    services = compose()["services"]
    gateway: TestServer = await aiohttp_server(create_app(Settings(upstream=UNREACHABLE_UPSTREAM)))
    simulator: TestServer = await aiohttp_server(create_simulator_app(Simulator(seed=1)))
    for name, server, port in (("gateway-1", gateway, 8080), ("simulator", simulator, 8081)):
        test = list(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in test[3], test
        test[3] = test[3].replace(f"127.0.0.1:{port}/", f"127.0.0.1:{server.port}/")
        assert await run_check(test) == 0, name
    # The gateways are healthy once ready, so nginx starts with a working bus behind it.
    assert "/readyz" in services["gateway-1"]["healthcheck"]["test"][3]
    nginx_check = " ".join(services["nginx"]["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:8080(/\S*)", nginx_check)
    assert path is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(gateway.make_url(path.group(1))) as response,
    ):
        assert response.status == 200, path.group(1)
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# --- deploy/k8s/


def manifests() -> dict[str, dict[str, Any]]:
    """The gateway's objects of deploy/k8s/*.yaml, by kind (one of each; Redis's are not)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["metadata"]["labels"]["app.kubernetes.io/name"] == "buildcast":
                assert document["kind"] not in objects, f"two {document['kind']} objects"
                objects[document["kind"]] = document
    return objects


def pod_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def test_k8s_objects_select_the_gateway_pods() -> None:
    objects = manifests()
    assert set(objects) == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "ServiceMonitor",
    }
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {port["name"]: port["containerPort"] for port in pod_container(deployment)["ports"]}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert all(port["targetPort"] in ports for port in service["ports"])
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    # A node drain may take a replica, never all of them, and is never blocked for good.
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 3
    if "maxUnavailable" in pdb:
        assert 1 <= pdb["maxUnavailable"] < replicas
    else:
        assert 1 <= pdb["minAvailable"] < replicas


def test_k8s_pods_drain_before_sigterm_and_run_unprivileged() -> None:
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod_container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(command[1])
    # Long enough for the endpoints to drop the pod; the gateway then drains its viewers.
    assert drain >= 3
    window = options()["drain_seconds"].default
    assert drain + window + 5 <= pod["terminationGracePeriodSeconds"]
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == image_uid()
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def k8s_invocation() -> tuple[list[str], dict[str, str]]:
    objects = manifests()
    container = pod_container(objects["Deployment"])
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    env = {**image_env(), **objects["ConfigMap"]["data"]}
    # Secrets (valueFrom) are not here: BUILDCAST_REDIS keeps its $(REDIS_PASSWORD).
    env.update(
        {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
    )
    return list(container.get("args", image_command())), env


def test_k8s_configuration_is_the_cli_s(monkeypatch: pytest.MonkeyPatch) -> None:
    argv, env = k8s_invocation()
    args = invoke(argv, env, monkeypatch)
    assert args.command == "serve"
    assert args.upstream and args.redis  # several replicas need the shared bus
    assert args.host == "0.0.0.0"
    ports = {
        p["name"]: p["containerPort"] for p in pod_container(manifests()["Deployment"])["ports"]
    }
    assert args.port in ports.values()


async def test_k8s_probes_answer_on_a_gateway_with_the_upstream_down(aiohttp_server: Any) -> None:
    container = pod_container(manifests()["Deployment"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert (readiness["path"], liveness["path"]) == ("/readyz", "/healthz")
    gateway: TestServer = await aiohttp_server(create_app(Settings(upstream=UNREACHABLE_UPSTREAM)))
    async with aiohttp.ClientSession() as session:
        for probe in (readiness, liveness):
            assert probe["port"] in ports or probe["port"] in ports.values()
            async with session.get(gateway.make_url(probe["path"])) as response:
                assert response.status == 200, probe


def test_operations_doc_lists_every_variable_of_serve() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in variables("serve") if f"`{name}`" not in doc]
    assert not missing, f"docs/operations.md does not mention {missing}"


# --- deploy/nginx.conf, run by the real nginx


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = loopback_nginx_conf(tmp_path, free_port(), ["127.0.0.1:9", "127.0.0.1:10"])
    result = subprocess.run(
        [*nginx_command(tmp_path, conf), "-t"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


Directive = tuple[str, list[str], list[Any] | None]


def nginx_directives(text: str) -> list[Directive]:
    """nginx.conf as a tree of (name, arguments, children or None)."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};'\"]+", text)
    position = 0

    def block() -> list[Directive]:
        nonlocal position
        directives: list[Directive] = []
        words: list[str] = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == ";":
                directives.append((words[0], words[1:], None))
                words = []
            elif token == "{":
                directives.append((words[0], words[1:], block()))
                words = []
            elif token == "}":
                return directives
            else:
                words.append(token)
        return directives

    return block()


def children(directives: list[Directive], name: str) -> list[Directive]:
    return [d for d in directives if d[0] == name]


def effective(path: str, name: str) -> list[str] | None:
    """The arguments of `name` that applies to a request for `path` (location, then server,
    then http), choosing the location as nginx does: exact, then regex, then prefix."""
    (http,) = children(nginx_directives(NGINX_CONF.read_text()), "http")
    (server,) = children(http[2] or [], "server")
    locations = children(server[2] or [], "location")
    exact = [loc for loc in locations if loc[1][:1] == ["="] and loc[1][1] == path]
    regex = [loc for loc in locations if loc[1][:1] == ["~"] and re.search(loc[1][1], path)]
    prefix = sorted(
        (loc for loc in locations if len(loc[1]) == 1 and path.startswith(loc[1][0])),
        key=lambda loc: len(loc[1][0]),
    )
    location = (exact or regex or prefix[-1:])[0]
    for scope in (location, server, http):
        found = children(scope[2] or [], name)
        if found:
            return found[-1][1]
    return None


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, value
    return int(match.group(1)) * units[match.group(2) or "s"]


STREAM_PATHS = ("/api/v1/builds/br-7f3a/stream", "/api/v1/stream")


@pytest.mark.parametrize("path", [*STREAM_PATHS, "/api/v1/ws"])
def test_nginx_keeps_quiet_streams_open_unbuffered_uncompressed(path: str) -> None:
    """nginx's default 60 s read timeout is four heartbeats: a gateway paused for a minute
    (CPU-throttled, or a quiet WebSocket) would see thousands of clients reconnect at once."""
    timeout = effective(path, "proxy_read_timeout")
    assert timeout is not None
    assert seconds(timeout[0]) >= max(600, 10 * HEARTBEAT)
    # nginx forwards what it has read either way; buffering off also stops it from
    # reading ahead of a slow client, so the gateway sees the backpressure and cuts it off.
    assert effective(path, "proxy_buffering") == ["off"]
    if path in STREAM_PATHS:
        assert effective(path, "gzip") == ["off"]  # gzip holds bytes back until a block fills


@dataclass
class StandIn:
    """A gateway stand-in: its streams hold after their first event until released."""

    release: asyncio.Event


STAND_IN = web.AppKey("stand_in", StandIn)


def stand_in_gateway() -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        # No X-Accel-Buffering header: only nginx.conf's own settings are tested.
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        first = json.dumps({"path": request.raw_path}).encode()
        await response.write(b"event: snapshot\ndata: " + first + b"\n\n")
        await request.app[STAND_IN].release.wait()
        await response.write(b'event: delta\ndata: {"path": null}\n\n')
        return response

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            await socket.send_str(message.data)
        return socket

    app = web.Application()
    app[STAND_IN] = StandIn(asyncio.Event())
    app.router.add_get("/api/v1/builds/{build_id}/stream", stream)
    app.router.add_get("/api/v1/stream", stream)
    app.router.add_get("/api/v1/echo", echo)
    app.router.add_get("/api/v1/ws", websocket)
    return app


@pytest.fixture
async def proxied(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[tuple[str, StandIn]]:
    """nginx with deploy/nginx.conf, both of its gateways being one stand-in."""
    stand_in: TestServer = await aiohttp_server(stand_in_gateway())
    address = f"127.0.0.1:{stand_in.port}"
    with running_nginx(tmp_path / "nginx", [address, address]) as url:
        yield url, stand_in.app[STAND_IN]


@pytest.mark.parametrize(
    "path", ["/api/v1/builds/br-%C3%A9t%C3%A9/stream", "/api/v1/stream?build=a&build=b%20c"]
)
async def test_nginx_passes_each_event_at_once_uncompressed_and_unaltered(
    proxied: tuple[str, StandIn], path: str
) -> None:
    url, stand_in = proxied
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        target = URL(url + path, encoded=True)
        headers = {"Accept-Encoding": "gzip, deflate"}
        async with session.get(target, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert "Content-Encoding" not in response.headers
            received = events(response)
            # The stand-in holds its stream open after this event: it must arrive anyway.
            first = await asyncio.wait_for(anext(received), 3)
            assert first.event == "snapshot"
            assert first.data["path"] == path  # build ids' escapes reach the gateway as sent
            stand_in.release.set()
            second = await asyncio.wait_for(anext(received), 3)
            assert second.event == "delta"


async def test_nginx_forwards_client_address_scheme_and_host(
    proxied: tuple[str, StandIn],
) -> None:
    url, _ = proxied
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/echo") as response:
        headers = await response.json()
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    # With its port: the gateway compares a browser's Origin with scheme + Host.
    assert headers["Host"] == urlsplit(url).netloc
    # Plain requests reuse upstream connections: no upgrade, no `Connection: close`.
    assert "Upgrade" not in headers
    assert headers.get("Connection", "").lower() != "close"


async def test_nginx_logs_paths_without_their_query_string(
    proxied: tuple[str, StandIn], tmp_path: Path
) -> None:
    """A stream's `?token=` must not reach nginx's log."""
    url, _ = proxied
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/v1/echo?token=SECRET-TOKEN") as response,
    ):
        assert response.status == 200
    log = tmp_path / "nginx" / "access.log"
    for _ in range(50):  # nginx writes the line as the request ends
        if log.exists() and "/api/v1/echo" in log.read_text():
            break
        await asyncio.sleep(0.05)
    assert "/api/v1/echo" in log.read_text() and "SECRET-TOKEN" not in log.read_text()


async def test_nginx_upgrades_websockets(proxied: tuple[str, StandIn]) -> None:
    url, _ = proxied
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/api/v1/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws,
    ):
        await ws.send_str('{"op": "ping"}')
        reply = await asyncio.wait_for(ws.receive(), 5)
        assert reply.data == '{"op": "ping"}'
