#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kubectl and helm from the Go module proxy into a
# cache directory outside the clone, keyed by version. A second run is a no-op.
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

command -v go >/dev/null || { echo "go is required to build the test control plane" >&2; exit 1; }
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT/bin"

echo ">> kubernetes $K8S_VERSION: resolving staging modules" >&2
k8s_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
staging_version="v0.${K8S_VERSION#v1.}"
etcd_version="$(awk '$1=="go.etcd.io/etcd/client/v3"{print $2; exit}' "$k8s_gomod")"

mkdir -p "$work/k8s" && cd "$work/k8s"
go mod init saigon.local/controlplane >/dev/null 2>&1
{
  echo "require k8s.io/kubernetes $K8S_VERSION"
  # k8s.io/kubernetes replaces each staging module with a local path; pin them
  # to the published v0.x.y that matches the release instead.
  sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$k8s_gomod"
} >> go.mod
echo ">> building kube-apiserver and kubectl (this takes several minutes once)" >&2
cat > tools.go <<GO
//go:build tools
package tools
import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >&2
go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
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
