"""uv's resolver against pip's on a real closure of 100+ projects, for two targets.

The closure's metadata was captured once from PyPI (`data/real_closure/capture.py`: real
project names, versions, `Requires-Dist` with their markers and extras, `Requires-Python`,
wheel names). It is served here as a local PEP 503 index of placeholder files with PEP 658
`.metadata` files beside them, so the suite stays offline. uv reads the `.metadata` files
only; the pip of these interpreters (23.2) downloads the wheels of a dry run too, so each
stand-in is a minimal valid wheel holding that same metadata and nothing else. Both resolvers
run the real way, through `prewheel plan` (in the sandbox, through the index proxy), every
target at once.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel
from conftest import to_toml
from needs import missing
from packaging.utils import canonicalize_name
from upstream import static_server

from builder.targets import interpreters

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "data" / "real_closure" / "closure.json"
PYTHONS = ("3.11", "3.12")
_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def _metadata(name: str, version: str, info: dict[str, Any]) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if info["requires_python"]:
        lines.append(f"Requires-Python: {info['requires_python']}")
    extras = sorted({m for r in info["requires_dist"] for m in _EXTRA.findall(r)})
    lines += [f"Provides-Extra: {e}" for e in extras]
    lines += [f"Requires-Dist: {r}" for r in info["requires_dist"]]
    return ("\n".join(lines) + "\n\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stand_in(wheel: str, meta: bytes) -> bytes:
    """A valid wheel of `meta` alone: METADATA, WHEEL and RECORD, fixed timestamps."""
    dist, version = wheel.split("-")[:2]
    info = f"{dist}-{version}.dist-info"
    members = {
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: capture\nRoot-Is-Purelib: true\n",
    }
    record = "".join(f"{n},,\n" for n in members) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, data in [*members.items(), (f"{info}/RECORD", record.encode())]:
            zf.writestr(zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def write_index(root: Path, projects: dict[str, dict[str, Any]]) -> None:
    """PEP 503 pages with `data-core-metadata` (PEP 714) and `data-dist-info-metadata` (the
    older spelling, for older pips), stand-in wheels and their `.metadata`."""
    files = root / "files"
    files.mkdir(parents=True)
    for name, versions in projects.items():
        links = []
        for version, info in versions.items():
            meta = _metadata(name, version, info)
            body = _stand_in(info["wheels"][0], meta)
            digest = _sha256(body)
            rp = info["requires_python"]
            attrs = f' data-requires-python="{html.escape(rp)}"' if rp else ""
            attrs += f' data-core-metadata="sha256={_sha256(meta)}"'
            attrs += f' data-dist-info-metadata="sha256={_sha256(meta)}"'
            for wheel in info["wheels"]:
                (files / wheel).write_bytes(body)
                (files / f"{wheel}.metadata").write_bytes(meta)
                href = f"../../files/{wheel}#sha256={digest}"
                links.append(f'<a href="{href}"{attrs}>{wheel}</a>')
        page = root / "simple" / canonicalize_name(name)
        page.mkdir(parents=True)
        (page / "index.html").write_text(
            "<!DOCTYPE html>\n<html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        )


@pytest.fixture(scope="module")
def real_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    data = json.loads(FIXTURE.read_text())
    root = tmp_path_factory.mktemp("real-index")
    write_index(root, data["projects"])
    with static_server(root) as base:
        yield f"{base}/simple/", data


Chosen = dict[str, dict[str, tuple[str, str, str | None, str | None, str | None]]]


def _plan(root: Path, index_url: str, top: list[str], resolver: str) -> Chosen:
    """Per target, the closure `prewheel plan` resolved with `resolver`: each member's
    version, and what the plan takes of it (the action, the file, its URL and sha256)."""
    config = root / f"{resolver}.toml"
    config.write_text(
        to_toml(
            {
                "index": {"upstream": index_url, "resolver": resolver},
                "targets": {"python": list(PYTHONS), "accel": ["cpu"], "policy": ["auto"]},
            }
        )
    )
    reqs = root / "requirements.txt"
    reqs.write_text("".join(f"{r}\n" for r in top))
    proc = prewheel(
        "plan", "-r", reqs, "-c", config, "--wheelhouse", root / "wh", "--json", "--allow-unpinned"
    )
    assert proc.returncode == 0, proc.stderr
    out: Chosen = {}
    for item in json.loads(proc.stdout)["items"]:
        out.setdefault(item["target"], {})[item["name"]] = (
            item["version"],
            item["action"],
            item["file"],
            item["url"],
            item["sha256"],
        )
    return out


def test_uv_and_pip_resolve_a_real_closure_to_the_same_pins(
    real_index: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    for py in PYTHONS:
        if interpreters.find_interpreter(py)[0] is None:
            missing(f"CPython {py} is not installed (pyenv install {py})")
    index_url, data = real_index
    chosen_by_pip = _plan(tmp_path, index_url, data["top"], "pip")
    chosen_by_uv = _plan(tmp_path, index_url, data["top"], "uv")
    by_pip = {t: {n: c[0] for n, c in pins.items()} for t, pins in chosen_by_pip.items()}
    by_uv = {t: {n: c[0] for n, c in pins.items()} for t, pins in chosen_by_uv.items()}
    assert len(by_pip) == len(PYTHONS), by_pip.keys()
    assert by_uv.keys() == by_pip.keys()
    for target, pins in by_pip.items():
        assert len(pins) >= 100, f"{target}: only {len(pins)} pins"
        diff = {n: (v, by_uv[target].get(n)) for n, v in pins.items() if by_uv[target].get(n) != v}
        diff |= {n: (None, v) for n, v in by_uv[target].items() if n not in pins}
        assert not diff, f"{target}: pip and uv differ (pip, uv): {diff}"
    # And the answer is PyPI's: pip's resolution against PyPI when the metadata was captured.
    for target, pins in by_pip.items():
        version = f"/{target[2]}.{target[3:].split('-')[0]}."  # cp311-... -> "/3.11."
        (captured,) = [r for path, r in data["resolved_by_pip"].items() if version in path]
        assert pins == captured, target
    # uv's answer names the files itself (its pylock), pip's path reads every member's page:
    # the plan takes the same file of every member either way.
    for target, chosen in chosen_by_pip.items():
        diff = {
            n: (c, chosen_by_uv[target][n])
            for n, c in chosen.items()
            if chosen_by_uv[target][n] != c
        }
        assert not diff, f"{target}: the plan takes other files (pip, uv): {diff}"
    # The markers matter: the two Pythons' closures are not the same set.
    first, second = by_pip.values()
    assert first != second
