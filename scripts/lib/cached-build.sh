# shellcheck shell=bash
# Sourced by the scripts that build tools into the cache outside the clone (keyed by version):
# tests/controlplane/build.sh and scripts/go-tools.sh.
#
#   cached_build_begin OUT BUILT_FUNCTION "$@"
#
# With --print-bin-dir, prints OUT/bin and exits. When BUILT_FUNCTION says the build is complete,
# prints OUT/bin and exits. Otherwise takes OUT.lock (concurrent runs wait for the first build
# instead of racing it), checks again, and returns: the caller builds, then prints OUT/bin.
cached_build_begin() {
  local out=$1 built=$2
  shift 2
  if [[ "${1:-}" == "--print-bin-dir" ]] || "$built"; then
    echo "$out/bin"
    exit 0
  fi
  mkdir -p "$out"
  exec 9>"$out.lock"
  if command -v flock >/dev/null; then
    flock 9
    if "$built"; then
      echo "$out/bin"
      exit 0
    fi
  fi
}
