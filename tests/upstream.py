"""A small local upstream index of generated packages, served on 127.0.0.1, for offline tests.

`make_sdist` and `make_wheel` write real, deterministic distributions (same inputs, same
bytes: cache-key tests can rely on it). `Upstream` holds them in `root/files/`, writes PEP 503
pages to `root/simple/` and serves the tree over HTTP. `standard_upstream` fills one with the
`pw-*` packages the test suite shares, plus the setuptools (and, where found, wheel) wheels
their PEP 517 builds need, taken from local copies only.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import html
import io
import os
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from email.message import Message
from email.parser import HeaderParser
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

EPOCH = 1_577_836_800  # 2020-01-01: fixed timestamps make the archives reproducible
REQUIRES_PYTHON = ">=3.9"

#: The type of the `write_config` fixture: `write_config(directory, **tables) -> Path`.
WriteConfig = Callable[..., Path]


def pip_isolated_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the machine's pip / uv configuration.

    The build machines' pip config adds extra indexes and find-links; a test that reads them
    is no longer offline. Use it with `pip --isolated` (uv: `--no-config`).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env |= {
        "PIP_CONFIG_FILE": os.devnull,  # pip: "no config files at all"
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "UV_NO_CONFIG": "1",
    }
    return env | dict(extra or {})


def _metadata(name: str, version: str, deps: Iterable[str], requires_python: str | None) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {dep}" for dep in deps]
    return "\n".join(lines) + "\n"


def _pyproject(name: str, version: str, deps: Iterable[str], requires_python: str | None) -> str:
    deps_toml = ", ".join(f'"{dep}"' for dep in deps)
    rp = f'requires-python = "{requires_python}"\n' if requires_python else ""
    return (
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n{rp}dependencies = [{deps_toml}]\n'
    )


def dist_stem(name: str, version: str) -> str:
    """`pw-cext`, `1.0` -> `pw_cext-1.0`: the PEP 625 sdist / wheel file name stem."""
    return f"{canonicalize_name(name).replace('-', '_')}-{Version(version)}"


def make_sdist(
    dest_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, str],
    *,
    deps: Iterable[str] = (),
    requires_python: str | None = REQUIRES_PYTHON,
) -> Path:
    """Write a setuptools sdist `dest_dir/<name>-<version>.tar.gz`; return its path.

    `files` maps paths inside the project to their text. A `pyproject.toml` (setuptools
    backend) and `PKG-INFO` are added unless `files` brings its own; add a `setup.py` for
    C extensions. Packages are found by setuptools' automatic discovery.
    """
    deps = tuple(deps)
    stem = dist_stem(name, version)
    content = {
        "pyproject.toml": _pyproject(name, version, deps, requires_python),
        "PKG-INFO": _metadata(name, version, deps, requires_python),
        **files,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, text in sorted(content.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{stem}/{rel}")
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{stem}.tar.gz"
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue())
    return path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, str],
    *,
    deps: Iterable[str] = (),
    requires_python: str | None = REQUIRES_PYTHON,
    tag: str = "py3-none-any",
) -> Path:
    """Write a pure wheel `dest_dir/<name>-<version>-<tag>.whl` holding `files`; return its path."""
    stem = dist_stem(name, version)
    dist_info = f"{stem}.dist-info"
    content = {
        **files,
        f"{dist_info}/METADATA": _metadata(name, version, deps, requires_python),
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: prewheel-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ),
    }
    record = [
        f"{rel},{_record_hash(text.encode())},{len(text.encode())}" for rel, text in content.items()
    ]
    content[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{stem}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, text in content.items():
            zf.writestr(zipfile.ZipInfo(rel, (2020, 1, 1, 0, 0, 0)), text)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: Path) -> Message:
    """Core metadata of a wheel (`METADATA`) or an sdist (`PKG-INFO`)."""
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            text = zf.read(name).decode()
    else:
        with tarfile.open(path) as tar:
            member = next(
                m
                for m in tar.getmembers()
                if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
            )
            fileobj = tar.extractfile(member)
            assert fileobj is not None
            text = fileobj.read().decode()
    return HeaderParser().parsestr(text)


def project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return parse_wheel_filename(filename)[0]
    return parse_sdist_filename(filename)[0]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    """`root` served as any static web server (nginx, S3) would; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=partial(server.serve_forever, poll_interval=0.05), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class Upstream:
    """A PEP 503 index over `root/files/`, served at `url` (`http://127.0.0.1:PORT/simple/`).

    Use it as a context manager, or call `start()` / `stop()`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.simple_dir = root / "simple"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.simple_dir.mkdir(parents=True, exist_ok=True)
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # -- serving -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("upstream index is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/simple/"

    def file_url(self, filename: str) -> str:
        return f"{self.base_url}/files/{filename}"

    def start(self) -> Upstream:
        handler = partial(_QuietHandler, directory=str(self.root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        serve = partial(self._server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- content -------------------------------------------------------------------------
    def add_file(self, path: Path) -> Path:
        """Copy a wheel or sdist into the index (replacing a file of that name); update pages."""
        dest = self.files_dir / path.name
        if path.resolve() != dest.resolve():
            shutil.copyfile(path, dest)
        self.regenerate(project_of(path.name))
        return dest

    def add_sdist(
        self,
        name: str,
        version: str,
        files: Mapping[str, str],
        *,
        deps: Iterable[str] = (),
        requires_python: str | None = REQUIRES_PYTHON,
    ) -> Path:
        """`make_sdist` straight into the index (replacing an sdist of that name)."""
        sdist = make_sdist(
            self.files_dir, name, version, files, deps=deps, requires_python=requires_python
        )
        return self.add_file(sdist)

    def add_wheel(
        self,
        name: str,
        version: str,
        files: Mapping[str, str],
        *,
        deps: Iterable[str] = (),
        requires_python: str | None = REQUIRES_PYTHON,
    ) -> Path:
        """`make_wheel` straight into the index (replacing a wheel of that name)."""
        wheel = make_wheel(
            self.files_dir, name, version, files, deps=deps, requires_python=requires_python
        )
        return self.add_file(wheel)

    def remove_file(self, filename: str) -> None:
        (self.files_dir / filename).unlink()
        self.regenerate(project_of(filename))

    def projects(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for path in sorted(self.files_dir.iterdir()):
            out.setdefault(project_of(path.name), []).append(path)
        return out

    def regenerate(self, *projects: str) -> None:
        """Rewrite the root page and the pages of `projects` (all projects when none given)."""
        with self._lock:
            all_projects = self.projects()
            wanted = [str(canonicalize_name(p)) for p in projects] or list(all_projects)
            for project in wanted:
                self._write_page(project, all_projects.get(project, []))
            links = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(all_projects))
            _write_html(self.simple_dir / "index.html", links)

    def _write_page(self, project: str, files: list[Path]) -> None:
        page_dir = self.simple_dir / project
        if not files:
            shutil.rmtree(page_dir, ignore_errors=True)
            return
        links = []
        for path in files:
            rp = read_metadata(path).get("Requires-Python")
            attr = f' data-requires-python="{html.escape(rp)}"' if rp else ""
            href = f"../../files/{path.name}#sha256={sha256_of(path)}"
            links.append(f'<a href="{href}"{attr}>{path.name}</a>\n')
        page_dir.mkdir(exist_ok=True)
        _write_html(page_dir / "index.html", "".join(links))


def _write_html(path: Path, body: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"<!DOCTYPE html>\n<html><body>\n{body}</body></html>\n", encoding="utf-8")
    tmp.replace(path)


# -- the shared packages ---------------------------------------------------------------------

_CEXT_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}

static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, "Add two integers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pw_cext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_pw_cext(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL) PyModule_AddStringConstant(m, "VERSION", PW_CEXT_VERSION);
    return m;
}
"""


def _cext_files(version: str) -> dict[str, str]:
    return {
        "setup.py": (
            "from setuptools import Extension, setup\n\n"
            "setup(ext_modules=[Extension('pw_cext', ['pw_cext.c'],"
            f" define_macros=[('PW_CEXT_VERSION', '\"{version}\"')])])\n"
        ),
        "pw_cext.c": _CEXT_C,
    }


def _pure_files(module: str, body: str = "") -> dict[str, str]:
    return {f"{module}/__init__.py": f"{body}VALUE = {module!r}\n"}


APP_DEPS = ("pw-cext==1.0", "pw-pure==1.0", "pw-haswheel==1.0")


def populate(index: Upstream) -> None:
    """Add the shared `pw-*` packages and the build dependencies to `index`."""
    index.add_sdist("pw-cext", "1.0", _cext_files("1.0"))
    index.add_sdist("pw-cext", "1.1", _cext_files("1.1"))
    index.add_sdist("pw-pure", "1.0", _pure_files("pw_pure"))
    haswheel = _pure_files("pw_haswheel")
    index.add_sdist("pw-haswheel", "1.0", haswheel)
    index.add_wheel("pw-haswheel", "1.0", haswheel)
    app_body = "import pw_cext\nimport pw_haswheel\nimport pw_pure\n\n"
    index.add_sdist("pw-app", "1.0", _pure_files("pw_app", app_body), deps=APP_DEPS)
    broken = {
        "setup.py": "from setuptools import Extension, setup\n\n"
        "setup(ext_modules=[Extension('pw_broken', ['pw_broken.c'])])\n",
        "pw_broken.c": "#include <Python.h>\n\nint broken( {  /* a syntax error on purpose */\n",
    }
    index.add_sdist("pw-broken", "1.0", broken)
    index.add_sdist(
        "pw-badimport",
        "1.0",
        _pure_files("pw_badimport", "raise ImportError('pw_badimport is broken on purpose')\n"),
    )
    for wheel in build_dependency_wheels():
        index.add_file(wheel)


def build_dependency_wheels() -> list[Path]:
    """setuptools wheels (all virtualenv bundles, so every Python 3.9+ finds one) and, where a
    local copy exists, `wheel` (only setuptools < 70.1 needs it; the bundled ones do not)."""
    import virtualenv

    embed = Path(virtualenv.__file__).parent / "seed" / "wheels" / "embed"
    found = sorted(embed.glob("setuptools-*.whl"))
    if not found:
        raise RuntimeError(f"no setuptools wheel bundled in {embed}")
    wheel_dirs = [embed, Path("/opt/pypi/files"), Path("/opt/wheels")]
    wheels = [w for d in wheel_dirs if d.is_dir() for w in d.glob("wheel-*-py3-none-any.whl")]
    if wheels:
        found.append(max(wheels, key=lambda w: parse_wheel_filename(w.name)[1]))
    return found


def standard_upstream(root: Path) -> Upstream:
    """A started `Upstream` in `root` with the shared packages. Call `.stop()` when done."""
    index = Upstream(root)
    populate(index)
    return index.start()
