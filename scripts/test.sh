#!/usr/bin/env bash
# Installs everything the tests need, then runs them: a virtualenv with the package
# and its test extras, and the Debian packages below (as root, via apt-get, only
# when missing). Lint and type checks run first. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# Debian packages the tests run for real: chromium (browser tests), redis-server
# (the Redis bus, replicas, Redis Cluster) and nginx (the compose topology's proxy).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    # The tests start their own redis-server and nginx on loopback: keep the
    # packages' system services from starting (and listening on all interfaces).
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -z "$guard" ] || rm -f "$guard"
fi

step "installing buildcast and its test dependencies into .venv"
if ! python3 -m venv .venv >/dev/null 2>&1; then  # Debian's python3 needs python3-venv
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
fi
.venv/bin/pip install -qq --disable-pip-version-check -c constraints.txt -e '.[test,bench]'

step "checking style and types (ruff, mypy --strict)"
.venv/bin/ruff check gateway tests bench
.venv/bin/ruff format --check gateway tests bench
.venv/bin/mypy gateway

step "running the tests"
exec .venv/bin/pytest "$@"
