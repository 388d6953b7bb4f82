#!/usr/bin/env bash
# Builds the tests' promtool (Prometheus's rule checker, github.com/prometheus/prometheus/cmd/promtool)
# from the module in tools/promtool/ and caches it outside the clone, keyed by the Prometheus
# module version and a hash of the module:
#
#   ${OTTAVA_CACHE:-$HOME/.cache/ottava}/promtool-v0.316.0-<hash>/promtool
#
# (Prometheus 3.x publishes its Go module as v0.3xx.y: v0.316.0 is Prometheus 3.16.0.)
# A cached binary is reused as it is. The first build takes 5 to 7 minutes on 2 cores;
# progress goes to stderr. The last line of stdout is the binary's path:
#
#   promtool=$(tools/promtool/build.sh | tail -n1)
#
# tests/test_monitoring.py runs it, so the first `make test` on a machine builds it. Runs
# without stdin (CI). A lock keeps two runs from building at once: the second waits, then
# finds the first one's binary.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The release comes from go.mod so the pin lives in one place.
# (go.mod's `require github.com/prometheus/prometheus vX` is one line while it is the only one.)
version=$(awk '$1 == "require" { $1 = "" ; $0 = $0 } $1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")
[[ -n $version ]] || { printf 'build-promtool: cannot read the Prometheus version from %s/go.mod\n' "$src" >&2; exit 1; }
cache=${OTTAVA_CACHE:-${HOME:?}/.cache/ottava}
hash=$(cd "$src" && sha256sum go.mod go.sum build.sh | sha256sum | cut -c1-12)
dest=$cache/promtool-$version-$hash
binary=$dest/promtool

log() { printf 'build-promtool: %s\n' "$*" >&2; }

if [[ -x $binary ]]; then
	log "cached: $binary"
	echo "$binary"
	exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/promtool-$version.lock"
if ! flock -n 9; then
	log "another build is running; waiting for it"
	flock 9
fi
if [[ -x $binary ]]; then # the build we waited for made it
	log "cached: $binary"
	echo "$binary"
	exit 0
fi

work=$(mktemp -d "$cache/.promtool-$version-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Build in a copy: -mod=mod may rewrite go.mod and go.sum, never in the clone.
cp "$src/go.mod" "$src/go.sum" "$work/"
mkdir "$work/out"

log "building promtool $version with $(go env GOVERSION) into $dest (first build: 5 to 7 minutes)"
# promtool is a main package, so it cannot be imported by a wrapper of ours: the module
# requires Prometheus and builds its cmd/promtool directly. -mod=mod, not `go mod tidy`:
# tidy resolves the tests' imports of every module too, and some of those are refused by
# the proxy; a build only needs what promtool imports. CGO off and -s -w as upstream's
# release builds; the version is stamped as upstream's Makefile does (common/version).
# promtool --version shows the Prometheus release: module v0.3MM.P is Prometheus 3.MM.P.
release=${version#v}
if [[ $version =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]]; then
	release=3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}
fi
started=$SECONDS
(
	cd "$work"
	CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -v -mod=mod -trimpath -o out/promtool \
		-ldflags "-s -w -X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=module" \
		github.com/prometheus/prometheus/cmd/promtool </dev/null 2>&1
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

"$work/out/promtool" --version >/dev/null
rm -rf "$dest" # a directory left without its binary
mv -T "$work/out" "$dest"
log "built in $((SECONDS - started)) s: $binary"
echo "$binary"
