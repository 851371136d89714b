"""`buildcast tail`: a gateway's stream of one build, for people and for scripts.

It follows the build through `Client`, which reconnects and resumes by itself,
and says so in one line on stderr when the gateway goes away and when it is
back. It prints what changed: colour only on a terminal, control characters
escaped (upstream text cannot drive the terminal); with `--json`, each message
as received, one object a line. With `--exit-status` the build's end is the exit
status, as `wait` says it, so a script stops on a failed build.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from typing import Any, TextIO

from gateway.client.connection import Client
from gateway.client.errors import ClientError
from gateway.client.updates import Update, report_connectivity
from gateway.client.wait import BUILD_EXIT, UNUSABLE
from gateway.protocol import codec
from gateway.protocol.diff import diff
from gateway.protocol.view import Changes, View


async def tail(
    build_id: str,
    gateway: str,
    *,
    json_lines: bool,
    token: str | None = None,
    exit_status: bool = False,
) -> int:
    """0 once the build ended (with `exit_status`, its outcome as `wait` says it); 4 when the
    gateway cannot be used or does not know the build."""
    show = _Tail(sys.stdout, json_lines=json_lines, colour=_colour(sys.stdout))
    last: View | None = None
    try:
        async with Client(gateway, token=token) as client:
            updates = client.follow(
                build_id, until_ended=True, on_connection=report_connectivity("tail", gateway)
            )
            async for update in updates:
                last = update.view or last
                show(update)
    except ClientError as exc:
        print(f"buildcast tail: {exc}", file=sys.stderr)
        return UNUSABLE
    except BrokenPipeError:
        # The reader left (`| head -1`): stop quietly; stdout cannot even be flushed at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not exit_status:
        return 0
    return UNUSABLE if last is None else BUILD_EXIT.get(last["status"], UNUSABLE)


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
        self._out.flush()  # the protocol: every line as it happens, also into a pipe

    def lines(self, update: Update) -> list[str]:
        lines: list[str] = []
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
        changes: Changes | None = update.changes
        if previous is None:
            changes = None
        elif update.kind == "snapshot":  # a resync: say what changed meanwhile, if a delta can
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
