# Sourced by the scripts that build a Go program for the tests or the benchmarks
# (tools/otelcol/build.sh, tools/promtool/build.sh, bench/peers/build-daprd.sh): one
# way to build from a pinned module and cache the binary outside the clone.
#
#   go_cached_build NAME VERSION SRC HASH_FILES PACKAGE LDFLAGS ABOUT
#
# * The binary goes to ${OTTAVA_CACHE:-$HOME/.cache/ottava}/NAME-VERSION-<hash>/NAME,
#   where <hash> covers HASH_FILES (space-separated, in SRC): change one and the next
#   run builds anew; otherwise the cached binary is used as it is.
# * The build runs in a temporary copy of SRC's go.mod, go.sum and *.go files (-mod=mod
#   may rewrite go.mod and go.sum, never in the clone), with -mod=mod, not `go mod tidy`:
#   tidy resolves the tests' imports of every module too, and some of those are refused
#   by the proxy; a build needs only what PACKAGE imports. CGO off, -s -w and LDFLAGS,
#   as upstream release builds.
# * A lock keeps two runs from building at once: the second waits, then finds the first
#   one's binary. No stdin is read (CI). Progress goes to stderr (ABOUT says how long a
#   first build takes); the binary's path is the last line of stdout.

go_cached_build() {
	local name=$1 version=$2 src=$3 hash_files=$4 package=$5 ldflags=$6 about=$7
	local cache=${OTTAVA_CACHE:-${HOME:?}/.cache/ottava}
	local hash dest binary work started
	# shellcheck disable=SC2086 # HASH_FILES is a list of names
	hash=$(cd "$src" && sha256sum $hash_files | sha256sum | cut -c1-12)
	dest=$cache/$name-$version-$hash
	binary=$dest/$name
	_gcb_log() { printf 'build-%s: %s\n' "$name" "$*" >&2; }

	if [[ -x $binary ]]; then
		_gcb_log "cached: $binary"
		echo "$binary"
		return 0
	fi
	command -v go >/dev/null || { _gcb_log "go is not installed"; return 1; }
	mkdir -p "$cache"
	exec 9>"$cache/$name-$version.lock"
	if ! flock -n 9; then
		_gcb_log "another build is running; waiting for it"
		flock 9
	fi
	if [[ -x $binary ]]; then # the build we waited for made it
		_gcb_log "cached: $binary"
		echo "$binary"
		return 0
	fi

	work=$(mktemp -d "$cache/.$name-$version-build.XXXXXX")
	# shellcheck disable=SC2064 # expand $work now: the trap runs after this function
	trap "rm -rf '$work'" EXIT
	cp "$src/go.mod" "$src/go.sum" "$work/"
	if compgen -G "$src/*.go" >/dev/null; then cp "$src"/*.go "$work/"; fi
	mkdir "$work/out"

	_gcb_log "building $name $version with $(go env GOVERSION) into $dest (first build: $about)"
	started=$SECONDS
	(
		cd "$work"
		CGO_ENABLED=0 GOWORK=off GOFLAGS= go build -v -mod=mod -trimpath -o "out/$name" \
			-ldflags "-s -w $ldflags" "$package" </dev/null 2>&1
	) | {
		# `go build -v` names each package as it compiles: show a count now and then.
		local packages=0 downloads=0 line
		while IFS= read -r line; do
			case $line in
			"go: downloading "*)
				((downloads++)) || _gcb_log "downloading modules"
				;;
			*" "*) printf '%s\n' "$line" >&2 ;; # package paths have no spaces; messages do
			*)
				packages=$((packages + 1))
				if ((packages % 100 == 0)); then
					_gcb_log "$packages packages compiled, $((SECONDS - started)) s"
				fi
				;;
			esac
		done
	}

	"$work/out/$name" --version >/dev/null
	rm -rf "$dest" # a directory left without its binary
	mv -T "$work/out" "$dest"
	_gcb_log "built in $((SECONDS - started)) s: $binary"
	echo "$binary"
}
