# shellcheck shell=bash
# Sourced by build.sh and build-floor.sh: a Go module that requires k8s.io/kubernetes at one
# release, so its commands build from the Go module proxy.
#
#   k8s_build_begin OUT                      go checked, GOFLAGS set, $work made, OUT/bin made
#   k8s_module_init VERSION DIR PACKAGE...   creates DIR, a module importing PACKAGEs; cds into it
#   k8s_ldflags VERSION                      the -ldflags that stamp the version into the binaries
#   K8S_GOMOD                                (set by k8s_module_init) k8s.io/kubernetes's go.mod

# Checks for go, sets the build environment, makes "$work" (removed on exit) and OUT/bin.
k8s_build_begin() {
  command -v go >/dev/null || { echo "go is required to build the test control plane" >&2; exit 1; }
  export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: $work is this build's directory
  trap "rm -rf '$work'" EXIT
  mkdir -p "$1/bin"
}

k8s_module_init() {
  local version=$1 dir=$2
  shift 2
  K8S_GOMOD="$(go mod download -json "k8s.io/kubernetes@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local staging_version="v0.${version#v1.}"
  mkdir -p "$dir"
  cd "$dir" || return 1
  go mod init saigon.local/controlplane >/dev/null 2>&1
  {
    echo "require k8s.io/kubernetes $version"
    # k8s.io/kubernetes replaces each staging module with a local path; pin them
    # to the published v0.x.y that matches the release instead.
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$K8S_GOMOD"
  } >> go.mod
  {
    printf '//go:build tools\npackage tools\nimport (\n'
    printf '\t_ "%s"\n' "$@"
    printf ')\n'
  } > tools.go
  go mod tidy >&2
}

k8s_ldflags() {
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$1 -X k8s.io/client-go/pkg/version.gitVersion=$1"
}
