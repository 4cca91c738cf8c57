#!/usr/bin/env bash
# The fresh-machine test: the README's Quick start commands, run verbatim on machines that have
# only what a fresh Debian machine has plus what the README says to install.
#
# What it proves. Each README command gets its own fresh machine: a minbase Debian bookworm root
# with python3, python3-venv, ca-certificates and the packages the README's Quick start names
# for it, and nothing else (no patchelf, no pip configuration, no venv, nothing of the developer's
# machine but a copy of the checkout):
#   machine 1  quick start   the README's build command (the ```bash block after
#                            `<!-- fresh-machine: build -->`), run verbatim with bash in /src,
#                            gets as far as serving http://127.0.0.1:8080/cpu/simple/;
#              install       then a fresh venv there with no compiler in reach (failing
#                            cc/gcc/g++ first on PATH, CC/CXX pointing at them) installs
#                            examples/requirements.txt from that index with --only-binary=:all:,
#                            and the modules import and work;
#   machine 2  test command  the README's test command (the block after
#                            `<!-- fresh-machine: test -->`), run verbatim in /src. Tests that
#                            need tools the root lacks (nginx, chromium, docker, other Pythons,
#                            CUDA) skip there.
# The packages come from two markers in the Quick start: `<!-- fresh-machine: apt PKG... -->`
# (what the build command needs, machine 1 and 2) and, optionally,
# `<!-- fresh-machine: apt-test PKG... -->` (what the test command needs on top, machine 2 only);
# every package a marker names must also appear in the section's prose. A step a fresh machine
# lacks (a tool found only on the developer's PATH, a package the README does not name) fails
# here, which is the point.
#
# Exit status: 0 every phase passed; 1 a phase failed; 2 the harness could not run (not root,
# a tool or a README marker missing, port 8080 busy).
#
# How. mmdebstrap makes each root once per package list and caches it as a tarball; a run
# extracts it into a temp dir, copies the checkout in (`git ls-files -co --exclude-standard`:
# tracked files and untracked ones git does not ignore, never .venv/ or wheelhouse contents),
# and runs the phases under `unshare --mount --pid --fork` + chroot (proc, /dev, /dev/shm, /sys
# mounted in that private mount namespace only; every process in it dies with it). The roots
# share the host's network (PyPI must be reachable), so port 8080 must be free. Inside, the
# environment is a plain login's: HOME=/root (empty), the default PATH, no venv activated, no
# PIP_* variable but PIP_CERT. Taken from the host besides the checkout: /etc/resolv.conf, and,
# when the host has $PIP_CERT, that CA bundle, named by PIP_CERT (pip) and SSL_CERT_FILE (uv,
# Python's ssl) inside: on machines whose HTTPS is intercepted nothing reaches PyPI without it.
#
# Usage (as root, from anywhere in a checkout; needs mmdebstrap, util-linux, git):
#   tests/fresh/run_fresh_root.sh                    all phases
#   tests/fresh/run_fresh_root.sh --no-test-command  machine 1 only
# Environment:
#   PREWHEEL_FRESH_CACHE         root tarballs (default /var/tmp/prewheel-fresh-cache; about
#                                470 MB each, the newest per machine kept; delete it to free it)
#   PREWHEEL_FRESH_TMP           where a run extracts its roots (default /var/tmp; up to about
#                                1.5 GB during a run, removed at the end, also on failure)
#   PREWHEEL_MIRROR              the Debian mirror (default: the one the host's apt uses)
#   PREWHEEL_FRESH_SERVE_TIMEOUT seconds the build command may take to serve (default 900)
#   PREWHEEL_FRESH_TEST_TIMEOUT  seconds the test command may take (default 2400)
#   PREWHEEL_FRESH_LOGS          a dir to copy the phases' full logs into (default: none kept)
set -euo pipefail

SELF="$(readlink -f "$0")"
REPO="$(cd "$(dirname "$SELF")/../.." && pwd)"
README="$REPO/README.md"
SUITE=bookworm
RECIPE=1 # bump to invalidate cached roots when this script changes how it makes them
BASE_PKGS="python3 python3-venv ca-certificates"
CACHE="${PREWHEEL_FRESH_CACHE:-/var/tmp/prewheel-fresh-cache}"
TMPBASE="${PREWHEEL_FRESH_TMP:-/var/tmp}"
SERVE_TIMEOUT="${PREWHEEL_FRESH_SERVE_TIMEOUT:-900}"
TEST_TIMEOUT="${PREWHEEL_FRESH_TEST_TIMEOUT:-2400}"
PORT=8080
INDEX_URL="http://127.0.0.1:$PORT/cpu/simple/"
ROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ROOT_CERT=/etc/ssl/certs/host-ca.crt # where the host's $PIP_CERT bundle goes in a root

say() { printf 'fresh: %s\n' "$*"; }
die() { printf 'fresh: error: %s\n' "$*" >&2; exit 2; }
now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
# One line per phase, for the summary: name, PASS/FAIL/SKIP, seconds, detail.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$WORK/results"; }
indent() { sed 's/^/  | /'; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Inside a private mount and pid namespace (this script again, run by unshare): one machine.
# ---------------------------------------------------------------------------------------------
inside() { # WORK ROOT PHASES(quickstart|tests)
    WORK="$1" ROOT="$2"
    local phases="$3" logs="$1/logs"
    mount -t proc proc "$ROOT/proc"
    mount --rbind /dev "$ROOT/dev"
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$ROOT/dev/shm"
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$ROOT/sys" 2>/dev/null \
        || mount --rbind -o ro /sys "$ROOT/sys"

    local env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash "PATH=$ROOT_PATH")
    [ -f "$ROOT$ROOT_CERT" ] && env+=("PIP_CERT=$ROOT_CERT" "SSL_CERT_FILE=$ROOT_CERT")
    in_root() { chroot "$ROOT" /usr/bin/env -i "${env[@]}" "$@"; }

    if [ "$phases" = tests ]; then
        say "test command: running the README's test command in /src (timeout ${TEST_TIMEOUT}s)"
        local t0 rc=0 summary
        t0=$(now)
        timeout --kill-after=30 "$TEST_TIMEOUT" chroot "$ROOT" /usr/bin/env -i "${env[@]}" \
            bash -c 'cd /src && exec bash /fresh/command.sh' </dev/null 2>&1 | tee "$logs/test.log" || rc=$?
        summary="$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$logs/test.log" \
            | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)"
        if [ "$rc" = 0 ]; then
            record "test command" PASS "$(since "$t0")" "${summary:-exit 0}"
        elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            record "test command" FAIL "$(since "$t0")" "timed out after ${TEST_TIMEOUT}s${summary:+: $summary}"
        else
            record "test command" FAIL "$(since "$t0")" "exit $rc${summary:+: $summary}"
        fi
        return
    fi

    # The build command, in the background: it ends with `prewheel serve`, which stays. setsid
    # makes it a process group of its own, to stop it by.
    say "quick start: running the README's build command in /src"
    local t0 server ok=0 waited=0 last_note=0 rc
    t0=$(now)
    if port_busy; then
        say "quick start: port $PORT on 127.0.0.1 was taken since this run began"
        record "quick start" FAIL 0 "port $PORT is in use"
        record "install from index" SKIP 0 "the quick start did not serve"
        return
    fi
    setsid chroot "$ROOT" /usr/bin/env -i "${env[@]}" bash -c 'cd /src && exec bash /fresh/command.sh' \
        >"$logs/quickstart.log" 2>&1 </dev/null &
    server=$!
    while :; do
        if ! kill -0 "$server" 2>/dev/null; then
            wait "$server" && rc=0 || rc=$?
            say "quick start: the command exited ($rc) before $INDEX_URL answered; its last lines:"
            tail -n 60 "$logs/quickstart.log" | indent
            record "quick start" FAIL "$(since "$t0")" "the build command exited $rc before the index answered"
            break
        fi
        if in_root python3 /fresh/ready.py "$INDEX_URL" 2>/dev/null; then
            ok=1
            say "quick start: $INDEX_URL answers; the command's last lines:"
            tail -n 25 "$logs/quickstart.log" | indent
            record "quick start" PASS "$(since "$t0")" "built, and serving $INDEX_URL"
            break
        fi
        waited=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", b - a }')
        if [ "$waited" -ge "$SERVE_TIMEOUT" ]; then
            say "quick start: no answer from $INDEX_URL after ${SERVE_TIMEOUT}s; the last lines:"
            tail -n 60 "$logs/quickstart.log" | indent
            record "quick start" FAIL "$(since "$t0")" "no index after ${SERVE_TIMEOUT}s"
            break
        fi
        if [ $((waited - last_note)) -ge 60 ]; then
            last_note=$waited
            say "quick start: still running (${waited}s): $(tail -n 1 "$logs/quickstart.log" | cut -c1-100)"
        fi
        sleep 2
    done

    if [ "$ok" = 1 ]; then
        say "install: a venv with no compiler in reach installs examples/requirements.txt from the index"
        t0=$(now)
        if in_root bash /fresh/install.sh "$INDEX_URL" >"$logs/install.log" 2>&1; then
            tail -n 12 "$logs/install.log" | indent
            record "install from index" PASS "$(since "$t0")" "$(tail -n 1 "$logs/install.log" | sed 's/^fresh: //')"
        else
            say "install: FAILED; its output:"
            tail -n 60 "$logs/install.log" | indent
            record "install from index" FAIL "$(since "$t0")" "$(tail -n 1 "$logs/install.log" | sed 's/^fresh: //')"
        fi
    else
        record "install from index" SKIP 0 "the quick start did not serve"
    fi

    # Stop the server's process group; whatever is left dies with this namespace.
    if kill -0 "$server" 2>/dev/null; then
        kill -TERM -- "-$server" 2>/dev/null || true
        local i=0 how="stopped on SIGTERM"
        while kill -0 "$server" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
        if kill -0 "$server" 2>/dev/null; then
            kill -KILL -- "-$server" 2>/dev/null || true
            how="still running 10 s after SIGTERM; killed"
        fi
        wait "$server" 2>/dev/null || true
        say "server: $how"
    fi
}

if [ "${1:-}" = "--inside" ]; then
    inside "$2" "$3" "$4"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Outside: check, read the README, make or reuse the roots, copy the checkout in, run, summarise.
# ---------------------------------------------------------------------------------------------
run_tests=1
case "${1:-}" in
    "") ;;
    --no-test-command) run_tests=0 ;;
    *) die "usage: $0 [--no-test-command]" ;;
esac

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, unshare and chroot)"
for tool in mmdebstrap unshare chroot mount setsid git tar flock sha256sum timeout awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install mmdebstrap util-linux git)"
done
git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 || die "$REPO is not a git checkout"

# The README's Quick start section, its markers and the ```bash blocks right after them.
quick_start() { awk '/^## /{ in_qs = ($0 ~ /^## Quick start[[:space:]]*$/); next } in_qs' "$README"; }
block_after() { # marker name -> the lines of the ```bash block right after it
    quick_start | awk -v m="<!-- fresh-machine: $1 -->" '
        s == 0 && $0 == m { s = 1; next }
        s == 1 && /^```bash[[:space:]]*$/ { s = 2; next }
        s == 1 && NF { exit }
        s == 2 && /^```[[:space:]]*$/ { s = 3; exit }
        s == 2 { print }
        END { if (s != 3) exit 3 }'
}
packages_marker() { # name -> its package list ("" if absent; an error if twice)
    local found
    found="$(sed -n "s/^<!-- fresh-machine: $1 \\(.*\\) -->\$/\\1/p" <<<"$QS")"
    [ "$(grep -c . <<<"$found" || true)" -le 1 ] || die "README.md's Quick start has more than one '<!-- fresh-machine: $1 ... -->'"
    for p in $found; do # the marker must say what the prose says
        grep -v '^<!--' <<<"$QS" | grep -qw -- "$p" \
            || die "README.md's '<!-- fresh-machine: $1 ... -->' names '$p', but the Quick start's text does not"
    done
    printf '%s' "$found"
}
QS="$(quick_start)"
[ -n "$QS" ] || die "README.md has no '## Quick start' section"
for m in build test; do
    n="$(grep -cxF "<!-- fresh-machine: $m -->" <<<"$QS" || true)"
    [ "$n" = 1 ] || die "README.md's Quick start needs exactly one '<!-- fresh-machine: $m -->' line right before its \`\`\`bash block (found $n)"
done
BUILD_CMD="$(block_after build)" || die "no \`\`\`bash block right after '<!-- fresh-machine: build -->' in README.md"
TEST_CMD="$(block_after test)" || die "no \`\`\`bash block right after '<!-- fresh-machine: test -->' in README.md"
[ -n "$BUILD_CMD" ] && [ -n "$TEST_CMD" ] || die "an empty fresh-machine block in README.md"
APT="$(packages_marker apt)"
[ -n "$APT" ] || die "README.md's Quick start needs a '<!-- fresh-machine: apt PKG... -->' line (the prerequisites)"
APT_TEST="$(packages_marker apt-test)"
pkglist() { printf '%s\n' "$@" | sort -u | paste -sd, -; }
# shellcheck disable=SC2086 # word lists on purpose
PKGS_QS="$(pkglist $BASE_PKGS $APT)"
# shellcheck disable=SC2086
PKGS_TEST="$(pkglist $BASE_PKGS $APT $APT_TEST)"

# Port 8080 must be free: the roots share the host's network, and the quick start serves there.
if port_busy; then
    die "port $PORT on 127.0.0.1 is in use, and the quick start serves there; stop what listens there first ($(ss -ltnpH "sport = :$PORT" 2>/dev/null | head -n 1))"
fi

mirror() { # the mirror the host's own apt uses (deb822 or one-line sources), as make_bases.sh
    m="$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1)"
    [ -n "$m" ] || m="$(grep -h -m1 '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1)"
    echo "${m:-http://deb.debian.org/debian}"
}
MIRROR="${PREWHEEL_MIRROR:-$(mirror)}"

mkdir -p "$TMPBASE"
WORK="$(mktemp -d "$TMPBASE/prewheel-fresh.XXXXXX")"
INNER=
cleanup() {
    local rc=$?
    if [ -n "$INNER" ] && kill -0 "$INNER" 2>/dev/null; then
        # unshare blocks SIGTERM while it waits; SIGKILL to the namespace's first process (its
        # child; --kill-child does the same) ends every process in the namespace.
        for c in $(cat "/proc/$INNER/task/$INNER/children" 2>/dev/null); do kill -KILL "$c" || true; done
        kill -KILL "$INNER" 2>/dev/null || true
        wait "$INNER" 2>/dev/null || true
    fi
    # The mounts live in the namespace only; should one be visible here anyway, undo it first.
    { grep -F " $WORK/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r \
        | while read -r mp; do umount -l "$mp" || true; done
    if [ -n "${PREWHEEL_FRESH_LOGS:-}" ] && [ -d "$WORK/logs" ]; then
        mkdir -p "$PREWHEEL_FRESH_LOGS" && cp -a "$WORK/logs/." "$PREWHEEL_FRESH_LOGS/" || true
    fi
    rm -rf --one-file-system "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted; stopping and cleaning up"; exit 130' INT
trap 'say "terminated; stopping and cleaning up"; exit 143' TERM
mkdir -p "$WORK/logs"
: >"$WORK/results"
T_ALL=$(now)

say "README: build command needs: $APT"
say "README: test command needs:  $APT${APT_TEST:+ $APT_TEST}"
say "README: build command: $BUILD_CMD"
say "README: test command:  $TEST_CMD"

# The checkout: tracked files and untracked ones git does not ignore, as a clone plus the
# working tree's changes has them; never .venv/ or the wheelhouse's contents.
keep() { # tracked|untracked < NUL-separated names: those that exist and belong in a copy
    while IFS= read -r -d '' f; do
        case "$1:$f" in *:.venv/* | untracked:wheelhouse/*) continue ;; esac
        [ -e "$REPO/$f" ] || [ -L "$REPO/$f" ] || continue # tracked, deleted in the tree
        printf '%s\0' "$f"
    done
}
{
    git -C "$REPO" ls-files -z -c | keep tracked
    git -C "$REPO" ls-files -z -o --exclude-standard | keep untracked
} >"$WORK/files"
tar -C "$REPO" --null -T "$WORK/files" -cf "$WORK/src.tar"
NFILES="$(tr -cd '\0' <"$WORK/files" | wc -c)"

root_tar() { # role packages -> prints the cached tarball, making it first if needed
    local role="$1" pkgs="$2" key tar
    key="$(printf '%s|%s|%s|%s' "$RECIPE" "$SUITE" "$pkgs" "$MIRROR" | sha256sum | cut -c1-16)"
    tar="$CACHE/root-$key.tar"
    mkdir -p "$CACHE"
    (
        flock 9 # one maker per cache; the others wait, then find it made
        if [ ! -s "$tar" ]; then
            say "root ($role): making it with mmdebstrap: $SUITE minbase + $pkgs, from $MIRROR" >&2
            if ! mmdebstrap --quiet --format=tar --variant=minbase --include="$pkgs" \
                "$SUITE" "$tar.tmp" "$MIRROR" >"$CACHE/root-$key.log" 2>&1; then
                tail -n 30 "$CACHE/root-$key.log" >&2
                rm -f "$tar.tmp"
                exit 1
            fi
            mv "$tar.tmp" "$tar"
            touch "$WORK/made-$key"
        fi
        # The newest root per role stays; another role's, or one this run uses, is not touched.
        printf '%s\n' "$key" >"$CACHE/current-$role"
        for old in "$CACHE"/root-*.tar; do
            k="$(basename "$old" .tar)"; k="${k#root-}"
            grep -qxF "$k" "$CACHE"/current-* 2>/dev/null || rm -f "$old" "$CACHE/root-$k.log"
        done
    ) 9>"$CACHE/.lock" >&2 || return 1
    printf '%s' "$tar"
}

machine() { # role packages phases: make/extract a root, copy the checkout in, run the phases
    local role="$1" pkgs="$2" phases="$3" t0 tar how root
    t0=$(now)
    if ! tar="$(root_tar "$role" "$pkgs")"; then
        record "root ($role)" FAIL "$(since "$t0")" "mmdebstrap failed"
        return
    fi
    how="from cache"
    [ -f "$WORK/made-$(basename "$tar" .tar | cut -c6-)" ] && how="made with mmdebstrap"
    root="$WORK/$role"
    mkdir -p "$root"
    tar --numeric-owner -xpf "$tar" -C "$root"
    rm -f "$root/etc/resolv.conf"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    [ -s "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        install -m 0644 "$PIP_CERT" "$root$ROOT_CERT"
        how="$how, host CA bundle"
    fi
    mkdir -p "$root/src" "$root/fresh"
    tar -C "$root/src" -xf "$WORK/src.tar"
    record "root ($role)" PASS "$(since "$t0")" "$how; $NFILES files into /src"

    if [ "$phases" = tests ]; then
        printf '%s\n' "$TEST_CMD" >"$root/fresh/command.sh"
    else
        printf '%s\n' "$BUILD_CMD" >"$root/fresh/command.sh"
        cat >"$root/fresh/ready.py" <<'EOF'
# Exit 0 when the index URL answers 200 with a page.
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.exit(0 if r.status == 200 and r.read() else 1)
EOF
        cat >"$root/fresh/install.sh" <<'EOF'
# A fresh venv with no compiler in reach installs the example from the served index; use it.
set -eu
index="$1"
fence=/tmp/fresh-fence
mkdir -p "$fence"
for c in cc gcc g++ c++ cpp clang x86_64-linux-gnu-gcc x86_64-linux-gnu-g++ gcc-12 g++-12 \
    x86_64-linux-gnu-gcc-12; do
    printf '#!/bin/sh\necho "fresh: compiler fence: %s $*: the install tried to compile" >&2\nexit 1\n' \
        "$c" >"$fence/$c"
    chmod +x "$fence/$c"
done
export PATH="$fence:$PATH" CC="$fence/cc" CXX="$fence/c++"
[ "$(command -v gcc)" = "$fence/gcc" ] || { echo "fresh: the compiler fence is not first on PATH"; exit 1; }
python3 -m venv /tmp/fresh-client
cd /src
/tmp/fresh-client/bin/pip install --only-binary=:all: --index-url "$index" -r examples/requirements.txt
/tmp/fresh-client/bin/python - <<'PY'
from importlib.metadata import distribution

import Levenshtein
import six

assert Levenshtein.distance("kitten", "sitting") == 3, Levenshtein.distance("kitten", "sitting")
assert six.PY3
wheel = distribution("python-Levenshtein").read_text("WHEEL") or ""
tags = [line.split(": ", 1)[1] for line in wheel.splitlines() if line.startswith("Tag: ")]
assert any("manylinux" in t for t in tags), f"python-Levenshtein's wheel is not manylinux: {tags}"
print(f"fresh: Levenshtein ({', '.join(tags)}) and six import and work")
PY
EOF
    fi

    unshare --mount --pid --fork --kill-child -- bash "$SELF" --inside "$WORK" "$root" "$phases" &
    INNER=$!
    wait "$INNER" || record "harness ($role)" FAIL 0 "the namespace runner exited $?"
    INNER=
    rm -rf --one-file-system "$root"
}

machine quickstart "$PKGS_QS" quickstart
if [ "$run_tests" = 1 ]; then
    machine test "$PKGS_TEST" tests
else
    record "test command" SKIP 0 "--no-test-command"
fi

# The summary.
status=PASS
echo
say "summary ($SUITE minbase; quick start + $APT; test command + $APT${APT_TEST:+ $APT_TEST}; $(since "$T_ALL") s in all)"
while IFS=$'\t' read -r name st secs detail; do
    printf '  %-4s  %-20s %7s s  %s\n' "$st" "$name" "$secs" "$detail"
    [ "$st" = FAIL ] && status=FAIL
done <"$WORK/results"
for phase in "quick start" "install from index" "test command"; do
    grep -q "^$phase"$'\t' "$WORK/results" || { printf '  FAIL  %-20s           did not run\n' "$phase"; status=FAIL; }
done
say "$status"
[ "$status" = PASS ]
