#!/usr/bin/env bash
# Installs everything the tests need, then runs them: a virtualenv with the package
# and its test extras, and Debian's chromium for the browser tests (as root, via
# apt-get, only when it is missing). Lint and type checks run first. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v chromium >/dev/null 2>&1; then
    step "installing Debian's chromium (browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

step "installing buildcast and its test dependencies into .venv"
if ! python3 -m venv .venv >/dev/null 2>&1; then  # Debian's python3 needs python3-venv
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
fi
.venv/bin/pip install -qq --disable-pip-version-check -e '.[test]'

step "checking style and types (ruff, mypy --strict)"
.venv/bin/ruff check gateway tests
.venv/bin/ruff format --check gateway tests
.venv/bin/mypy gateway

step "running the tests"
exec .venv/bin/pytest "$@"
