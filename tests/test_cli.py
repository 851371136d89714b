"""The `buildcast` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

BUILDCAST = [sys.executable, "-m", "gateway.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BUILDCAST, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@contextmanager
def running(*args: str, ready: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A buildcast process's output up to its line holding `ready`; then Ctrl+C."""
    process = subprocess.Popen(
        [*BUILDCAST, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while not lines or ready not in lines[-1]:
            line = process.stdout.readline()
            assert line, "exited before it was ready"
            lines.append(line.rstrip("\n"))
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=15)
        assert process.returncode == 0, errors
        assert "Traceback" not in errors


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve"], {}, "--upstream (or BUILDCAST_UPSTREAM) is required"),
        (["serve", "--upstream", "ftp://x"], {}, "is not an http(s) URL"),
        (["serve", "--upstream", "http://x", "--port", "70000"], {}, "is not a TCP port"),
        (["serve"], {"BUILDCAST_UPSTREAM": "http://x", "BUILDCAST_POLL_ACTIVE": "-1"}, "positive"),
        (["simulate", "--enum-style", "loud"], {}, "is not one of"),
        (["--log-level", "chatty", "simulate"], {}, "is not one of"),
        (["serve", "--upstream", "http://x", "--redis", "http://r"], {}, "not a redis://"),
        (["serve", "--upstream", "http://x", "--allow-origin", "wall.test"], {}, "not an Origin"),
        (["serve", "--upstream", "http://x", "--auth-secret", "short"], {}, "at least 32 bytes"),
        (["serve", "--upstream", "http://x"], {"BUILDCAST_AUTH_SECRET": "s" * 31}, "32 bytes"),
        (["serve", "--upstream", "http://x", "--port", "abc"], {}, "'abc' is not a TCP port"),
        (["serve", "--upstream", "http://x", "--trusted-proxy", "lan"], {}, "not an address"),
        (["serve", "--upstream", "http://x", "--upstream-max-bytes", "lots"], {}, "not a size"),
        (["token", "--builds", "br-*"], {}, "--auth-secret (or BUILDCAST_AUTH_SECRET) is required"),
        (["token", "--auth-secret", "s" * 32], {}, "--builds names the builds"),
        pytest.param(
            ["serve", "--upstream", "http://x"],
            {"BUILDCAST_REDIS": "redis://:hunter2@127.0.0.1:9/0"},
            "cannot reach Redis at redis://:***@127.0.0.1:9/0",
            marks=pytest.mark.integration,  # retried for 10 s: out of the fast lane
            id="redis-unreachable",
        ),
        (["serve", "--upstream", "http://x", "--drain-seconds", "soon"], {}, "not a number"),
        (["serve", "--upstream", "http://x", "--log-format", "xml"], {}, "is not one of"),
    ],
)
def test_bad_options_give_one_clear_line(args: list[str], env: dict[str, str], says: str) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout, "a password never reaches a log"


def test_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--upstream", "http://127.0.0.1:9", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_prints_where_to_point_a_browser_and_serves_it() -> None:
    with running("demo", "--port", "0", ready="Ctrl+C") as (_, lines):
        urls = [line.split()[0] for line in lines if line.strip().startswith("http://")]
        home, *builds, wall = urls
        ids = [b.rsplit("/", 1)[1] for b in builds]
        assert len(builds) == 3 and wall == home + "wall?" + "&".join(f"build={b}" for b in ids)
        assert httpx.get(home).status_code == 200
        assert "text/html" in httpx.get(wall).headers["content-type"]
        page = httpx.get(builds[0])
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        build_id = builds[0].rsplit("/", 1)[1]
        view = httpx.get(home + f"api/v1/builds/{build_id}", timeout=10).json()
        assert view["buildId"] == build_id and view["requestedPartitions"]
        watched = httpx.get(home + "api/v1/watched").json()["builds"]
        assert build_id in [b["buildId"] for b in watched]


def test_a_shutdown_ends_open_streams_cleanly() -> None:
    with running("demo", "--port", "0", ready="Ctrl+C") as (process, lines):
        url = next(line.split()[-1] for line in lines if "curl -N" in line)
        with httpx.stream("GET", url, timeout=20) as response:
            chunks = response.iter_bytes()
            assert b"event: snapshot" in next(chunks)
            process.send_signal(signal.SIGINT)
            b"".join(chunks)  # the body ends as a response does: no reset, no hang
        process.wait(timeout=15)


def test_simulate_serves_the_spelling_it_is_told() -> None:
    args = ["--port", "0", "--spelling", "camel", "--enum-style", "screaming"]
    with running("simulate", *args, ready="http://") as (_, lines):
        base = re.search(r"http://\S+?/api/v1/", lines[-1])
        assert base is not None
        root = base.group(0).removesuffix("/api/v1/")
        build_id = httpx.get(root + "/_sim/builds").json()[0]["build_request_id"]
        build = httpx.get(root + f"/api/v1/builds/{build_id}").json()
        assert "buildRequestId" in build and "build_request_id" not in build
        assert build["status"].startswith("BUILD_REQUEST_")


def test_env_variables_configure_every_option() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    for env in ("BUILDCAST_UPSTREAM", "BUILDCAST_PORT", "BUILDCAST_POLL_ACTIVE", "BUILDCAST_GRACE"):
        assert env in result.stdout


def test_a_minted_token_is_printed_alone_and_opens_what_it_names() -> None:
    from gateway.guard.tokens import verify

    result = run(
        "token",
        "--builds",
        "nightly-*,br-7f3a",
        "--ttl",
        "2h",
        "--sub",
        "wall-3",
        env={"BUILDCAST_AUTH_SECRET": "s" * 32},
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "\n" not in token, "the token alone, for TOKEN=$(buildcast token ...)"
    granted = verify(token, "s" * 32, leeway=0)
    assert granted.patterns == ("nightly-*", "br-7f3a") and granted.subject == "wall-3"


def test_global_options_may_follow_the_command() -> None:
    result = run("simulate", "--log-level", "chatty")
    assert result.returncode == 2 and "is not one of" in result.stderr
    result = run("simulate", "--log-format", "xml")
    assert result.returncode == 2 and "'xml' is not one of text, json" in result.stderr
    assert "default None" not in run("serve", "--help").stdout


def test_version_is_the_package_s() -> None:
    from gateway import __version__

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"buildcast {__version__}"
