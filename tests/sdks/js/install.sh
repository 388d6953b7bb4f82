#!/usr/bin/env bash
# Installs the JavaScript SDK suite's dependencies (package-lock.json, with `npm ci`)
# once, outside the clone, and prints the node_modules folder to use as NODE_PATH:
#
#   NODE_PATH=$(tests/sdks/js/install.sh) node tests/sdks/js/client.js …
#
# * The folder is ${OTTAVA_CACHE:-$HOME/.cache/ottava}/sdk-js-<hash>/node_modules, <hash>
#   covering package.json, package-lock.json and .npmrc: change one and the next run
#   installs anew; otherwise the cached folder is used as it is (no npm, no network).
# * `npm ci` runs in a temporary copy of those three files, never in the clone, with
#   --ignore-scripts (the SDK needs none). .npmrc keeps registry addresses out of the
#   lock file (omit-lockfile-registry-resolved): npm fetches from the registry it is
#   configured with, as for any user.
# * A lock keeps two runs from installing at once: the second waits, then finds the first
#   one's folder. No stdin is read (CI). Progress goes to stderr; the folder is the last
#   line of stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${OTTAVA_CACHE:-${HOME:?}/.cache/ottava}
hash=$(cd "$here" && sha256sum package.json package-lock.json .npmrc | sha256sum | cut -c1-12)
dest=$cache/sdk-js-$hash
log() { printf 'sdk-js: %s\n' "$*" >&2; }

if [[ -d $dest/node_modules/@dapr/dapr ]]; then
	echo "$dest/node_modules"
	exit 0
fi
command -v npm >/dev/null || {
	log "npm is not installed (the JavaScript SDK suite needs Node.js 20 and npm)"
	exit 1
}
mkdir -p "$cache"
exec 9>"$cache/sdk-js.lock"
if ! flock -n 9; then
	log "another install is running; waiting for it"
	flock 9
fi
if [[ -d $dest/node_modules/@dapr/dapr ]]; then # the install we waited for made it
	echo "$dest/node_modules"
	exit 0
fi

work=$(mktemp -d "$cache/.sdk-js-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$work/"
log "installing @dapr/dapr with npm $(npm --version) into $dest (first install: about 10 s)"
started=$SECONDS
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error </dev/null >&2)
rm -rf "$dest" # a folder left without its node_modules
mv -T "$work" "$dest"
trap - EXIT
log "installed in $((SECONDS - started)) s: $dest/node_modules"
echo "$dest/node_modules"
