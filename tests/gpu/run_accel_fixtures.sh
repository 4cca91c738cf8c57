#!/usr/bin/env bash
# The accelerator fixtures where they are used: each index's build of pw-cu-found (CUDA when
# a toolkit is found), pw-cu-always (CUDA always) and pw-cu-never (no CUDA) installed with no
# compiler into a fresh venv, from the cpu and the cu130 index. Run it from the repository
# root on a machine with an NVIDIA GPU:
#
#   tests/gpu/run_accel_fixtures.sh                   # builds the fixtures here first (nvcc 13.0)
#   WHEELHOUSE=/path/to/wheelhouse tests/gpu/run_accel_fixtures.sh
#       uses the wheels already built there, or builds them there (and keeps them)
#
# Expected: the cpu index has a cpu build of pw-cu-found and pw-cu-never and no pw-cu-always;
# the cu130 index has CUDA builds of pw-cu-found and pw-cu-always (add() runs on the GPU) and
# the cpu build of pw-cu-never. Environment: PYTHON (default python3), ARCH_LIST (default
# "7.5;8.0;9.0;10.0;12.0+PTX"), CUDA_HOME (where libcudart comes from). Exit status: 0 all as
# expected; 3 no usable GPU (every build as expected, the CUDA ones said so cleanly); 1 a
# build in the wrong index or a wrong sum.
set -euo pipefail

# shellcheck source=tests/gpu/common.sh
. "$(dirname "$0")/common.sh"
WHEELHOUSE=${WHEELHOUSE:-$WORK/wheelhouse}
if ! ls "$WHEELHOUSE"/files/*/pw_cu_found-*.whl >/dev/null 2>&1; then
    echo "== building the accelerator fixtures for cpu and cu130 into $WHEELHOUSE"
    "$PYTHON" - "$WORK" "$ARCH_LIST" "$WHEELHOUSE" <<'PYEOF'
import json, subprocess, sys
from pathlib import Path

sys.path[:0] = ["tests", "tests/gpu"]
from accel_fixtures import all_fixtures
from upstream import standard_upstream

work, arch_list, wheelhouse = Path(sys.argv[1]), sys.argv[2].split(";"), Path(sys.argv[3])
up = standard_upstream(work / "upstream")
try:
    fixtures = all_fixtures()
    for name, files in fixtures.items():
        up.add_sdist(name, "1.0", files)
    config = work / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{up.url}"\n\n'
        f'[targets]\npython = ["{sys.executable}"]\naccel = ["cpu", "cu130"]\n\n'
        f"[accel.cu130]\narch_list = {json.dumps(arch_list)}\n"
    )
    (work / "requirements.txt").write_text("".join(f"{n}==1.0\n" for n in fixtures))
    # pw-cu-always fails for cpu (it needs a toolkit): exit 1 is expected here.
    subprocess.run(
        [sys.executable, "-m", "builder", "build", "-r", str(work / "requirements.txt"),
         "-c", str(config), "--wheelhouse", str(wheelhouse.resolve()), "--quiet"],
    )
finally:
    up.stop()
PYEOF
fi

serve_wheelhouse "$WHEELHOUSE" cpu
find_cudart

status=0
check() {  # index package expected-backend ("none": not in that index)
    local venv="$WORK/venv-$1-$2"
    "$PYTHON" -m venv --without-pip "$venv"
    if ! PIP_CONFIG_FILE=/dev/null "$PYTHON" -m pip --python "$venv/bin/python" install -q \
        --isolated --only-binary=:all: --index-url "http://127.0.0.1:$PORT/$1/simple/" \
        "$2==1.0" 2>"$WORK/pip-$1-$2"; then
        if [ "$3" = none ]; then echo "$1 $2: not in the index, as expected"; return; fi
        echo "$1 $2: FAILED, not installable: $(grep -m1 ERROR "$WORK/pip-$1-$2")"; status=1; return
    fi
    set +e
    "$venv/bin/python" - "$1" "$2" "$3" <<'PYEOF'
import importlib, sys

index, name, expected = sys.argv[1:]
m = importlib.import_module(name.replace("-", "_"))
print(f"{index} {name}: BACKEND={m.BACKEND} CUDA_RUNTIME={m.CUDA_RUNTIME}", end=" ")
if m.BACKEND != expected:
    print(f"FAILED: expected the {expected} build")
    sys.exit(1)
try:
    got = m.add([1.0, 2.0, 3.0], [10.0, 20.0, 30.0])
except RuntimeError as exc:  # a CUDA build on a host without a usable GPU
    print(f"({exc})")
    sys.exit(3)
print(f"add={got}")
sys.exit(0 if got == [11.0, 22.0, 33.0] else 1)
PYEOF
    local code=$?
    set -e
    if [ $code -eq 1 ] || { [ $code -eq 3 ] && [ $status -eq 0 ]; }; then status=$code; fi
}
check cpu pw-cu-found cpu
check cpu pw-cu-never cpu
check cpu pw-cu-always none
check cu130 pw-cu-found cuda
check cu130 pw-cu-always cuda
check cu130 pw-cu-never cpu
[ $status -eq 0 ] && echo "accelerator fixtures: OK"
exit $status
