#!/usr/bin/env bash
# Builds the Go SDK suite's programs (tests/sdks/go/, one binary with subcommands: the
# service/grpc app, the service/http app and the client) and caches the binary outside
# the clone, keyed by the go-sdk release and a hash of go.mod, go.sum and the sources:
#
#   ${OTTAVA_CACHE:-$HOME/.cache/ottava}/dapr-sdk-go-v1.15.0-<hash>/dapr-sdk-go
#
# A cached binary is reused as it is. The first build downloads the SDK's modules and
# compiles them (about a minute on 2 cores, less with a warm module cache); progress
# goes to stderr. The last line of stdout is the binary's path:
#
#   binary=$(tests/sdks/go/build.sh | tail -n1)
#
# tests/test_sdk_go.py runs it, so the first `make test` on a machine builds it. Runs
# without stdin (CI). A lock keeps two runs from building at once.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../../tools/go-cached-build.sh
source "$src/../../../tools/go-cached-build.sh"
# The release comes from go.mod so the pin lives in one place.
version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "github.com/dapr/go-sdk" && $(i + 1) ~ /^v/) { print $(i + 1); exit } }' "$src/go.mod")
[[ -n $version ]] || { printf 'build-dapr-sdk-go: cannot read the go-sdk version from %s/go.mod\n' "$src" >&2; exit 1; }

go_cached_build dapr-sdk-go "$version" "$src" "go.mod go.sum *.go" . "" "about a minute"
