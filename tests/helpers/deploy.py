"""The deployment files as tests read them, and real nginx run with deploy/nginx.conf."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


DEPLOY = ROOT / "deploy"


NGINX_CONF = DEPLOY / "nginx.conf"


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass(frozen=True)
class Instruction:
    name: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, stage by stage (continuations joined, comments dropped)."""
    logical: list[str] = []
    current = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        if (current + line).strip():
            logical.append((current + line).strip())
        current = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(name.upper(), args.strip()))
    return stages


def final_stage(name: str) -> list[str]:
    return [i.args for i in dockerfile_stages()[-1] if i.name == name]


def image_env() -> dict[str, str]:
    """The ENV of the image that runs."""
    env: dict[str, str] = {}
    for args in final_stage("ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def image_command() -> list[str]:
    (cmd,) = final_stage("CMD")
    command: list[str] = json.loads(cmd)
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def buildcast_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the image of deploy/Dockerfile."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def service_invocation(service: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """A compose service's `buildcast` arguments and its environment (image ENV included)."""
    command = service.get("command", image_command())
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return list(command), {**image_env(), **{k: str(v) for k, v in environment.items()}}


def nginx_upstream_servers(text: str) -> list[tuple[str, int]]:
    """The `server host:port` lines of nginx.conf's upstream block."""
    found = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", text, re.MULTILINE)
    return [(host, int(port)) for host, port in found]


def loopback_nginx_conf(workdir: Path, listen: int, gateways: Sequence[str]) -> Path:
    """deploy/nginx.conf as it can run here, written into `workdir`.

    Only what names the compose network or the container's files changes: the
    upstream servers become `gateways` (host:port), the listen port `listen`, and
    logs and temporary files move into `workdir`. Each substitution must apply
    exactly once, so a changed file fails here instead of being tested half-rewritten.
    """
    if not Path(NGINX).exists():
        pytest.fail("nginx not found: `bash scripts/test.sh` installs it", pytrace=False)
    text = NGINX_CONF.read_text()
    servers = nginx_upstream_servers(text)
    assert len(servers) == len(gateways), servers
    for (host, port), address in zip(servers, gateways, strict=True):
        text, count = re.subn(rf"\bserver\s+{re.escape(host)}:{port}\b", f"server {address}", text)
        assert count == 1, (host, port)
    substitutions = {
        r"\blisten\s+8080;": f"listen 127.0.0.1:{listen};",
        r"/var/log/nginx/access\.log": str(workdir / "access.log"),
        # `auto` would start a worker per core of a large CI machine.
        r"\bworker_processes\s+auto;": "worker_processes 2;",
        r"\bhttp\s*\{": "http {\n" + _temp_paths(workdir),
    }
    for pattern, replacement in substitutions.items():
        # Escaped, so the replacement is literal text whatever the paths hold.
        text, count = re.subn(pattern, replacement.replace("\\", "\\\\"), text)
        assert count == 1, f"deploy/nginx.conf has {pattern!r} {count} times, not once"
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


def _temp_paths(workdir: Path) -> str:
    """Temporary folders in `workdir`, for each module this nginx has (defaults need root)."""
    version = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=10).stderr
    modules = ["client_body", "proxy"] + [
        name
        for name in ("fastcgi", "uwsgi", "scgi")
        if f"--without-http_{name}_module" not in version
    ]
    return "".join(f"    {name}_temp_path {workdir / name};\n" for name in modules)


def nginx_command(workdir: Path, conf: Path, *directives: str) -> list[str]:
    """nginx on `conf` with its pid and error log in `workdir`, as root or not."""
    directives = (f"pid {workdir / 'nginx.pid'};", *directives)
    if os.geteuid() == 0:
        # Workers would run as nobody, who cannot enter the test's private folder.
        directives = (*directives, "user root;")
    return [
        NGINX,
        *("-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log")),
        *("-g", " ".join(directives)),
    ]


@contextlib.contextmanager
def running_nginx(workdir: Path, gateways: Sequence[str]) -> Iterator[str]:
    """nginx with deploy/nginx.conf in front of `gateways`; yields its base URL.

    Stopped by its PID (SIGTERM: a fast shutdown) when the block ends; its own
    process group, started here, is killed if it does not exit in time.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = loopback_nginx_conf(workdir, port, gateways)
    with (workdir / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            nginx_command(workdir, conf, "daemon off;"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited {process.returncode}: {nginx_log(workdir)}")
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.connect(("127.0.0.1", port))
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx did not listen in 10 s: {nginx_log(workdir)}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def nginx_log(workdir: Path) -> str:
    parts = []
    for name in ("nginx.out", "error.log"):
        with contextlib.suppress(OSError):
            parts.append((workdir / name).read_text(errors="replace")[-3000:])
    return "\n".join(parts)
