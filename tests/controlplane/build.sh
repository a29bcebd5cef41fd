#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kubectl and helm from the Go module proxy into a
# cache directory outside the clone, keyed by version. A second run is a no-op.
# build-floor.sh builds the oldest supported kube-apiserver beside it.
#
# Prints the directory that holds the binaries on its last line.
# With --print-bin-dir it only prints that directory, built or not (the test fixtures
# use it to find the binaries without ever starting a build).
set -euo pipefail

K8S_VERSION="${SAIGON_K8S_VERSION:-v1.36.3}"
HELM_VERSION="${SAIGON_HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${SAIGON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/saigon}"
OUT="$CACHE_ROOT/controlplane/k8s-${K8S_VERSION}_helm-${HELM_VERSION}"

# VERSIONS is written last: its presence means every binary was built completely.
built() { [[ -f "$OUT/VERSIONS" && -x "$OUT/bin/kube-apiserver" && -x "$OUT/bin/etcd" && -x "$OUT/bin/kubectl" && -x "$OUT/bin/helm" ]]; }
# shellcheck source=scripts/lib/cached-build.sh
source "$(dirname "$0")/../../scripts/lib/cached-build.sh"
cached_build_begin "$OUT" built "$@"
# shellcheck source=tests/controlplane/k8s-module.sh
source "$(dirname "$0")/k8s-module.sh"

k8s_build_begin "$OUT"

echo ">> kubernetes $K8S_VERSION: building kube-apiserver and kubectl (this takes several minutes once)" >&2
k8s_module_init "$K8S_VERSION" "$work/k8s" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
etcd_version="$(awk '$1=="go.etcd.io/etcd/client/v3"{print $2; exit}' "$K8S_GOMOD")"
go build -trimpath -ldflags "$(k8s_ldflags "$K8S_VERSION")" \
  -o "$OUT/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

echo ">> building etcd $etcd_version" >&2
mkdir -p "$work/etcd" && cd "$work/etcd"
go mod init saigon.local/etcd >/dev/null 2>&1
cat > tools.go <<GO
//go:build tools
package tools
import _ "go.etcd.io/etcd/server/v3"
GO
go get "go.etcd.io/etcd/server/v3@$etcd_version" >&2
go mod tidy >&2
go build -trimpath -ldflags "-s -w" -o "$OUT/bin/etcd" go.etcd.io/etcd/server/v3

echo ">> building helm $HELM_VERSION" >&2
GOBIN="$OUT/bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

printf 'kubernetes=%s\netcd=%s\nhelm=%s\n' "$K8S_VERSION" "$etcd_version" "$HELM_VERSION" > "$OUT/VERSIONS"
echo "$OUT/bin"
