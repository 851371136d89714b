"""Real redis-server processes for tests: one server, or a Redis Cluster of three masters.

Each server listens on 127.0.0.1 only, on a free port, in a directory of its own, and
writes every command to its append-only file at once (`appendfsync always`): a
restart, even right after a write, comes back with the data. Every process started
here is stopped by its PID, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"
CLUSTER_BUS_OFFSET = 10_000
HOW_TO_INSTALL = "run the tests with `bash scripts/test.sh`, which installs redis-server"


class RedisUnavailable(RuntimeError):
    """redis-server or redis-cli is not installed, or a server would not start."""


def require_redis() -> None:
    """Fail with a clear line (not a skip) where redis-server or redis-cli is missing."""
    missing = [name for name in (REDIS_SERVER, REDIS_CLI) if shutil.which(name) is None]
    if missing:
        raise RedisUnavailable(f"{' and '.join(missing)} not found: {HOW_TO_INSTALL}")


def free_port(cluster: bool = False) -> int:
    """A loopback port nobody listens on now.

    A cluster node also listens on port + 10000 (its cluster bus), so its port must
    be at most 55535 with that one free too; the kernel's ephemeral picks are higher.
    """
    if not cluster:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            return port
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        if _bindable(port) and _bindable(port + CLUSTER_BUS_OFFSET):
            return port
    raise RedisUnavailable("no free loopback port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Managed:
    """Started on entering a `with` block, closed on leaving it, whatever happened."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(Managed):
    """One redis-server; `restart()` reuses its port, so clients reconnect to the same URL."""

    def __init__(
        self,
        *,
        port: int | None = None,
        cluster: bool = False,
        directory: Path | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        require_redis()
        self.port = port or free_port(cluster)
        self._owns_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="buildcast-redis-"))
        self.log = self.dir / "redis.log"
        self._extra_args = list(extra_args)
        self._start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A fresh sync client (the caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        args = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--dir", str(self.dir),
            "--daemonize", "no",
            *self._extra_args,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        with self.client() as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RedisUnavailable(f"redis-server exited at start:\n{self.log_tail()}")
                # Refused while binding, BusyLoadingError while it replays its AOF.
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisUnavailable(
                        f"redis-server did not answer PING in {self._start_timeout} s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis fsyncs and exits), then wait; SIGKILL if it does not exit in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush or say goodbye."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(timeout=10)

    def restart(self, empty: bool = False, down: float = 0.0) -> None:
        """Stop and start on the same port after `down` seconds; `empty` deletes the data
        first (a new, blank Redis)."""
        self.stop()
        time.sleep(down)
        if empty:
            shutil.rmtree(self.dir / "appendonlydir", ignore_errors=True)
            for name in ("appendonly.aof", "dump.rdb"):
                (self.dir / name).unlink(missing_ok=True)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop, then remove the directory this object created."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster(Managed):
    """Three masters on loopback, slots spread by `redis-cli --cluster create`, no replicas."""

    def __init__(self, masters: int = 3, ready_timeout: float = 30.0) -> None:
        require_redis()
        self._ready_timeout = ready_timeout
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
        ]  # fmt: skip
        self.nodes = [RedisServer(cluster=True, extra_args=cluster_args) for _ in range(masters)]

    @property
    def url(self) -> str:
        """One node's URL: a cluster client discovers the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        args = [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
        result = subprocess.run(
            [*args, "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=self._ready_timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RedisUnavailable(f"redis-cli --cluster create failed:\n{result.stdout}")

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + self._ready_timeout
        pending = list(self.nodes)
        while pending:
            with pending[0].client() as client, contextlib.suppress(redis.RedisError):
                info = client.execute_command("CLUSTER INFO")
                if isinstance(info, bytes | str):  # some redis-py versions parse it already
                    info = _cluster_info(info)
                if str(info.get("cluster_state")) == "ok":
                    pending.pop(0)
                    continue
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"cluster_state is not ok on port {pending[0].port} after "
                    f"{self._ready_timeout} s:\n{pending[0].log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.close()

    def close(self) -> None:
        self.stop()


def _cluster_info(text: bytes | str) -> dict[str, str]:
    if isinstance(text, bytes):
        text = text.decode()
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}
