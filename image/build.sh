#!/usr/bin/env bash
# Builds Ottava's container images without a container engine, from packaged tools only:
# debootstrap (a Debian bookworm minbase with Python 3.11), pip run by the image's own
# Python inside that root (so environment markers are evaluated for Debian's 3.11.2, not
# for the host's interpreter), umoci (OCI layers and image config) and skopeo (the
# docker-archive that both `docker load` and `ctr images import` accept).
#
# Usage:
#   image/build.sh ottava [OUT.tar]
#       ottava/ottava:<version> (version from pyproject.toml) into OUT.tar, by default
#       dist/ottava-<version>.image.tar; this is what `make image` runs.
#   image/build.sh app NAME:TAG DIR OUT.tar [--main FILE] [--user UID[:GID]] [--port PORT]...
#       a Python app on the same base: DIR's files in /app, DIR/requirements.txt installed
#       in /opt/venv, entrypoint `/opt/venv/bin/python3 /app/FILE` (default main.py, app.py
#       or DIR's only .py file), user 65532:65532 unless --user says otherwise.
#   image/build.sh rootfs DIR NAME:TAG OUT.tar [--entrypoint ARG]... [--cmd ARG]...
#       [--user UID[:GID]] [--env KEY=VALUE]... [--port PORT]... [--workdir PATH]
#       DIR as the image's only layer (e.g. a static `pause` binary); no base, no Python.
#   image/build.sh sizes
#       print the size breakdown of the last `ottava` image built
#
# Each command prints the archive's path as the last line on stdout; progress goes to
# stderr. Needs root (debootstrap, chroot, file ownership in layers); installs missing
# tools with apt-get. See image/README.md for the layout, sizes and times.
#
# Environment: OTTAVA_CACHE (default $HOME/.cache/ottava) moves the cache (under image/);
#   OTTAVA_DEBIAN_MIRROR replaces the Debian mirror read from the machine's apt sources;
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, PIP_DEFAULT_TIMEOUT and the proxy
#   variables reach pip inside the build root, with the host's CA bundle (build time only).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
self="$here/build.sh"

suite=bookworm
python_version=3.11
uid=65532
path_env=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cache_root="${OTTAVA_CACHE:-$HOME/.cache/ottava}/image"
started=$SECONDS

log() { echo "[image $((SECONDS - started))s] $*" >&2; }
die() { echo "image/build.sh: $*" >&2; exit 1; }
hash_of() { sha256sum | cut -c1-16; }

# --- tools --------------------------------------------------------------------------------

need_root() {
  [[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot and root-owned layer files need it): sudo $0 $*"
}

# Installs the packaged tools that are missing (a fresh CI machine has none of them).
need_tools() {
  local -A package_of=([debootstrap]=debootstrap [umoci]=umoci [skopeo]=skopeo [strip]=binutils [flock]=util-linux)
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("${package_of[$tool]}")
  done
  ((${#missing[@]} == 0)) && return
  log "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# --- Debian mirror, read from the machine's own apt sources --------------------------------

# Prints "URI SUITE" for every enabled `deb` source, from both the one-line format
# (sources.list, *.list) and deb822 (*.sources).
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '
      function flush(   i, j, u, s, nu, ns) {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
          nu = split(uris, u); ns = split(suites, s)
          for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
        }
        types = uris = suites = ""; enabled = "yes"
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[^ \t]/ {
        key = tolower(substr($0, 1, index($0, ":") - 1)); value = substr($0, index($0, ":") + 1)
        if (key == "types") types = value; else if (key == "uris") uris = value
        else if (key == "suites") suites = value; else if (key == "enabled") enabled = value
      }
      END { flush() }' "$f"
  done
}

# Sets debian_sources: "URI SUITE" lines for the suite, its -updates and its -security,
# as this machine's apt knows them.
read_debian_sources() {
  local uri s
  debian_sources=""
  while read -r uri s; do
    case "$s" in
      "$suite" | "$suite-updates") [[ -z "${OTTAVA_DEBIAN_MIRROR:-}" ]] && debian_sources+="${uri%/} $s"$'\n' ;;
      "$suite-security") debian_sources+="${uri%/} $s"$'\n' ;;
    esac
  done < <(apt_sources | awk '!seen[$0]++')
  if [[ -n "${OTTAVA_DEBIAN_MIRROR:-}" ]]; then
    debian_sources="${OTTAVA_DEBIAN_MIRROR%/} $suite"$'\n'"${OTTAVA_DEBIAN_MIRROR%/} $suite-updates"$'\n'"$debian_sources"
  fi
  mirror="$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$debian_sources")"
  [[ -n "$mirror" ]] || die "no 'deb' source for $suite in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set OTTAVA_DEBIAN_MIRROR"
}

# --- running things inside a root ----------------------------------------------------------

# Runs a command in ROOT with a clean environment: the host's PIP_* settings that point
# at host paths must not leak in. Network settings for pip are passed explicitly.
in_root() {
  local root="$1"
  shift
  local env=(PATH="$path_env" HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off)
  local var
  for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT \
    http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n "${!var:-}" ]] && env+=("$var=${!var}")
  done
  [[ -f "$root/tmp/ottava-build/host-ca.crt" ]] && env+=(PIP_CERT=/tmp/ottava-build/host-ca.crt)
  chroot "$root" /usr/bin/env -i "${env[@]}" "$@"
}

# The host reaches the package index; its CA bundle (which may hold a proxy's CA) is
# lent to the build root for pip and apt, and removed with the build root.
lend_host_ca() {
  local root="$1" bundle="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  mkdir -p "$root/tmp/ottava-build"
  [[ -f "$bundle" ]] && cp "$bundle" "$root/tmp/ottava-build/host-ca.crt"
  return 0
}

# Runs a long step with its output in a log; shows the log's end if it fails.
logged() {
  local name="$1"
  shift
  local out="$work/$name.log"
  if ! "$@" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    die "$name failed (full log: $out)"
  fi
}

# --- the base: Debian minbase with Python, pip and CA certificates (cached) ----------------

# Everything the runtime needs plus pip, which only the build uses (it is purged from the
# runtime). The root doubles as the build root: the venv made here at /opt/... by the
# image's own python is copied unchanged into the image.
base_packages=python3,python3-pip,ca-certificates

# Docs, manuals, translations: neither the build nor the image reads them. As Debian's
# slim images do, dpkg is also told to leave them out of any later install or upgrade.
remove_docs() {
  local root="$1"
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
    'path-exclude /usr/share/lintian/*' >"$root/etc/dpkg/dpkg.cfg.d/ottava-slim"
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian" "$root/usr/share/bash-completion"
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
}

make_base() {
  local target="$1"
  log "debootstrap --variant=minbase $suite from $mirror (about a minute)"
  if ! debootstrap --variant=minbase --include="$base_packages" "$suite" "$target" "$mirror" 2>&1 |
    tee "$work/debootstrap.log" |
    awk '$1 != "I:" { next }
      $2 == "Retrieving" && ++n % 25 == 0 { printf "[image]   debootstrap: retrieved %d packages\n", n; fflush() }
      $2 ~ /^(Extracting|Installing|Configuring|Base)$/ && !seen[$2]++ { printf "[image]   debootstrap: %s\n", $2; fflush() }' >&2; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed (full log: $work/debootstrap.log)"
  fi
  remove_docs "$target"
  log "apt-get upgrade from $suite-updates and $suite-security"
  awk 'NF == 2 { print "deb", $1, $2, "main" }' <<<"$debian_sources" >"$target/etc/apt/sources.list"
  lend_host_ca "$target"
  local ca=()
  [[ -f "$target/tmp/ottava-build/host-ca.crt" ]] && ca=(-o Acquire::https::CAInfo=/tmp/ottava-build/host-ca.crt)
  logged apt-update in_root "$target" apt-get -q "${ca[@]}" update
  logged apt-upgrade in_root "$target" apt-get -qy "${ca[@]}" upgrade
  in_root "$target" apt-get clean
  rm -rf "$target"/var/lib/apt/lists/* "$target/tmp/ottava-build"
}

ensure_base() {
  base_key="$({ echo "$suite $base_packages"; echo "$debian_sources"; declare -f make_base remove_docs; } | hash_of)"
  base="$cache_root/base-$base_key/rootfs"
  if [[ -x "$base/usr/bin/python3" ]]; then
    touch "$cache_root/base-$base_key"
    return
  fi
  rm -rf "$cache_root/base-$base_key"
  mkdir -p "$work/base"
  make_base "$work/base/rootfs"
  mv "$work/base" "$cache_root/base-$base_key"
  prune base- 2
}

# --- the runtime base layer: the base without what a running container never uses ---------

# Purged with dpkg, so the package database (which scanners read) stays true. Kept: dash
# (/bin/sh), coreutils, grep, sed, findutils (to look around with `kubectl exec`), dpkg
# with tar and diffutils (dpkg refuses to start without them), tzdata, Python and the
# libraries it links.
purge_build=(python3-pip python3-setuptools python3-wheel python3-pkg-resources python3-distutils python3-lib2to3)
purge_package_management=(apt libapt-pkg6.0 gpgv debian-archive-keyring adduser openssl
  libgnutls30 libp11-kit0 libunistring2 libidn2-0 libnettle8 libhogweed6 libtasn1-6 libseccomp2 libsystemd0
  libgcrypt20 libgpg-error0 liblz4-1 libxxhash0 libudev1)
purge_accounts=(login passwd libpam-modules libpam-modules-bin libpam-runtime libpam0g libsemanage2
  libsemanage-common libsepol2 libaudit1 libaudit-common libcap-ng0)
purge_system=(e2fsprogs libext2fs2 libss2 logsave util-linux util-linux-extra mount libmount1 libblkid1
  libsmartcols1 bsdutils sysvinit-utils hostname bash ncurses-bin mawk gzip)
# The other packages' removal scripts call these, so they go last.
purge_script_tools=(init-system-helpers debconf libdebconfclient0 perl-base)

make_runtime() {
  local root="$1"
  # The unprivileged user the chart and the injector run as (65532, as distroless'
  # "nonroot"); without a passwd entry getpwuid() fails for it.
  in_root "$root" groupadd --gid "$uid" ottava
  in_root "$root" useradd --uid "$uid" --gid "$uid" --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "ottava (unprivileged)" -K UID_MAX="$uid" ottava
  logged purge in_root "$root" dpkg --purge --force-remove-essential --force-depends \
    "${purge_build[@]}" "${purge_package_management[@]}" "${purge_accounts[@]}" "${purge_system[@]}"
  logged purge-script-tools in_root "$root" dpkg --purge --force-remove-essential --force-depends \
    "${purge_script_tools[@]}"
  rm -rf "$root/usr/lib/python3/dist-packages" "$root/etc/apt" "$root/var/lib/apt"
  remove_docs "$root" # removal scripts leave some (empty) directories behind
  # glibc's iconv modules: Python's codecs are its own and nothing here calls iconv(3).
  rm -rf "$root/usr/lib/x86_64-linux-gnu/gconv"
  # Logs and caches of the build, and the build machine's own network identity
  # (debootstrap copies it; the container runtime mounts the pod's own at run time).
  find "$root/var/log" "$root/var/cache" "$root/tmp" "$root/root" -mindepth 1 -delete
  find "$root/var/lib/dpkg" -name '*-old' -delete
  : >"$root/etc/resolv.conf"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  echo localhost >"$root/etc/hostname"
  # The runtime provides /dev; device nodes do not belong in a layer.
  find "$root/dev" -mindepth 1 -delete
}

ensure_runtime() {
  runtime_key="$({ echo "$base_key"; declare -f make_runtime; declare -p purge_build purge_package_management \
    purge_accounts purge_system purge_script_tools; } | hash_of)"
  runtime="$cache_root/runtime-$runtime_key"
  if [[ -f "$runtime/oci/index.json" ]]; then
    touch "$runtime"
    return
  fi
  log "trimming the runtime base (purge pip, apt, perl, accounts and disk tools; docs, man, locales)"
  rm -rf "$runtime"
  local bundle="$work/runtime-bundle"
  umoci init --layout "$work/runtime/oci"
  umoci new --image "$work/runtime/oci:base"
  umoci unpack --image "$work/runtime/oci:base" "$bundle"
  rmdir "$bundle/rootfs"
  cp -a "$base" "$bundle/rootfs"
  make_runtime "$bundle/rootfs"
  describe_runtime "$bundle/rootfs" >"$work/runtime/sizes.txt"
  bytes "$bundle/rootfs" >"$work/runtime/rootfs.bytes"
  log "packing the runtime base layer"
  umoci repack --image "$work/runtime/oci:base" --history.created_by \
    "image/build.sh: Debian $suite minbase, Python $python_version, CA certificates (trimmed)" "$bundle"
  mv "$work/runtime" "$runtime"
  prune runtime- 2
}

# --- wheels: resolved and downloaded by the image's own pip (cached by requirements) -------

# Sets wheelhouse to a cached directory of wheels for ROOT's python that satisfies the
# requirement arguments (pip options or requirement files inside ROOT). KEY names the inputs.
ensure_wheels() {
  local root="$1" key="$2"
  shift 2
  wheelhouse="$cache_root/wheels-$key"
  if [[ -f "$wheelhouse/.complete" ]]; then
    touch "$wheelhouse"
    return
  fi
  log "resolving and downloading wheels with the image's pip (cached by requirements)"
  rm -rf "$wheelhouse" "$root/tmp/ottava-build/wheelhouse"
  logged pip-wheel in_root "$root" python3 -m pip wheel --wheel-dir /tmp/ottava-build/wheelhouse "$@"
  mkdir -p "$work/wheels"
  cp "$root"/tmp/ottava-build/wheelhouse/*.whl "$work/wheels/"
  rm -f "$work"/wheels/ottava-*.whl # the project itself is rebuilt from the sources every time
  touch "$work/wheels/.complete"
  mv "$work/wheels" "$wheelhouse"
  prune wheels- 4
}

# Makes a venv at VENV inside ROOT with the image's python (no pip in it) and installs
# the arguments into it from the wheelhouse only; then makes it fit a read-only root.
install_venv() {
  local root="$1" venv="$2"
  shift 2
  in_root "$root" python3 -m venv --without-pip "$venv"
  if (($#)); then
    mkdir -p "$root/tmp/ottava-build/wheelhouse"
    cp "$wheelhouse"/*.whl "$root/tmp/ottava-build/wheelhouse/"
    logged pip-install in_root "$root" python3 -m pip --python "$venv/bin/python" install --no-index \
      --find-links /tmp/ottava-build/wheelhouse --no-compile "$@"
  fi
  local site="$root$venv/lib/python$python_version/site-packages"
  # Never read at run time: type stubs, Cython sources, shell activation scripts.
  find "$site" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' \) -delete
  rm -f "$root$venv"/bin/activate* "$root$venv"/bin/Activate.ps1
  # Wheels ship some extension modules with debug info (asyncpg: 8 MB of 11); stripping it
  # changes no code. (The wheels' RECORD hashes no longer match; nothing checks them here.)
  find "$site" -name '*.so' -type f -exec strip --strip-unneeded {} +
}

# Precompiles every module so a read-only root never needs to write __pycache__, and
# startup does not recompile the Kubernetes client (26 MB of source) in memory each time.
# unchecked-hash: the image never changes, and the .pyc stays valid even if a tool along
# the way rewrites file times (timestamp-based .pyc would then be silently ignored).
compile_python() {
  local root="$1"
  shift
  logged compileall in_root "$root" python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash "$@"
}

# Third-party modules in VENV go as bytecode only (legacy `module.pyc` beside where the
# source was, which Python imports when no source exists): their sources are a third of
# the venv (the Kubernetes client alone is 20 MB of them) and nothing reads them at run
# time. A traceback through them still names file and line, without the line's text.
# Ottava's own packages keep their sources, so its tracebacks stay complete.
sourceless_dependencies() {
  local root="$1" venv="$2"
  local site="$venv/lib/python$python_version/site-packages" entry name targets=()
  for entry in "$root$site"/*; do
    name="${entry##*/}"
    case "$name" in
      ottava_sidecar | ottava_operator | ottava_cli | *.dist-info | *.pth | __pycache__) continue ;;
    esac
    [[ -d "$entry" || "$name" == *.py ]] && targets+=("$site/$name")
  done
  ((${#targets[@]})) || return 0
  logged compileall-sourceless in_root "$root" python3 -m compileall -q -b -j 0 \
    --invalidation-mode unchecked-hash "${targets[@]}"
  rm -rf "$root$site/__pycache__"
  for entry in "${targets[@]}"; do
    find "$root$entry" -name __pycache__ -type d -prune -exec rm -rf {} +
    find "$root$entry" -name '*.py' -type f -delete
  done
}

# --- archives ------------------------------------------------------------------------------

# Appends ROOT/PATH (and everything under it) to the image as one layer. GNU tar writes
# the layer and umoci adds it: `umoci insert` would do both, but Debian's umoci 0.4.7
# leaves its tar without the end-of-archive blocks, which GNU tar, Python's tarfile and
# image scanners reject (umoci issue 436, fixed upstream after 0.4.7).
add_layer() {
  local image="$1" root="$2" path="$3" what="$4"
  tar --create --file "$work/layer.tar" --directory "$root" --format=gnu --numeric-owner --sort=name "$path"
  umoci raw add-layer --image "$image" --history.created_by "image/build.sh: $what" "$work/layer.tar"
  rm -f "$work/layer.tar"
}

# skopeo writes the docker-archive (manifest.json with RepoTags, one tar per layer);
# `ctr images import` and `docker load` both read it.
write_archive() {
  local layout="$1" name="$2" out="$3"
  rm -f "$out.part"
  skopeo copy --quiet "oci:$layout:image" "docker-archive:$out.part:$name" >&2
  mv "$out.part" "$out"
}

# Copies a finished archive out of the cache (a copy, so the cache can't be changed).
deliver() {
  local cached="$1" out="$2"
  mkdir -p "$(dirname "$out")"
  cp --reflink=auto "$cached" "$out.part"
  mv "$out.part" "$out"
  touch "$cached"
  echo "$out"
}

port_spec() { [[ "$1" == */* ]] && echo "$1" || echo "$1/tcp"; }

prune() { # keeps the N most recently used cache entries named PREFIX<key>[SUFFIX] (and their .sizes)
  local prefix="$1" keep="$2" suffix="${3:-}" old
  # shellcheck disable=SC2012 # the names are our own hex keys
  ls -dt "$cache_root/$prefix"*"$suffix" 2>/dev/null | tail -n +"$((keep + 1))" | while read -r old; do
    rm -rf "$old" "$old.sizes"
  done
}

start_work() {
  mkdir -p "$cache_root/archives"
  exec 9>"$cache_root/.lock"
  if ! flock -n 9; then
    log "another image build is using $cache_root; waiting for it"
    flock 9
  fi
  work="$(mktemp -d "$cache_root/work.XXXXXX")"
  trap remove_work EXIT
}

# debootstrap mounts /proc in its target while it installs; an interrupted run leaves it.
remove_work() {
  local mounted
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mounted; do
    umount -l "$mounted" || true
  done
  rm -rf "$work"
}

# --- sizes ---------------------------------------------------------------------------------

mb() { awk -v b="$1" 'BEGIN { printf "%6.1f MB", b / 1e6 }'; }
bytes() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

describe_runtime() {
  local r="$1" lib="$1/usr/lib/x86_64-linux-gnu"
  local total interp stdlib libs coreutils dpkgdb zoneinfo
  total=$(bytes "$r")
  interp=$(bytes "$r/usr/bin/python$python_version")
  stdlib=$(bytes "$r/usr/lib/python$python_version")
  libs=$(bytes "$lib")
  coreutils=$(package_bytes "$r" coreutils)
  dpkgdb=$(bytes "$r/var/lib/dpkg")
  zoneinfo=$(bytes "$r/usr/share/zoneinfo")
  echo "runtime base layer (Debian $suite minbase, trimmed) $(mb "$total")"
  echo "  python$python_version interpreter                         $(mb "$interp")"
  echo "  python stdlib with its .pyc                     $(mb "$stdlib")"
  echo "  shared libraries (libc, libssl, libstdc++, ...) $(mb "$libs")"
  echo "  coreutils                                       $(mb "$coreutils")"
  echo "  dpkg database                                   $(mb "$dpkgdb")"
  echo "  zoneinfo                                        $(mb "$zoneinfo")"
  echo "  everything else                                 $(mb $((total - interp - stdlib - libs - coreutils - dpkgdb - zoneinfo)))"
}

package_bytes() { # bytes of the regular files a package installed in ROOT
  local r="$1" p="$2"
  sed "s|^|$r|" "$r/var/lib/dpkg/info/$p.list" | while read -r f; do
    if [[ -f "$f" && ! -L "$f" ]]; then printf '%s\0' "$f"; fi
  done | du -cb --files0-from=- | tail -n 1 | cut -f1
}

describe_venv() {
  local venv="$1" title="$2" site="$1/lib/python$python_version/site-packages"
  local py pyc so total
  total=$(bytes "$venv")
  py=$(find "$site" -name '*.py' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  pyc=$(find "$site" -name '*.pyc' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  so=$(find "$site" -name '*.so' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  echo "$title   $(mb "$total")"
  echo "  .py sources $(mb "$py"), .pyc $(mb "$pyc"), extension modules .so $(mb "$so"); largest:"
  find "$site" -mindepth 1 -maxdepth 1 -exec du -sb {} + | sort -rn | head -n 8 | while read -r b p; do
    echo "    $(mb "$b")  ${p##*/}"
  done
}

# --- commands ------------------------------------------------------------------------------

project_version() {
  sed -n 's/^version = "\([^"]*\)".*/\1/p' "$repo/pyproject.toml" | head -n 1
}

# The project's sources as the wheel sees them (what the Dockerfile copies).
project_files() {
  (cd "$repo" && find pyproject.toml README.md sidecar operator cli -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' | LC_ALL=C sort)
}

cmd_ottava() {
  local version out
  version="$(project_version)"
  [[ -n "$version" ]] || die "no version in $repo/pyproject.toml"
  out="${1:-$repo/dist/ottava-$version.image.tar}"
  local name="ottava/ottava:$version"
  need_root ottava
  need_tools debootstrap umoci skopeo strip flock
  start_work
  read_debian_sources
  local key
  key="$({ echo "$name"; echo "$debian_sources"; cat "$self"; project_files | while read -r f; do
    echo "$f"; cat "$repo/$f"; done; } | hash_of)"
  local cached="$cache_root/archives/ottava-$key.tar"
  if [[ -f "$cached" ]]; then
    log "$name is up to date (cache $cached)"
    if [[ -f "$cached.sizes" ]]; then
      grep -e '^image rootfs total' "$cached.sizes" >&2
      cp "$cached.sizes" "$cache_root/last-ottava.sizes"
      log "image/build.sh sizes: where the bytes are"
    fi
    deliver "$cached" "$out"
    return
  fi
  log "building $name"
  ensure_base
  ensure_runtime
  local builder="$work/builder"
  cp -a "$base" "$builder"
  lend_host_ca "$builder"
  log "building the ottava wheel (pip wheel --no-deps) from the sources"
  mkdir -p "$builder/tmp/ottava-build/src"
  (cd "$repo" && project_files | tar -cf - -T -) | tar -xf - -C "$builder/tmp/ottava-build/src"
  logged pip-wheel-project in_root "$builder" python3 -m pip wheel --no-deps \
    --wheel-dir /tmp/ottava-build/dist /tmp/ottava-build/src
  local wheel
  wheel="$(cd "$builder/tmp/ottava-build/dist" && echo ottava-*.whl)"
  ensure_wheels "$builder" "$({ echo "$base_key"; cat "$repo/pyproject.toml"; } | hash_of)" \
    "/tmp/ottava-build/dist/$wheel"
  log "installing ottava and its runtime dependencies into /opt/ottava"
  install_venv "$builder" /opt/ottava "/tmp/ottava-build/dist/$wheel"
  log "precompiling .pyc (unchecked-hash) for a read-only root; dependencies as bytecode only"
  compile_python "$builder" /opt/ottava
  sourceless_dependencies "$builder" /opt/ottava
  log "packing the /opt/ottava layer and the image config"
  cp -a "$runtime/oci" "$work/oci"
  umoci tag --image "$work/oci:base" image
  add_layer "$work/oci:image" "$builder" opt/ottava "/opt/ottava (ottava $version and its runtime dependencies)"
  local config=(--created "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --config.user "$uid:$uid" --config.entrypoint ottava --config.cmd run
    --config.env "PATH=/opt/ottava/bin:$path_env" --config.env LANG=C.UTF-8 --config.env PYTHONUNBUFFERED=1
    --config.label org.opencontainers.image.title=ottava
    --config.label "org.opencontainers.image.version=$version"
    --config.label org.opencontainers.image.licenses=Apache-2.0
    --config.label "org.opencontainers.image.description=Ottava: the Dapr and Layotto runtime APIs as a Kubernetes sidecar")
  local port
  for port in 50001 3500 9090 50002 9443 8080; do config+=(--config.exposedports "$port/tcp"); done
  umoci config --image "$work/oci:image" --history.created_by "image/build.sh: ottava $version image config" \
    "${config[@]}"
  log "writing the docker-archive with skopeo"
  write_archive "$work/oci" "$name" "$work/image.tar"
  {
    cat "$runtime/sizes.txt"
    describe_venv "$builder/opt/ottava" "/opt/ottava (ottava $version and its runtime dependencies)"
    echo "image rootfs total (uncompressed)              $(mb $(($(cat "$runtime/rootfs.bytes") + $(bytes "$builder/opt/ottava"))))"
    echo "archive $(mb "$(stat -c %s "$work/image.tar")") (docker-archive, uncompressed layers)"
  } >"$work/image.tar.sizes"
  cat "$work/image.tar.sizes" >&2
  mv "$work/image.tar.sizes" "$cached.sizes"
  cp "$cached.sizes" "$cache_root/last-ottava.sizes"
  mv "$work/image.tar" "$cached"
  prune archives/ottava- 2 .tar
  log "built $name in $((SECONDS - started))s"
  deliver "$cached" "$out"
}

cmd_app() {
  (($# >= 3)) || die "usage: $0 app NAME:TAG DIR OUT.tar [--main FILE] [--user UID[:GID]] [--port PORT]..."
  local name="$1" dir="$2" out="$3"
  shift 3
  local main="" user="$uid:$uid" ports=()
  while (($#)); do
    (($# >= 2)) || die "app: $1 needs a value"
    case "$1" in
      --main) main="$2" ;;
      --user) user="$2" ;;
      --port) ports+=("$2") ;;
      *) die "app: unknown option $1" ;;
    esac
    shift 2
  done
  [[ -d "$dir" ]] || die "app: $dir is not a directory"
  dir="$(cd "$dir" && pwd)"
  if [[ -z "$main" ]]; then
    local candidates=("$dir"/*.py)
    if [[ -f "$dir/main.py" ]]; then main=main.py
    elif [[ -f "$dir/app.py" ]]; then main=app.py
    elif ((${#candidates[@]} == 1)) && [[ -f "${candidates[0]}" ]]; then main="${candidates[0]##*/}"
    else die "app: say which file to run with --main (no main.py, app.py or single .py in $dir)"
    fi
  fi
  [[ -f "$dir/$main" ]] || die "app: $dir/$main does not exist"
  need_root app
  need_tools debootstrap umoci skopeo strip flock
  start_work
  read_debian_sources
  local key
  key="$({ echo "$name $main $user ${ports[*]}"; echo "$debian_sources"; cat "$self"
    (cd "$dir" && find . -type f ! -path '*/__pycache__/*' | LC_ALL=C sort | while read -r f; do
      echo "$f"; cat "$f"; done); } | hash_of)"
  local cached="$cache_root/archives/app-$key.tar"
  if [[ -f "$cached" ]]; then
    log "$name is up to date (cache $cached)"
    deliver "$cached" "$out"
    return
  fi
  log "building app image $name from $dir"
  ensure_base
  ensure_runtime
  local builder="$work/builder"
  cp -a "$base" "$builder"
  lend_host_ca "$builder"
  mkdir -p "$builder/app"
  (cd "$dir" && tar -cf - --exclude=__pycache__ --owner=0 --group=0 .) | tar -xf - -C "$builder/app"
  chmod -R a+rX,go-w "$builder/app"
  local requirements=()
  if [[ -f "$dir/requirements.txt" ]]; then
    cp "$dir/requirements.txt" "$builder/tmp/ottava-build/requirements.txt"
    requirements=(-r /tmp/ottava-build/requirements.txt)
    ensure_wheels "$builder" "$({ echo "$base_key"; cat "$dir/requirements.txt"; } | hash_of)" "${requirements[@]}"
  fi
  log "installing the requirements into /opt/venv"
  install_venv "$builder" /opt/venv "${requirements[@]}"
  log "precompiling .pyc (unchecked-hash) for a read-only root"
  compile_python "$builder" /opt/venv /app
  log "packing the /opt/venv and /app layers and the image config"
  cp -a "$runtime/oci" "$work/oci"
  umoci tag --image "$work/oci:base" image
  add_layer "$work/oci:image" "$builder" opt/venv "app $name: /opt/venv"
  add_layer "$work/oci:image" "$builder" app "app $name: /app"
  local config=(--created "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --config.user "$user" --config.entrypoint /opt/venv/bin/python3 --config.entrypoint "/app/$main"
    --config.workingdir /app --config.env "PATH=/opt/venv/bin:$path_env" --config.env LANG=C.UTF-8
    --config.env PYTHONUNBUFFERED=1)
  local port
  for port in "${ports[@]}"; do config+=(--config.exposedports "$(port_spec "$port")"); done
  umoci config --image "$work/oci:image" --history.created_by "image/build.sh app $name" "${config[@]}"
  write_archive "$work/oci" "$name" "$work/image.tar"
  describe_venv "$builder/opt/venv" "/opt/venv" >&2
  mv "$work/image.tar" "$cached"
  prune archives/app- 4 .tar
  log "built $name in $((SECONDS - started))s"
  deliver "$cached" "$out"
}

cmd_rootfs() {
  (($# >= 3)) || die "usage: $0 rootfs DIR NAME:TAG OUT.tar [--entrypoint ARG]... [--cmd ARG]... [--user U[:G]] [--env K=V]... [--port P]... [--workdir PATH]"
  local dir="$1" name="$2" out="$3"
  shift 3
  [[ -d "$dir" ]] || die "rootfs: $dir is not a directory"
  local config=()
  while (($#)); do
    (($# >= 2)) || die "rootfs: $1 needs a value"
    case "$1" in
      --entrypoint) config+=(--config.entrypoint "$2") ;;
      --cmd) config+=(--config.cmd "$2") ;;
      --user) config+=(--config.user "$2") ;;
      --env) config+=(--config.env "$2") ;;
      --port) config+=(--config.exposedports "$(port_spec "$2")") ;;
      --workdir) config+=(--config.workingdir "$2") ;;
      *) die "rootfs: unknown option $1" ;;
    esac
    shift 2
  done
  need_root rootfs
  need_tools umoci skopeo flock
  start_work
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:image"
  umoci unpack --image "$work/oci:image" "$work/bundle"
  cp -a "$dir/." "$work/bundle/rootfs/"
  umoci repack --image "$work/oci:image" --history.created_by "image/build.sh rootfs $name" "$work/bundle"
  ((${#config[@]} == 0)) || umoci config --image "$work/oci:image" --no-history "${config[@]}"
  mkdir -p "$(dirname "$out")"
  write_archive "$work/oci" "$name" "$out"
  log "wrote $name ($(mb "$(stat -c %s "$out")"))"
  echo "$out"
}

case "${1:-}" in
  ottava) shift; cmd_ottava "$@" ;;
  app) shift; cmd_app "$@" ;;
  rootfs) shift; cmd_rootfs "$@" ;;
  sizes) cat "$cache_root/last-ottava.sizes" 2>/dev/null || die "no ottava image built yet (make image)" ;;
  *) sed -n '8,24s/^# \{0,1\}//p' "$self" >&2; exit 2 ;;
esac
