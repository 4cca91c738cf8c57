#!/usr/bin/env bash
# GPU smoke test: install the pw-cuda fixture wheel from prewheel's cu130 index and run its
# kernel on the GPU. Run it from the repository root on a machine with an NVIDIA GPU:
#
#   tests/gpu/run_gpu_smoke.sh                 # builds the wheel here first (needs nvcc 13.0)
#   WHEELHOUSE=/path/to/wheelhouse tests/gpu/run_gpu_smoke.sh
#       uses the pw-cuda wheel already built there, or builds it there (and keeps it)
#
# Environment: PYTHON (default python3), ACCEL (default cu130), ARCH_LIST (default "7.5;8.0;
# 9.0;10.0;12.0+PTX"), CUDA_HOME (where libcudart comes from when the system has none).
# Exit status: 0 the kernel ran and added correctly; 3 no usable GPU (the wheel still imported
# and said so cleanly); anything else, a failure.
set -euo pipefail

ACCEL=${ACCEL:-cu130}
# shellcheck source=tests/gpu/common.sh
. "$(dirname "$0")/common.sh"

say() { printf '== %s\n' "$*"; }

say "machine"
uname -srm
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
    echo "nvidia-smi: not found"
fi
"$PYTHON" --version

WHEELHOUSE=${WHEELHOUSE:-$WORK/wheelhouse}
if ! ls "$WHEELHOUSE"/files/*/pw_cuda-*.whl >/dev/null 2>&1; then
    say "building pw-cuda for $ACCEL (arch list $ARCH_LIST) into $WHEELHOUSE"
    "$PYTHON" - "$WORK" "$ACCEL" "$ARCH_LIST" "$WHEELHOUSE" <<'EOF'
import json, subprocess, sys
from pathlib import Path

sys.path[:0] = ["tests", "tests/gpu"]
from cuda_fixture import NAME, cuda_files
from upstream import standard_upstream

work, accel, arch_list = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(";")
wheelhouse = Path(sys.argv[4]).resolve()
up = standard_upstream(work / "upstream")
try:
    up.add_sdist(NAME, "1.0", cuda_files())
    config = work / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{up.url}"\n\n'
        f'[targets]\npython = ["{sys.executable}"]\naccel = ["{accel}"]\n\n'
        f"[accel.{accel}]\narch_list = {json.dumps(arch_list)}\n"
    )
    (work / "requirements.txt").write_text(f"{NAME}==1.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "builder", "build", "-r", str(work / "requirements.txt"),
         "-c", str(config), "--wheelhouse", str(wheelhouse), "--quiet"],
    )
    sys.exit(proc.returncode)
finally:
    up.stop()
EOF
fi

say "serving $WHEELHOUSE"
serve_wheelhouse "$WHEELHOUSE" "$ACCEL"

say "installing pw-cuda from http://127.0.0.1:$PORT/$ACCEL/simple/"
"$PYTHON" -m venv --without-pip "$WORK/venv"
PIP_CONFIG_FILE=/dev/null "$PYTHON" -m pip --python "$WORK/venv/bin/python" install --isolated \
    --only-binary=:all: --index-url "http://127.0.0.1:$PORT/$ACCEL/simple/" pw-cuda==1.0
"$PYTHON" -m auditwheel show "$(find "$WHEELHOUSE/files" -name 'pw_cuda-*.whl' | head -1)" || true

find_cudart "$("$WORK/venv/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)/nvidia/cu13/lib"

say "running the kernel"
set +e
"$WORK/venv/bin/python" - <<'EOF'
import random, sys
import pw_cuda

print("CUDA runtime", pw_cuda.runtime_version())
try:
    n = pw_cuda.device_count()
except RuntimeError as exc:
    print(exc)
    sys.exit(3)
print("devices", n)
print("add:", pw_cuda.add([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]))
assert pw_cuda.add([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == [11.0, 22.0, 33.0]
xs = [random.random() for _ in range(1_000_000)]
ys = [random.random() for _ in range(1_000_000)]
out = pw_cuda.add(xs, ys)
worst = max(abs(o - (x + y)) for o, x, y in zip(out, xs, ys))
print(f"1e6 elements, max error {worst:.2e}")
assert worst < 1e-5
print("GPU smoke: OK")
EOF
status=$?
set -e
exit $status
