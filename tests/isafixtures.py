"""Tiny real sdists for the ISA baseline and the zig toolchain, on the local upstream.

- `pw-native` compiles with `-march=native -O3` (annoy, hnswlib) a loop gcc vectorizes with
  the widest vectors the build machine has: the compiler wrapper must take that away.
- `pw-avx2` calls an AVX2 function (`__attribute__((target("avx2")))`) with no CPU check:
  no wrapper can fix that, the scan must fail the wheel.
- `pw-zlibc` is C that includes `zlib.h` and links `-lz` (a system header and library zig
  does not search by itself); `pw-cxx` is C++ with the standard library (strings, vectors,
  exceptions, a stream): built with zig, it carries zig's libc++.
"""

from __future__ import annotations

from checkfixtures import SETUP, _module
from upstream import Upstream

NATIVE_C = _module(
    "pw_native",
    '    {"dot", dot, METH_VARARGS, "A dot product of n terms, vectorized by gcc."},\n',
    """static float xs[4096], ys[4096];

static float kernel(int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += xs[i] * ys[i] + xs[i] / (ys[i] + 1.0f);
    return s;
}

static PyObject *dot(PyObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (n < 0 || n > 4096) n = 4096;
    for (int i = 0; i < n; i++) { xs[i] = (float)i; ys[i] = 2.0f; }
    return PyFloat_FromDouble(kernel(n));
}
""",
)

AVX2_C = _module(
    "pw_avx2",
    '    {"double_all", double_all, METH_VARARGS, "AVX2, called without asking the CPU."},\n',
    """#include <immintrin.h>

__attribute__((target("avx2"), noinline)) static int doubled(const int *data) {
    int out[8];
    __m256i v = _mm256_loadu_si256((const __m256i *)data);
    v = _mm256_add_epi32(v, v);
    _mm256_storeu_si256((__m256i *)out, v);
    return out[7];
}

static PyObject *double_all(PyObject *self, PyObject *args) {
    int data[8];
    if (!PyArg_ParseTuple(args, "i", &data[0])) return NULL;
    for (int i = 1; i < 8; i++) data[i] = data[0] + i;
    return PyLong_FromLong(doubled(data));
}
""",
)

ZLIB_C = _module(
    "pw_zlibc",
    '    {"roundtrip", roundtrip, METH_VARARGS, "Compress and decompress bytes with zlib."},\n',
    """#include <zlib.h>

static PyObject *roundtrip(PyObject *self, PyObject *args) {
    const char *data;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y#", &data, &size)) return NULL;
    unsigned char packed[4096], out[4096];
    uLongf plen = sizeof packed, olen = sizeof out;
    if (size > 1024) size = 1024;
    if (compress(packed, &plen, (const Bytef *)data, (uLong)size) != Z_OK) return NULL;
    if (uncompress(out, &olen, packed, plen) != Z_OK) return NULL;
    return Py_BuildValue("(y#s)", out, (Py_ssize_t)olen, zlibVersion());
}
""",
)

CXX_CPP = """#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

static std::string join_sorted(std::vector<std::string> words) {
    if (words.empty()) throw std::invalid_argument("no words");
    std::sort(words.begin(), words.end());
    std::ostringstream out;
    for (size_t i = 0; i < words.size(); i++) out << (i ? "," : "") << words[i];
    return out.str();
}

static PyObject *sorted_words(PyObject *self, PyObject *args) {
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "O", &seq)) return NULL;
    std::vector<std::string> words;
    PyObject *it = PyObject_GetIter(seq);
    if (it == NULL) return NULL;
    for (PyObject *item; (item = PyIter_Next(it)) != NULL; Py_DECREF(item)) {
        const char *s = PyUnicode_AsUTF8(item);
        if (s == NULL) { Py_DECREF(item); Py_DECREF(it); return NULL; }
        words.emplace_back(s);
    }
    Py_DECREF(it);
    try {
        return PyUnicode_FromString(join_sorted(words).c_str());
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_ValueError, e.what());
        return NULL;
    }
}

static PyMethodDef methods[] = {
    {"sorted_words", sorted_words, METH_VARARGS, "Sort and join, in C++."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pw_cxx", NULL, -1, methods};

PyMODINIT_FUNC PyInit_pw_cxx(void) { return PyModule_Create(&module); }
"""


def add_isa(index: Upstream) -> None:
    native = "Extension('pw_native', ['pw_native.c'], extra_compile_args=['-O3', '-march=native'])"
    index.add_sdist(
        "pw-native",
        "1.0",
        {"setup.py": SETUP.format(ext=native, extra=""), "pw_native.c": NATIVE_C},
    )
    avx2 = "Extension('pw_avx2', ['pw_avx2.c'])"
    index.add_sdist(
        "pw-avx2", "1.0", {"setup.py": SETUP.format(ext=avx2, extra=""), "pw_avx2.c": AVX2_C}
    )


def add_zig(index: Upstream) -> None:
    zlibc = "Extension('pw_zlibc', ['pw_zlibc.c'], libraries=['z'])"
    index.add_sdist(
        "pw-zlibc", "1.0", {"setup.py": SETUP.format(ext=zlibc, extra=""), "pw_zlibc.c": ZLIB_C}
    )
    cxx = "Extension('pw_cxx', ['pw_cxx.cpp'], language='c++')"
    index.add_sdist(
        "pw-cxx", "1.0", {"setup.py": SETUP.format(ext=cxx, extra=""), "pw_cxx.cpp": CXX_CPP}
    )
