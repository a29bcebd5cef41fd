#!/usr/bin/env bash
# Builds the kube-apiserver of the oldest Kubernetes minor Saigon supports (the chart's
# kubeVersion floor) from the Go module proxy into the same cache as build.sh, keyed by version.
# etcd, kubectl and helm come from build.sh's build; only the API server differs. A second run
# is a no-op.
#
# Prints the directory that holds kube-apiserver on its last line; with --print-bin-dir it only
# prints that directory, built or not.
set -euo pipefail

FLOOR_VERSION="${SAIGON_K8S_FLOOR_VERSION:-v1.30.14}"
CACHE_ROOT="${SAIGON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/saigon}"
OUT="$CACHE_ROOT/controlplane/kube-apiserver-${FLOOR_VERSION}"

built() { [[ -f "$OUT/VERSIONS" && -x "$OUT/bin/kube-apiserver" ]]; }
# shellcheck source=scripts/lib/cached-build.sh
source "$(dirname "$0")/../../scripts/lib/cached-build.sh"
cached_build_begin "$OUT" built "$@"
# shellcheck source=tests/controlplane/k8s-module.sh
source "$(dirname "$0")/k8s-module.sh"

k8s_build_begin "$OUT"

echo ">> kubernetes $FLOOR_VERSION: building kube-apiserver (the supported floor; several minutes once)" >&2
k8s_module_init "$FLOOR_VERSION" "$work/k8s" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "$(k8s_ldflags "$FLOOR_VERSION")" -o "$OUT/bin/" k8s.io/kubernetes/cmd/kube-apiserver

printf 'kubernetes=%s\n' "$FLOOR_VERSION" > "$OUT/VERSIONS"
echo "$OUT/bin"
