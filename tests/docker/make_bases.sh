#!/bin/sh
# Make the two local stand-in base images with mmdebstrap (no image can be pulled here), and
# cache their rootfs tarballs by content so one CI run makes each only once:
#   prewheel-test/builder-base:latest  python3, python3-dev, python3-venv, python3-pip, gcc, g++,
#                                      build-essential: a stand-in for python:3.X (full)
#   prewheel-test/runtime-base:latest  python3, python3-venv, no compiler, and no docs, man
#                                      pages or locales, as debian:bookworm-slim (under
#                                      python:3.X-slim) leaves them out
#   prewheel-test/builder-bullseye:latest  (only with `bullseye`) Debian bullseye: glibc 2.31,
#                                      gcc 10, python3 3.9, and the headers a CPython build
#                                      needs: the older builder root of the container route
#
#   make_bases.sh [--tar-only] [bullseye]

# Needs DOCKER_HOST (see dockerd.sh). PREWHEEL_DOCKER_CACHE picks the cache dir.
set -eu

CACHE="${PREWHEEL_DOCKER_CACHE:-/var/tmp/prewheel-docker-cache}"
SUITE=bookworm
RECIPE=2  # bump to invalidate cached tarballs when this script changes what it makes
DOCKER="${PREWHEEL_DOCKER:-docker}"
BUILDER_PKGS="python3,python3-dev,python3-venv,python3-pip,gcc,g++,libc6-dev,build-essential"
RUNTIME_PKGS="python3,python3-venv"
# Bullseye's python3 is 3.9, older than prewheel needs: Dockerfile.builder compiles a CPython
# for prewheel there (PREWHEEL_PYTHON_SRC), so the base carries that build's headers.
BULLSEYE_PKGS="python3,python3-dev,python3-venv,python3-pip,gcc,g++,libc6-dev,patch,make,xz-utils,\
libssl-dev,zlib1g-dev,libffi-dev,libbz2-dev,liblzma-dev,libsqlite3-dev,libexpat1-dev"
# What debian:bookworm-slim drops (its /etc/dpkg/dpkg.cfg.d/docker), kept for later installs.
SLIM_OPTS="--dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-include=/usr/share/doc/*/copyright
--dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/info/*
--dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-include=/usr/share/locale/locale.alias
--dpkgopt=path-exclude=/usr/share/groff/* --dpkgopt=path-exclude=/usr/share/linda/*
--dpkgopt=path-exclude=/usr/share/lintian/*"

mirror() {
    # The mirror the host's own apt uses (deb822 or one-line sources).
    m="$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1)"
    [ -n "$m" ] || m="$(grep -h -m1 '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1)"
    echo "${m:-http://deb.debian.org/debian}"
}

MIRROR="${PREWHEEL_MIRROR:-$(mirror)}"
mkdir -p "$CACHE"
# One maker at a time per cache (parallel test workers, two engines): the others wait, then
# find the tarballs made.
exec 9>"$CACHE/.lock"
flock 9

key() {  # packages [options] [suite]
    printf '%s|%s|%s|%s|%s' "$RECIPE" "${3:-$SUITE}" "$1" "${2:-}" "$MIRROR" | sha256sum \
        | cut -c1-16
}

make_tar() {  # name packages [mmdebstrap options] [suite]
    tar="$CACHE/$1-$(key "$2" "${3:-}" "${4:-}").tar"
    if [ ! -s "$tar" ]; then
        # The options are words on purpose, their globs are not (set -f).
        # shellcheck disable=SC2086
        (set -f; mmdebstrap --quiet --format=tar --variant=minbase ${3:-} --include="$2" \
            "${4:-$SUITE}" "$tar.tmp" "$MIRROR") >"$CACHE/$1.log" 2>&1 \
            || { tail -n 30 "$CACHE/$1.log" >&2; exit 1; }
        for old in "$CACHE/$1"-*.tar; do [ "$old" = "$tar" ] || rm -f "$old"; done
        mv "$tar.tmp" "$tar"
    fi
}

import() {  # name packages [mmdebstrap options] [suite]
    k="$(key "$2" "${3:-}" "${4:-}")"
    image="prewheel-test/$1:$k"
    if ! "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
        "$DOCKER" import "$CACHE/$1-$k.tar" "$image" >/dev/null
    fi
    "$DOCKER" tag "$image" "prewheel-test/$1:latest"
    echo "prewheel-test/$1:latest"
}

TAR_ONLY=""
if [ "${1:-}" = "--tar-only" ]; then TAR_ONLY=1; shift; fi
if [ "${1:-}" = "bullseye" ]; then
    make_tar builder-bullseye "$BULLSEYE_PKGS" "" bullseye
    [ -n "$TAR_ONLY" ] || import builder-bullseye "$BULLSEYE_PKGS" "" bullseye
    exit 0
fi
# Both debootstraps at once: they wait on the network and dpkg, not the CPU.
make_tar builder-base "$BUILDER_PKGS" &
b=$!
make_tar runtime-base "$RUNTIME_PKGS" "$SLIM_OPTS" &
r=$!
wait "$b"
wait "$r"
if [ -n "$TAR_ONLY" ]; then exit 0; fi
import builder-base "$BUILDER_PKGS"
import runtime-base "$RUNTIME_PKGS" "$SLIM_OPTS"
