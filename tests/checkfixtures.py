"""Tiny real sdists that build and import, and then fail where the runtime uses them.

Each is a real C extension compiled by the suite's PEP 517 builds:

- `pw-firstcall` calls `pw_dep.legacy()` at its first call: it works with pw-dep 1.0 and
  fails with 2.0, which removed it (fasttext and numpy 2, in small).
- `pw-ssize` parses `s#` without PY_SSIZE_T_CLEAN (crc16 0.1.1): SystemError on 3.10+.
- `pw-removedapi` has a submodule extension calling `Py_SetStandardStreamEncoding`, gone
  from Python 3.13; importing the package does not load it.
- `pw-abi3bad` is tagged abi3 but calls `PyUnicode_New`, outside the limited API.
- `pw-fallback` declares a C extension that does not compile (a header gone, as
  `longintrepr.h` from Python 3.11 for PyYAML 5.3.1) and falls back to pure Python: its
  wheel is tagged for the platform and holds no compiled code, and its top_level.txt names
  the missing top-level extension (`_yaml` there, `_pw_fallback` here).
- `pw-sized` needs the config's own CFLAGS (it does not compile without them) and carries
  enough code for its debug info to show.
"""

from __future__ import annotations

from upstream import Upstream

SETUP = "from setuptools import Extension, setup\n\nsetup(ext_modules=[{ext}]{extra})\n"


def _module(name: str, methods: str, functions: str, *, clean: bool = True) -> str:
    """A C extension module `name` (its last dotted part) with `functions` and `methods`."""
    short = name.rsplit(".", 1)[-1]
    define = "#define PY_SSIZE_T_CLEAN\n" if clean else ""
    return (
        f"{define}#include <Python.h>\n\n{functions}\n"
        f"static PyMethodDef methods[] = {{\n{methods}    {{NULL, NULL, 0, NULL}},\n}};\n\n"
        f'static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, '
        "methods};\n\n"
        f"PyMODINIT_FUNC PyInit_{short}(void) {{ return PyModule_Create(&module); }}\n"
    )


FIRSTCALL_C = _module(
    "pw_firstcall",
    '    {"compute", compute, METH_NOARGS, "pw_dep.legacy(), from C."},\n',
    """static PyObject *compute(PyObject *self, PyObject *unused) {
    PyObject *dep = PyImport_ImportModule("pw_dep");
    if (dep == NULL) return NULL;
    PyObject *out = PyObject_CallMethod(dep, "legacy", NULL);
    Py_DECREF(dep);
    return out;
}
""",
)

SSIZE_C = _module(
    "pw_ssize",
    '    {"length", length, METH_VARARGS, "The length of a string, parsed with s#."},\n',
    """static PyObject *length(PyObject *self, PyObject *args) {
    const char *data;
    int size;  /* an int, as before PY_SSIZE_T_CLEAN */
    if (!PyArg_ParseTuple(args, "s#:length", &data, &size)) return NULL;
    return PyLong_FromLong(size);
}
""",
    clean=False,
)

REMOVED_C = _module(
    "pw_removedapi._speedups",
    '    {"set_encoding", set_encoding, METH_NOARGS, "A pre-init API removed in 3.13."},\n',
    """static PyObject *set_encoding(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(Py_SetStandardStreamEncoding("utf-8", "strict"));
}
""",
)

ABI3_C = _module(
    "pw_abi3bad",
    '    {"make", make, METH_NOARGS, "A string made with the non-limited PyUnicode_New."},\n',
    """static PyObject *make(PyObject *self, PyObject *unused) {
    return PyUnicode_New(0, 127);
}
""",
)

SIZED_C = _module(
    "pw_sized",
    '    {"total", total, METH_VARARGS, "Sums a table, so there is code to describe."},\n',
    """#ifndef PW_CONFIG_FLAG
#error "the config's CFLAGS were replaced instead of appended to"
#endif

struct entry { const char *name; long weight; double scale; struct entry *next; };

static long walk(struct entry *e, long depth) {
    long sum = 0;
    for (; e != NULL; e = e->next) sum += (long)(e->weight * e->scale) + depth;
    return sum;
}

static PyObject *total(PyObject *self, PyObject *args) {
    long n;
    if (!PyArg_ParseTuple(args, "l", &n)) return NULL;
    struct entry c = {"c", n, 1.5, NULL}, b = {"b", n, 2.0, &c}, a = {"a", n, 0.5, &b};
    return PyLong_FromLong(walk(&a, n));
}
""",
)


# PyYAML 5.3.1's way: an extension that fails to build is left out, with a message.
FALLBACK_SETUP = """from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    def run(self):
        try:
            build_ext.run(self)
        except Exception as exc:
            print("Error compiling module, falling back to pure Python:", exc)


setup(
    ext_modules=[Extension("_pw_fallback", ["speedups.c"])],
    cmdclass={"build_ext": optional_build_ext},
)
"""
FALLBACK_C = "#include <pw_header_gone_in_this_python.h>\n"


def add_all(index: Upstream) -> None:
    """Add the fixtures (and pw-dep 1.0 and 2.0, as wheels) to `index`, under new names."""
    index.add_wheel("pw-dep", "1.0", {"pw_dep/__init__.py": "def legacy():\n    return 42\n"})
    index.add_wheel("pw-dep", "2.0", {"pw_dep/__init__.py": "def modern():\n    return 42\n"})
    index.add_sdist(
        "pw-firstcall",
        "1.0",
        {
            "setup.py": SETUP.format(ext="Extension('pw_firstcall', ['pw_firstcall.c'])", extra=""),
            "pw_firstcall.c": FIRSTCALL_C,
        },
        deps=["pw-dep"],  # unbounded, as fasttext's numpy
    )
    index.add_sdist(
        "pw-ssize",
        "1.0",
        {
            "setup.py": SETUP.format(ext="Extension('pw_ssize', ['pw_ssize.c'])", extra=""),
            "pw_ssize.c": SSIZE_C,
        },
    )
    index.add_sdist(
        "pw-removedapi",
        "1.0",
        {
            "setup.py": SETUP.format(
                ext="Extension('pw_removedapi._speedups', ['speedups.c'])", extra=""
            ),
            "speedups.c": REMOVED_C,
            "pw_removedapi/__init__.py": "VALUE = 1  # _speedups loads only when used\n",
        },
    )
    index.add_sdist(
        "pw-abi3bad",
        "1.0",
        {
            "setup.py": SETUP.format(
                ext="Extension('pw_abi3bad', ['pw_abi3bad.c'], py_limited_api=True)",
                extra=", options={'bdist_wheel': {'py_limited_api': 'cp38'}}",
            ),
            "pw_abi3bad.c": ABI3_C,
        },
    )
    index.add_sdist(
        "pw-fallback",
        "1.0",
        {"setup.py": FALLBACK_SETUP, "speedups.c": FALLBACK_C, "pw_fallback/__init__.py": ""},
    )
    index.add_sdist(
        "pw-sized",
        "1.0",
        {
            "setup.py": SETUP.format(ext="Extension('pw_sized', ['pw_sized.c'])", extra=""),
            "pw_sized.c": SIZED_C,
        },
    )
