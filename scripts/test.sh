#!/usr/bin/env bash
# Installs everything the tests need, then runs them: a virtualenv with the package
# and its test extras, and Debian's chromium for the browser tests (as root, via
# apt-get, only when it is missing). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if ! command -v chromium >/dev/null 2>&1; then
    step "installing Debian's chromium (browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

step "installing buildcast and its test dependencies into .venv"
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

step "running the tests"
exec .venv/bin/pytest "$@"
