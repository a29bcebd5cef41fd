#!/usr/bin/env bash
# Creates (or refreshes) the development environment: .venv with both packages
# installed editable plus the test tools, pinned by uv.lock. uv itself and its
# download cache live outside the clone, keyed by version, so a fresh clone
# re-creates the environment in seconds once the cache is warm.
set -euo pipefail
UV_VERSION="0.13.8"
CACHE_ROOT="${SAIGON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/saigon}"
UV_HOME="$CACHE_ROOT/uv-$UV_VERSION"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE_ROOT/uv-cache}"
export UV_PYTHON_DOWNLOADS=never

if [[ ! -x "$UV_HOME/bin/uv" ]]; then
  echo ">> installing uv $UV_VERSION into $UV_HOME" >&2
  python3 -m venv "$UV_HOME"
  "$UV_HOME/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
cd "$(dirname "$0")/.."
"$UV_HOME/bin/uv" sync --frozen --quiet "$@"
