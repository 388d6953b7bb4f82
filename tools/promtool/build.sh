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
# shellcheck source=../go-cached-build.sh
source "$src/../go-cached-build.sh"
# The release comes from go.mod so the pin lives in one place.
# (go.mod's `require github.com/prometheus/prometheus vX` is one line while it is the only one.)
version=$(awk '$1 == "require" { $1 = "" ; $0 = $0 } $1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' "$src/go.mod")
[[ -n $version ]] || { printf 'build-promtool: cannot read the Prometheus version from %s/go.mod\n' "$src" >&2; exit 1; }

# promtool is a main package, so it cannot be imported by a wrapper of ours: the module
# requires Prometheus and builds its cmd/promtool directly. The version is stamped as
# upstream's Makefile does (common/version): module v0.3MM.P is Prometheus 3.MM.P.
release=${version#v}
if [[ $version =~ ^v0\.3([0-9]{2})\.([0-9]+)$ ]]; then
	release=3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}
fi
# The hash covers this script too: it sets the version stamp.
go_cached_build promtool "$version" "$src" "go.mod go.sum build.sh" github.com/prometheus/prometheus/cmd/promtool \
	"-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=module" \
	"5 to 7 minutes"
