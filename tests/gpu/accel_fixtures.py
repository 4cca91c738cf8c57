"""Generated sdists for the three ways packages treat CUDA, each reporting its backend.

- `pw-cu-always`: CUDA always. Its setup.py looks for a toolkit (CUDA_HOME, CUDA_PATH, nvcc on
  PATH, /usr/local/cuda) and stops without one.
- `pw-cu-found`: CUDA when found, the `WITH_CUDA = CUDA_HOME is not None or FORCE_CUDA`
  pattern of torch-scatter and pytorch3d: a CUDA extension with a toolkit, a CPU-only one
  without, silently.
- `pw-cu-never`: a plain C extension; nothing in it mentions CUDA.

Each module has `BACKEND` ("cuda" or "cpu", set at compile time), `CUDA_RUNTIME` (the
CUDART_VERSION it was compiled against, or 0) and `add(xs, ys)` (on the GPU for the CUDA
build). `pw-cu-fixedarch` is `always` with its own hard-coded architecture list (sm_80),
ignoring TORCH_CUDA_ARCH_LIST: a build whose arch list is not the configured one.
"""

from __future__ import annotations

SETUP_CUDA = r'''
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PATTERN = "{pattern}"
MODULE = "{module}"
FIXED_ARCHS = {fixed_archs!r}


def cuda_home():
    """Where the toolkit is, found the way torch finds its CUDA_HOME."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    homes += [str(Path(nvcc).resolve().parent.parent) if nvcc else None, "/usr/local/cuda"]
    for home in homes:
        if home and (Path(home) / "include" / "cuda_runtime_api.h").is_file():
            return Path(home)
    return None


CUDA_HOME = cuda_home()
if PATTERN == "always":
    if CUDA_HOME is None:
        raise SystemExit(f"{{MODULE}} needs the CUDA toolkit: set CUDA_HOME")
    WITH_CUDA = True
else:
    WITH_CUDA = CUDA_HOME is not None or os.getenv("FORCE_CUDA", "0") == "1"
print(f"{{MODULE}}: CUDA_HOME={{CUDA_HOME}} WITH_CUDA={{WITH_CUDA}}", flush=True)


def gencode(arch_list):
    flags = []
    for arch in arch_list.replace(" ", ";").split(";"):
        if not arch:
            continue
        num = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{{num}},code=sm_{{num}}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{{num}},code=compute_{{num}}")
    return flags


class BuildExt(build_ext):
    def build_extension(self, ext):
        if WITH_CUDA:
            obj = Path(self.build_temp) / "kernel.o"
            obj.parent.mkdir(parents=True, exist_ok=True)
            archs = FIXED_ARCHS or os.environ.get("TORCH_CUDA_ARCH_LIST", "7.5+PTX")
            cmd = [str(CUDA_HOME / "bin" / "nvcc"), "-c", "csrc/kernel.cu", "-o", str(obj),
                   "-O2", "-Xcompiler", "-fPIC", *gencode(archs)]
            print(" ".join(cmd), flush=True)
            subprocess.check_call(cmd)
            ext.extra_objects = [str(obj)]
            ext.include_dirs.append(str(CUDA_HOME / "include"))
            ext.define_macros.append(("PW_WITH_CUDA", "1"))
            for d in ("lib64", "lib"):
                if (CUDA_HOME / d / "libcudart.so").exists():
                    ext.library_dirs.append(str(CUDA_HOME / d))
                    break
            ext.libraries += ["cudart", "stdc++"]
        super().build_extension(ext)


setup(
    packages=[MODULE],
    ext_modules=[Extension(f"{{MODULE}}._backend", ["csrc/backend.c"])],
    cmdclass={{"build_ext": BuildExt}},
)
'''

SETUP_PLAIN = r"""
from setuptools import Extension, setup

setup(
    packages=["{module}"],
    ext_modules=[Extension("{module}._backend", ["csrc/backend.c"])],
)
"""

KERNEL_CU = r"""
#include <cuda_runtime.h>

__global__ void add_kernel(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" int pw_gpu_add(const float *a, const float *b, float *c, int n) {
    float *da = 0, *db = 0, *dc = 0;
    size_t size = (size_t)n * sizeof(float);
    cudaError_t err = cudaMalloc((void **)&da, size);
    if (err == cudaSuccess) err = cudaMalloc((void **)&db, size);
    if (err == cudaSuccess) err = cudaMalloc((void **)&dc, size);
    if (err == cudaSuccess) err = cudaMemcpy(da, a, size, cudaMemcpyHostToDevice);
    if (err == cudaSuccess) err = cudaMemcpy(db, b, size, cudaMemcpyHostToDevice);
    if (err == cudaSuccess) {
        add_kernel<<<(n + 255) / 256, 256>>>(da, db, dc, n);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess) err = cudaMemcpy(c, dc, size, cudaMemcpyDeviceToHost);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    return (int)err;
}
"""

BACKEND_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef PW_WITH_CUDA
#include <cuda_runtime_api.h>
int pw_gpu_add(const float *a, const float *b, float *c, int n);
#define PW_BACKEND "cuda"
#define PW_RUNTIME CUDART_VERSION
#else
#define PW_BACKEND "cpu"
#define PW_RUNTIME 0
#endif

static int add_floats(const float *a, const float *b, float *c, int n) {
#ifdef PW_WITH_CUDA
    return pw_gpu_add(a, b, c, n);
#else
    for (int i = 0; i < n; i++) c[i] = a[i] + b[i];
    return 0;
#endif
}

static PyObject *add(PyObject *self, PyObject *args) {
    PyObject *xs, *ys;
    if (!PyArg_ParseTuple(args, "OO", &xs, &ys)) return NULL;
    Py_ssize_t n = PySequence_Size(xs);
    if (n < 0 || PySequence_Size(ys) != n) {
        PyErr_SetString(PyExc_ValueError, "two sequences of the same length expected");
        return NULL;
    }
    float *buf = PyMem_Calloc(3 * (size_t)(n ? n : 1), sizeof(float));
    if (!buf) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PySequence_GetItem(xs, i), *y = PySequence_GetItem(ys, i);
        buf[i] = x ? (float)PyFloat_AsDouble(x) : 0;
        buf[n + i] = y ? (float)PyFloat_AsDouble(y) : 0;
        Py_XDECREF(x);
        Py_XDECREF(y);
    }
    if (PyErr_Occurred()) { PyMem_Free(buf); return NULL; }
    int err = add_floats(buf, buf + n, buf + 2 * n, (int)n);
    if (err != 0) {
        PyMem_Free(buf);
        return PyErr_Format(PyExc_RuntimeError, "no CUDA device (CUDA error %d)", err);
    }
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++)
        PyList_SET_ITEM(out, i, PyFloat_FromDouble(buf[2 * n + i]));
    PyMem_Free(buf);
    return out;
}

static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, "Add two float vectors (on the GPU in the CUDA build)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_backend", NULL, -1, methods};

PyMODINIT_FUNC PyInit__backend(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyModule_AddStringConstant(m, "BACKEND", PW_BACKEND);
    PyModule_AddIntConstant(m, "CUDA_RUNTIME", PW_RUNTIME);
    return m;
}
"""

INIT_PY = (
    '"""A prewheel accelerator fixture."""\n\nfrom ._backend import BACKEND, CUDA_RUNTIME, add\n'
)

PACKAGES = {"always": "pw-cu-always", "when-found": "pw-cu-found", "never": "pw-cu-never"}
FIXED_ARCH = "pw-cu-fixedarch"


def module_of(name: str) -> str:
    return name.replace("-", "_")


def accel_files(pattern: str, name: str, *, fixed_archs: str | None = None) -> dict[str, str]:
    """The project files of one fixture: `pattern` is "always", "when-found" or "never"."""
    module = module_of(name)
    files = {
        "csrc/backend.c": BACKEND_C.lstrip(),
        f"{module}/__init__.py": INIT_PY,
    }
    if pattern == "never":
        files["setup.py"] = SETUP_PLAIN.format(module=module).lstrip()
        files["MANIFEST.in"] = "recursive-include csrc *.c\n"
        return files
    files["setup.py"] = SETUP_CUDA.format(
        pattern=pattern, module=module, fixed_archs=fixed_archs
    ).lstrip()
    files["csrc/kernel.cu"] = KERNEL_CU.lstrip()
    files["MANIFEST.in"] = "recursive-include csrc *.cu *.c\n"
    return files


def all_fixtures(with_fixed_arch: bool = False) -> dict[str, dict[str, str]]:
    """name -> files, for `Upstream.add_sdist(name, "1.0", files)`."""
    out = {name: accel_files(pattern, name) for pattern, name in PACKAGES.items()}
    if with_fixed_arch:
        out[FIXED_ARCH] = accel_files("always", FIXED_ARCH, fixed_archs="8.0")
    return out


# A package that links a CUDA library with no toolkit and no word of CUDA in its build: it
# ships a vendored `libcudart.so.13` (here a stub compiled on the spot). Only the wheel's
# DT_NEEDED, read after the build, tells that it is accelerator-specific.
STUB = "pw-cu-stub"

SETUP_STUB = r"""
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    def build_extension(self, ext):
        out = Path(self.build_temp) / "vendor"
        out.mkdir(parents=True, exist_ok=True)
        objs = self.compiler.compile(["vendor/rt.c"], output_dir=str(out),
                                     extra_postargs=["-fPIC"])
        self.compiler.link_shared_object(objs, str(out / "libcudart.so.13"),
                                         extra_preargs=["-Wl,-soname,libcudart.so.13"])
        ext.library_dirs.append(str(out))
        ext.extra_link_args.append("-l:libcudart.so.13")
        super().build_extension(ext)


setup(
    packages=["pw_cu_stub"],
    ext_modules=[Extension("pw_cu_stub._rt", ["src/rt_module.c"])],
    cmdclass={"build_ext": BuildExt},
)
"""

STUB_RT_C = "int cudaRuntimeGetVersion(int *v) { *v = 1; return 0; }\n"

STUB_MODULE_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int cudaRuntimeGetVersion(int *v);

static PyObject *runtime(PyObject *self, PyObject *unused) {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return PyLong_FromLong(v);
}

static PyMethodDef methods[] = {{"runtime", runtime, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rt", NULL, -1, methods};
PyMODINIT_FUNC PyInit__rt(void) { return PyModule_Create(&module); }
"""


def stub_files() -> dict[str, str]:
    return {
        "setup.py": SETUP_STUB.lstrip(),
        "vendor/rt.c": STUB_RT_C,
        "src/rt_module.c": STUB_MODULE_C.lstrip(),
        "MANIFEST.in": "recursive-include vendor *.c\nrecursive-include src *.c\n",
        "pw_cu_stub/__init__.py": "from ._rt import runtime\n",
    }
