#!/usr/bin/env bash
# System packages the test suite needs beyond the Python environment:
# promtool (Debian package `prometheus`) to lint the runtime's /metrics output, and haproxy
# (Debian package `haproxy`) for the router tests and the routing benchmark, shellcheck, which
# actionlint runs over the workflows' shell steps, and PostgreSQL (Debian package `postgresql`:
# initdb and postgres under /usr/lib/postgresql/<version>/bin) for the user store's tests.
# Idempotent: does nothing when every tool is already on PATH.
set -euo pipefail

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
echo ">> installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
