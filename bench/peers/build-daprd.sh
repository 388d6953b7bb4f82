#!/usr/bin/env bash
# Builds daprd v1.18.2 from the wrapper module in bench/peers/daprd/ (only the
# in-memory state and pub/sub components and the SQLite name resolver) and
# caches it outside the clone, keyed by the version and a hash of the wrapper:
#
#   ${OTTAVA_CACHE:-$HOME/.cache/ottava}/daprd-v1.18.2-<hash>/daprd
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

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../tools/go-cached-build.sh
source "$here/../../tools/go-cached-build.sh"

go_cached_build daprd "$version" "$here/daprd" "go.mod go.sum main.go" . \
	"-X github.com/dapr/dapr/pkg/buildinfo.version=${version#v} \
	-X github.com/dapr/dapr/pkg/buildinfo.gitversion=$version \
	-X github.com/dapr/dapr/pkg/buildinfo.gitcommit=$commit" \
	"about 3 minutes"
