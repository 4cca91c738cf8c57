# Sourced by the GPU scripts (run_gpu_smoke.sh, run_accel_fixtures.sh): PYTHON, the
# repository root on PYTHONPATH, a scratch directory removed at exit with the server it
# started, the wheelhouse served, and the CUDA runtime the CUDA wheels were built without.

PYTHON=${PYTHON:-python3}
ARCH_LIST=${ARCH_LIST:-"7.5;8.0;9.0;10.0;12.0+PTX"}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d -t prewheel-gpu-XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# serve_wheelhouse WHEELHOUSE ACCEL: serve it on a free port (PORT) until the script ends.
serve_wheelhouse() {
    PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$PYTHON" -m builder serve --wheelhouse "$1" --port "$PORT" --quiet &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/$2/simple/')" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
}

# find_cudart [DIR...]: libcudart was excluded from the CUDA wheels (the runtime image, or
# nvidia-cuda-runtime, provides it); where the system has none, the toolkit's or DIR's.
find_cudart() {
    if ldconfig -p 2>/dev/null | grep -q 'libcudart\.so\.13'; then return; fi
    for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" "${CUDA_HOME:-/usr/local/cuda}/lib" "$@"; do
        if [ -e "$d/libcudart.so.13" ]; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            return
        fi
    done
}
