"""Each benchmark in bench/ runs with its one command and writes its figures.

Smoke runs (`--quick`): they keep the benchmarks working as the code changes.
What they measure is for people to read (docs/performance.md); no test here
asserts a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import ROOT

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.mark.parametrize(
    ("script", "options", "sections"),
    [
        ("bigbuild.py", ["--quick"], ["sizes", "runs"]),
        ("fanout.py", ["--quick", "--only", "steady,idle"], ["steady", "idle"]),
        ("upstream.py", ["--quick"], ["buildcast", "seed", "table"]),
    ],
)
def test_a_benchmark_prints_its_table_and_writes_its_figures(
    script: str, options: list[str], sections: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *options, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    figures = json.loads(out.read_text())
    assert all(figures.get(section) for section in sections), list(figures)
    assert figures["machine"], "figures say which machine they come from"
    assert len(done.stdout.splitlines()) > 5, done.stdout
