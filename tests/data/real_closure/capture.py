"""Capture a real closure's dependency metadata from PyPI into `closure.json` (run once, by
hand, with the network; the tests only read the result).

    python tests/data/real_closure/capture.py --python ~/.pyenv/versions/3.11.7/bin/python \
        --python ~/.pyenv/versions/3.12.1/bin/python

1. pip (`--isolated`, PyPI only) resolves `TOP` for each interpreter
   (`pip install --dry-run --ignore-installed --report`): the union of both closures is the
   set of projects.
2. For each project, the versions kept are the ones resolved plus up to `--older` earlier
   final releases, each with its real `Requires-Dist` (markers and extras as published),
   `Requires-Python` (from the PEP 658 `.metadata` of its first such wheel), and the names of
   its wheels that a CPython 3.11 / 3.12 on x86_64 Linux could install (from the project's
   PEP 691 JSON page on PyPI). An older version that names a project outside
   the set is left out, so the fixture is closed.

The test serves this as a PEP 503 index of placeholder files, each with its PEP 658
`.metadata` beside it, so neither resolver downloads a file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).parent
# Real applications' top-level pins: markers (python_version, sys_platform, extras) and
# extras of their own.
TOP = [
    "jupyterlab==4.2.5",
    "sphinx==7.4.7",
    "fastapi[standard]==0.115.0",
    "celery[redis]==5.4.0",
    "boto3==1.35.0",
    "requests[socks]==2.32.3",
    "black==24.8.0",
    "pytest==8.3.3",
    "pandas==2.2.3",
    "aiohttp==3.10.5",
]


def _ok_wheel(filename: str) -> bool:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except Exception:
        return False
    for t in tags:
        interp_ok = t.interpreter in ("py3", "py311", "py312", "cp311", "cp312", "cp32") or (
            t.interpreter.startswith("cp3") and t.abi == "abi3"
        )
        plat_ok = t.platform == "any" or (
            t.platform.endswith("x86_64") and t.platform.startswith(("manylinux", "linux"))
        )
        if interp_ok and plat_ok:
            return True
    return False


def _ssl() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


def _metadata(url: str) -> Message:
    """A wheel's core metadata (PEP 658: `<file URL>.metadata`)."""
    with urllib.request.urlopen(url, timeout=60, context=_ssl()) as resp:
        return HeaderParser().parsestr(resp.read().decode("utf-8", "replace"))


def _wheel_metadata(url: str) -> Message:
    with urllib.request.urlopen(url, timeout=300, context=_ssl()) as resp:
        data = resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return HeaderParser().parsestr(zf.read(name).decode("utf-8", "replace"))


def _resolve(python: str) -> dict[str, str]:
    kept = Path(tempfile.gettempdir()) / f"capture-{python.replace('/', '_')}.json"
    if kept.is_file():  # a rerun of the capture reuses pip's answer
        return json.loads(kept.read_text())  # type: ignore[no-any-return]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        cert = ["--cert", os.environ["PIP_CERT"]] if os.environ.get("PIP_CERT") else []
        subprocess.run(
            [python, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--only-binary=:all:", "--index-url", "https://pypi.org/simple/",
             *cert, "--report", str(report), *TOP],
            check=True,
        )  # fmt: skip
        data = json.loads(report.read_text())
    out = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]
    }
    kept.write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", action="append", required=True)
    ap.add_argument("--older", type=int, default=2)
    args = ap.parse_args()
    resolved = [_resolve(p) for p in args.python]
    names = sorted(set().union(*resolved))
    wanted = {n: {r[n] for r in resolved if n in r} for n in names}

    def project(name: str) -> tuple[str, dict[str, object]]:
        req = urllib.request.Request(
            f"https://pypi.org/simple/{name}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(req, timeout=60, context=_ssl()) as resp:
            page, base = json.load(resp), resp.geturl()
        releases: dict[Version, list[dict[str, object]]] = {}
        for f in page["files"]:
            fn = str(f["filename"])
            try:
                v = parse_wheel_filename(fn)[1] if fn.endswith(".whl") else None
            except ValueError:
                continue
            if v is not None and not f.get("yanked"):
                releases.setdefault(v, []).append(f)
        finals = sorted(v for v in releases if not v.is_prerelease)
        keep = {Version(v) for v in wanted[name]}
        newest = min(keep)
        older = [v for v in finals if v < newest][-args.older :]
        out: dict[str, object] = {}
        for v in sorted({*keep, *older}):
            files = releases.get(v, [])
            wheels = sorted(str(f["filename"]) for f in files if _ok_wheel(str(f["filename"])))
            if not wheels:
                continue
            first = next(f for f in files if f["filename"] == wheels[0])
            url = urllib.parse.urljoin(base, str(first["url"]))
            try:
                meta = _metadata(f"{url}.metadata")
            except urllib.error.HTTPError:  # no PEP 658 file: the wheel's own METADATA
                meta = _wheel_metadata(url)
            out[str(v)] = {
                "requires_python": meta.get("Requires-Python") or None,
                "requires_dist": meta.get_all("Requires-Dist") or [],
                "wheels": wheels,
            }
        return name, out

    with ThreadPoolExecutor(8) as pool:
        projects = dict(pool.map(project, names))
    # Closed: a version naming a project outside the set is left out (never the resolved).
    for name, versions in projects.items():
        for v in list(versions):
            deps = [canonicalize_name(Requirement(r).name) for r in versions[v]["requires_dist"]]
            if Version(v) not in {Version(w) for w in wanted[name]} and any(
                d not in projects for d in deps
            ):
                del versions[v]
    out = {
        "captured_from": "https://pypi.org/ (JSON API), see capture.py",
        "top": TOP,
        "resolved_by_pip": dict(zip(args.python, resolved, strict=True)),
        "projects": projects,
    }
    (HERE / "closure.json").write_text(json.dumps(out, sort_keys=True, separators=(",", ":")))


if __name__ == "__main__":
    main()
