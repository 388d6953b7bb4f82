#!/usr/bin/env bash
# Builds the Java SDK programs (pom.xml, src/) once and caches them outside the clone:
#
#   tests/sdks/java/build.sh    →  last line of stdout: DIR, with DIR/sdk-tests.jar and DIR/lib/*.jar
#
# * DIR is ${OTTAVA_CACHE:-$HOME/.cache/ottava}/sdk-java-<hash>, <hash> covering pom.xml and
#   every file under src/: change one and the next run builds anew; otherwise it costs nothing.
# * Maven's repository stays its default (~/.m2, outside the clone); MAVEN_OPTS may point it
#   elsewhere (-Dmaven.repo.local=DIR), as for measuring a cold set-up.
# * The build runs in a temporary copy of pom.xml and src/ (target/ never lands in the clone),
#   with only three plugins (compiler, jar, dependency), Maven in batch mode, quiet, no stdin.
# * A lock keeps two runs from building at once: the second waits, then finds the first
#   one's build. Progress goes to stderr.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${OTTAVA_CACHE:-${HOME:?}/.cache/ottava}
hash=$(cd "$src" && find pom.xml src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
dest=$cache/sdk-java-$hash
log() { printf 'build-sdk-java: %s\n' "$*" >&2; }

if [[ -f $dest/sdk-tests.jar ]]; then
	log "cached: $dest"
	echo "$dest"
	exit 0
fi
command -v mvn >/dev/null || { log "mvn is not installed (apt-get install maven)"; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/sdk-java.lock"
if ! flock -n 9; then
	log "another build is running; waiting for it"
	flock 9
fi
if [[ -f $dest/sdk-tests.jar ]]; then # the build we waited for made it
	log "cached: $dest"
	echo "$dest"
	exit 0
fi

work=$(mktemp -d "$cache/.sdk-java-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$src/pom.xml" "$src/src" "$work/"
# Maven 3.8 prints bare colour resets (ESC[0m) even in batch mode: drop them.
mvn_() { (cd "$work" && mvn -B -q "$@" </dev/null 2>&1) | sed 's/\x1b\[0m//g' >&2; }

started=$SECONDS
log "building into $dest (first build: Maven downloads io.dapr:dapr-sdk and its ~45 jars, about 1 minute)"
mvn_ dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=out/lib
log "dependencies ready ($(find "$work/out/lib" -name '*.jar' | wc -l) jars), $((SECONDS - started)) s; compiling"
mvn_ compiler:compile jar:jar
mv "$work/target/sdk-tests.jar" "$work/out/"
rm -rf "$dest" # a directory left without its jar
mv -T "$work/out" "$dest"
log "built in $((SECONDS - started)) s: $dest"
echo "$dest"
