#!/usr/bin/env bash
# Builds the control plane (kube-apiserver, kube-controller-manager, etcd), the
# node (kubelet, kube-proxy, kube-scheduler), kubectl and helm from the Go
# modules pinned in e2e/go.mod, plus two small programs of our own (pause, the
# node's sandbox image, and podcheck, the tests' workload), into a cache outside
# the clone, keyed by the Kubernetes version, so only the first build on a
# machine is slow (minutes on 2 cores, see README.md) and later ones take a second.
#
# Usage: e2e/build.sh            build what is missing or stale, print the bin dir
#        e2e/build.sh --bin-dir  only print the bin dir
#
# Environment: OTTAVA_CACHE (default $HOME/.cache/ottava) moves the cache.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# Versions come from go.mod so the pin lives in exactly one place.
mod_version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' go.mod; }
kube_version="$(mod_version k8s.io/kubernetes)"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"
helm_version="$(mod_version helm.sh/helm/v4)"
[[ -n "$kube_version" && -n "$etcd_version" && -n "$helm_version" ]] || {
  echo "build.sh: cannot read pinned versions from $here/go.mod" >&2
  exit 1
}

cache_root="${OTTAVA_CACHE:-$HOME/.cache/ottava}"
bin_dir="$cache_root/k8s-$kube_version/bin"
if [[ "${1:-}" == "--bin-dir" ]]; then
  echo "$bin_dir"
  exit 0
fi

binaries=(kube-apiserver kube-controller-manager kubectl etcd helm kubelet kube-scheduler kube-proxy pause podcheck)

# The stamp is a hash of every build input; a changed go.mod, main package or
# this script rebuilds even when the Kubernetes version is unchanged.
inputs_hash="$(cat go.mod go.sum build.sh cmd/*/*.go | sha256sum | cut -c1-16)"
stamp="$bin_dir/.inputs-$inputs_hash"
up_to_date() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
  [[ -e "$stamp" ]]
}
if up_to_date; then
  echo "[build] binaries for Kubernetes $kube_version are up to date in $bin_dir"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
mkdir -p "$bin_dir"
# Two clones (or a make and a pytest) building at once share the cache: the
# second waits for the first, then finds the binaries ready.
exec 8>"$bin_dir/.lock"
if ! flock -n 8; then
  echo "[build] another build into $bin_dir is running; waiting for it"
  flock 8
fi
if up_to_date; then
  echo "[build] binaries for Kubernetes $kube_version are up to date in $bin_dir"
  exit 0
fi
rm -f "$bin_dir"/.inputs-*

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
minor="${kube_version#v1.}"
minor="${minor%%.*}"
# The same -X flags as kubernetes' hack/lib/version.sh, so `kubectl version`
# and /version report the real release instead of v0.0.0-master.
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

echo "[build] Kubernetes $kube_version, etcd $etcd_version, helm $helm_version -> $bin_dir"
echo "[build] $(go version); a cold build takes a long while on few cores, progress follows"

export CGO_ENABLED=0
start_all=$SECONDS
i=0
for b in "${binaries[@]}"; do
  i=$((i + 1))
  case "$b" in
    helm) ldflags="$helm_ldflags" ;;
    etcd | pause | podcheck) ldflags="-s -w" ;;
    *) ldflags="$kube_ldflags" ;;
  esac
  echo "[build] ($i/${#binaries[@]}) $b: building..."
  start=$SECONDS
  # A heartbeat so a CI log shows the build is alive during the long compile.
  (
    while sleep 60; do
      echo "[build] ($i/${#binaries[@]}) $b: still building, $((SECONDS - start))s elapsed (total $((SECONDS - start_all))s)"
    done
  ) &
  heartbeat=$!
  status=0
  go build -buildvcs=false -trimpath -ldflags "$ldflags" -o "$bin_dir/.$b.tmp" "./cmd/$b" || status=$?
  kill "$heartbeat" 2>/dev/null || true
  wait "$heartbeat" 2>/dev/null || true
  if [[ $status != 0 ]]; then
    echo "[build] ($i/${#binaries[@]}) $b: FAILED after $((SECONDS - start))s" >&2
    exit "$status"
  fi
  mv -f "$bin_dir/.$b.tmp" "$bin_dir/$b"
  echo "[build] ($i/${#binaries[@]}) $b: done in $((SECONDS - start))s (total $((SECONDS - start_all))s)"
done
touch "$stamp"
echo "[build] all binaries built in $((SECONDS - start_all))s"
