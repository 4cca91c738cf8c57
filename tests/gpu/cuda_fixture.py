"""A tiny CUDA extension package, generated for tests: `pw-cuda`.

`csrc/kernel.cu` (a vector-add kernel) is compiled by nvcc into an object that is linked into
the extension `pw_cuda._kernels` together with `libcudart` (shared). The extension reports
"no CUDA device" as a RuntimeError where there is no GPU or driver, and adds vectors on the
GPU where there is one. setup.py finds the toolkit the way most packages do (CUDA_HOME,
CUDA_PATH, nvcc on PATH, /usr/local/cuda) and reads TORCH_CUDA_ARCH_LIST for -gencode.

Run as a script to write the sdist: `python tests/gpu/cuda_fixture.py DEST_DIR`.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "pw-cuda"
MODULE = "pw_cuda"

SETUP_PY = r"""
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def cuda_home():
    homes = [os.environ.get(var) for var in ("CUDA_HOME", "CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    homes += [str(Path(nvcc).resolve().parent.parent) if nvcc else None, "/usr/local/cuda"]
    for home in homes:
        if home and (Path(home) / "include" / "cuda_runtime_api.h").is_file():
            return Path(home)
    raise SystemExit("pw-cuda needs the CUDA toolkit: set CUDA_HOME")


def gencode(arch_list):
    flags = []
    for arch in arch_list.replace(" ", ";").split(";"):
        if not arch:
            continue
        num = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if arch.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


class BuildExt(build_ext):
    def build_extension(self, ext):
        home = cuda_home()
        obj = Path(self.build_temp) / "kernel.o"
        obj.parent.mkdir(parents=True, exist_ok=True)
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "7.5+PTX")
        cmd = [str(home / "bin" / "nvcc"), "-c", "csrc/kernel.cu", "-o", str(obj), "-O2",
               "-Xcompiler", "-fPIC", *gencode(archs)]
        print(" ".join(cmd), flush=True)
        subprocess.check_call(cmd)
        ext.extra_objects = [str(obj)]
        ext.include_dirs.append(str(home / "include"))
        for d in ("lib64", "lib"):
            if (home / d / "libcudart.so").exists():
                ext.library_dirs.append(str(home / d))
                break
        super().build_extension(ext)


setup(
    packages=["pw_cuda"],
    ext_modules=[Extension("pw_cuda._kernels", ["csrc/module.c"], libraries=["cudart", "stdc++"])],
    cmdclass={"build_ext": BuildExt},
)
"""

KERNEL_CU = r"""
#include <cuda_runtime.h>

__global__ void add_kernel(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" int pw_vector_add(const float *a, const float *b, float *c, int n) {
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

MODULE_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <cuda_runtime_api.h>

int pw_vector_add(const float *a, const float *b, float *c, int n);

static PyObject *cuda_error(cudaError_t err) {
    PyErr_Format(PyExc_RuntimeError, "no CUDA device: %s (CUDA error %d)",
                 cudaGetErrorString(err), (int)err);
    return NULL;
}

static PyObject *device_count(PyObject *self, PyObject *unused) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) return cuda_error(err);
    return PyLong_FromLong(n);
}

static PyObject *runtime_version(PyObject *self, PyObject *unused) {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return PyLong_FromLong(v);
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
    int err = pw_vector_add(buf, buf + n, buf + 2 * n, (int)n);
    if (err != 0) { PyMem_Free(buf); return cuda_error((cudaError_t)err); }
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++)
        PyList_SET_ITEM(out, i, PyFloat_FromDouble(buf[2 * n + i]));
    PyMem_Free(buf);
    return out;
}

static PyMethodDef methods[] = {
    {"device_count", device_count, METH_NOARGS, "Number of CUDA devices."},
    {"runtime_version", runtime_version, METH_NOARGS, "cudaRuntimeGetVersion()."},
    {"add", add, METH_VARARGS, "Add two float vectors on the GPU."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
"""

INIT_PY = '''"""pw-cuda: a vector add on the GPU (a prewheel test fixture)."""

from ._kernels import add, device_count, runtime_version

__all__ = ["add", "device_count", "runtime_version"]
'''


def cuda_files() -> dict[str, str]:
    """The project files of `pw-cuda`, for `make_sdist` / `Upstream.add_sdist`."""
    return {
        "setup.py": SETUP_PY.lstrip(),
        "csrc/kernel.cu": KERNEL_CU.lstrip(),
        "csrc/module.c": MODULE_C.lstrip(),
        "MANIFEST.in": "recursive-include csrc *.cu *.c\n",
        f"{MODULE}/__init__.py": INIT_PY,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from upstream import make_sdist

    dest = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(make_sdist(dest, NAME, "1.0", cuda_files()))
