#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run).
#
#   bash scripts/test.sh            everything: installs what the tests need, then lint,
#                                   types and the whole suite (real Redis, nginx, Chromium)
#   bash scripts/test.sh --fast     the edit-test loop: no browser, no Redis, no benchmarks,
#                                   no Debian packages; under 90 s
#
# It installs, when missing: a virtualenv in .venv with the package and its test extras,
# pinned by constraints.txt, and (as root, through apt-get) Debian's chromium, redis-server,
# nginx and prometheus (for promtool). Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
if [ "${1:-}" = "--fast" ]; then
    fast=true
    shift
fi

step() { printf '\n== %s\n' "$*"; }

install_debian_packages() {
    # What the tests run for real: chromium (pages), redis-server and redis-tools (the
    # Redis bus, replicas, a Redis Cluster), nginx (the compose topology's proxy) and
    # prometheus for its promtool (deploy/prometheus/'s alert rules and their tests).
    local missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    [ ${#missing[@]} -gt 0 ] || return 0
    step "installing Debian packages: ${missing[*]}"
    # The tests start their own redis-server and nginx on loopback: keep the packages'
    # system services (prometheus' too) from starting (and listening on all interfaces).
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -z "$guard" ] || rm -f "$guard"
}

install_python_packages() {
    if ! python3 -m venv .venv >/dev/null 2>&1; then  # Debian's python3 needs python3-venv
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
    fi
    # Installed again only when what it is made of changed: the edit-test loop stays quick.
    local stamp=.venv/.buildcast-installed
    local wanted
    wanted=$(cat pyproject.toml constraints.txt | sha256sum)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        step "installing buildcast and its test dependencies into .venv"
        .venv/bin/pip install -qq --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
        echo "$wanted" >"$stamp"
    fi
}

$fast || install_debian_packages
install_python_packages

step "checking style and types (ruff, mypy --strict)"
.venv/bin/ruff check gateway tests bench
.venv/bin/ruff format --check gateway tests bench
.venv/bin/mypy gateway

if $fast; then
    step "running the fast lane (no browser, no Redis, no benchmarks; two processes)"
    exec .venv/bin/pytest -m "not browser and not integration and not bench" -n 2 --dist loadfile "$@"
fi
step "running the tests"
exec .venv/bin/pytest "$@"
