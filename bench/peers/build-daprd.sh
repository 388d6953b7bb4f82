#!/usr/bin/env bash
# Builds daprd v1.18.2 from the wrapper module in bench/peers/daprd/ (only the
# in-memory state and pub/sub components and the SQLite name resolver) and
# caches it outside the clone, keyed by the version and a hash of the wrapper:
#
#   $HOME/.cache/ottava/daprd-v1.18.2-<hash>/daprd
#
# A cached binary is reused as it is. The first build takes about 3 minutes on
# 2 cores; progress goes to stderr. The last line of stdout is the binary's path:
#
#   daprd=$(bench/peers/build-daprd.sh | tail -n1)
#
# Runs without stdin (CI). A lock keeps two runs from building at once: the
# second waits, then finds the first one's binary.
set -euo pipefail

version=v1.18.2
# The commit of dapr's tag v1.18.2, so that `daprd --build-info` tells the truth.
commit=d2dd3747145e38e4d85db4714e26d7569c9c37db

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/daprd" && pwd)
cache=${HOME:?}/.cache/ottava
hash=$(cd "$src" && sha256sum go.mod go.sum main.go | sha256sum | cut -c1-12)
dest=$cache/daprd-$version-$hash
binary=$dest/daprd

log() { printf 'build-daprd: %s\n' "$*" >&2; }

if [[ -x $binary ]]; then
	log "cached: $binary"
	echo "$binary"
	exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/daprd-$version.lock"
if ! flock -n 9; then
	log "another build is running; waiting for it"
	flock 9
fi
if [[ -x $binary ]]; then # the build we waited for made it
	log "cached: $binary"
	echo "$binary"
	exit 0
fi

work=$(mktemp -d "$cache/.daprd-$version-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Build in a copy: -mod=mod may rewrite go.mod and go.sum, never in the clone.
cp "$src/go.mod" "$src/go.sum" "$src/main.go" "$work/"
mkdir "$work/out"

log "building daprd $version with $(go env GOVERSION) into $dest (first build: about 3 minutes)"
# -mod=mod, not `go mod tidy`: tidy resolves every package of every platform and
# build tag, tests included, and some of those modules are refused by the proxy;
# a build only needs what daprd imports. CGO off and -s -w as upstream's release.
started=$SECONDS
(
	cd "$work"
	CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -v -mod=mod -trimpath -o out/daprd \
		-ldflags "-s -w \
			-X github.com/dapr/dapr/pkg/buildinfo.version=${version#v} \
			-X github.com/dapr/dapr/pkg/buildinfo.gitversion=$version \
			-X github.com/dapr/dapr/pkg/buildinfo.gitcommit=$commit" \
		. </dev/null 2>&1
) | {
	# `go build -v` names each package as it compiles: show a count now and then.
	packages=0 downloads=0
	while IFS= read -r line; do
		case $line in
		"go: downloading "*)
			((downloads++)) || log "downloading modules"
			;;
		*" "*) printf '%s\n' "$line" >&2 ;; # package paths have no spaces; messages do
		*)
			packages=$((packages + 1))
			if ((packages % 100 == 0)); then
				log "$packages packages compiled, $((SECONDS - started)) s"
			fi
			;;
		esac
	done
}

"$work/out/daprd" --version >/dev/null
rm -rf "$dest" # a directory left without its binary
mv -T "$work/out" "$dest"
log "built in $((SECONDS - started)) s: $binary"
echo "$binary"
