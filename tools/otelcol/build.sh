#!/usr/bin/env bash
# Builds the tests' OpenTelemetry Collector from the module in tools/otelcol/
# (the core components the tests need: the OTLP receiver, the batch processor,
# the debug exporter, and contrib's file exporter) and caches it outside the
# clone, keyed by the collector release and a hash of the module:
#
#   ${OTTAVA_CACHE:-$HOME/.cache/ottava}/otelcol-v0.161.0-<hash>/otelcol
#
# A cached binary is reused as it is. The first build takes about a minute and
# a half on 2 cores; progress goes to stderr. The last line of stdout is the
# binary's path:
#
#   otelcol=$(tools/otelcol/build.sh | tail -n1)
#
# tests/servers/otelcol.py runs it, so the first `make test` on a machine builds
# it. Runs without stdin (CI). A lock keeps two runs from building at once: the
# second waits, then finds the first one's binary.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The release comes from go.mod so the pin lives in one place.
version=$(awk '$1 == "go.opentelemetry.io/collector/otelcol" && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")
[[ -n $version ]] || { printf 'build-otelcol: cannot read the collector version from %s/go.mod\n' "$src" >&2; exit 1; }
cache=${OTTAVA_CACHE:-${HOME:?}/.cache/ottava}
hash=$(cd "$src" && sha256sum go.mod go.sum main.go | sha256sum | cut -c1-12)
dest=$cache/otelcol-$version-$hash
binary=$dest/otelcol

log() { printf 'build-otelcol: %s\n' "$*" >&2; }

if [[ -x $binary ]]; then
	log "cached: $binary"
	echo "$binary"
	exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/otelcol-$version.lock"
if ! flock -n 9; then
	log "another build is running; waiting for it"
	flock 9
fi
if [[ -x $binary ]]; then # the build we waited for made it
	log "cached: $binary"
	echo "$binary"
	exit 0
fi

work=$(mktemp -d "$cache/.otelcol-$version-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Build in a copy: -mod=mod may rewrite go.mod and go.sum, never in the clone.
cp "$src/go.mod" "$src/go.sum" "$src/main.go" "$work/"
mkdir "$work/out"

log "building otelcol $version with $(go env GOVERSION) into $dest (first build: about a minute and a half)"
# -mod=mod, not `go mod tidy`: tidy resolves the tests' imports of every module
# too, and some of those are refused by the proxy; a build only needs what
# main.go imports. CGO off and -s -w as upstream's release builds.
started=$SECONDS
(
	cd "$work"
	CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -v -mod=mod -trimpath -o out/otelcol \
		-ldflags "-s -w -X main.version=${version#v}" \
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

"$work/out/otelcol" --version >/dev/null
rm -rf "$dest" # a directory left without its binary
mv -T "$work/out" "$dest"
log "built in $((SECONDS - started)) s: $binary"
echo "$binary"
