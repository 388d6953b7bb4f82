#!/usr/bin/env bash
# Builds the tests' OpenTelemetry Collector from the module in tools/otelcol/
# (the core components the tests need: the OTLP receiver, the batch processor,
# the debug exporter, and contrib's Zipkin receiver and file exporter) and caches it outside the
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
# shellcheck source=../go-cached-build.sh
source "$src/../go-cached-build.sh"
# The release comes from go.mod so the pin lives in one place.
version=$(awk '$1 == "go.opentelemetry.io/collector/otelcol" && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")
[[ -n $version ]] || { printf 'build-otelcol: cannot read the collector version from %s/go.mod\n' "$src" >&2; exit 1; }

go_cached_build otelcol "$version" "$src" "go.mod go.sum main.go" . \
	"-X main.version=${version#v}" "about a minute and a half"
