#!/bin/sh
# Start or stop a private Docker engine whose state lives in one temp dir, without touching
# the host's networking (no bridge, no iptables), as ../../../shared/CONTAINERS.md describes.
#
#   eval "$(tests/docker/dockerd.sh start)"   # prints: export DOCKER_HOST=...; export PREWHEEL_DOCKER=...
#   tests/docker/dockerd.sh stop
#
# PREWHEEL_DOCKERD_DIR picks the state dir (default /tmp/prewheel-dockerd).
set -eu

T="${PREWHEEL_DOCKERD_DIR:-/tmp/prewheel-dockerd}"

client() {
    # Debian's 20.10 client speaks BuildKit without buildx; a newer client first on PATH may not.
    if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}

running() {
    [ -f "$T/pid" ] && kill -0 "$(cat "$T/pid")" 2>/dev/null
}

start() {
    command -v dockerd >/dev/null 2>&1 || { echo "dockerd not found (apt-get install docker.io)" >&2; exit 3; }
    [ "$(id -u)" = 0 ] || { echo "dockerd needs root here" >&2; exit 3; }
    if ! running; then
        mkdir -p "$T"
        setsid dockerd --storage-driver=overlay2 --data-root="$T/root" --exec-root="$T/exec" \
            --pidfile="$T/pid" -H "unix://$T/docker.sock" --iptables=false --ip-forward=false \
            --ip-masq=false --bridge=none >"$T/dockerd.log" 2>&1 </dev/null &
        echo $! >"$T/launcher.pid"
    fi
    i=0
    while ! DOCKER_HOST="unix://$T/docker.sock" "$(client)" info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            echo "dockerd did not come up; last log lines:" >&2
            tail -n 20 "$T/dockerd.log" >&2 || true
            exit 3
        fi
        sleep 0.5
    done
    echo "export DOCKER_HOST=unix://$T/docker.sock"
    echo "export PREWHEEL_DOCKER=$(client)"
    echo "export DOCKER_BUILDKIT=1"
}

stop() {
    if running; then
        pid="$(cat "$T/pid")"
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 60 ]; do i=$((i + 1)); sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    if [ -d "$T" ]; then
        # Unmount whatever the engine left mounted (netns, overlay layers), deepest first.
        awk -v t="$T" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf "$T"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
