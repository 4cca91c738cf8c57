"""The static index: what the pages hold, how updates touch them, and what `check` catches."""

from __future__ import annotations

import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from indexkit import add_wheel, sample_wheelhouse, wheel_bytes

from builder import index
from builder.cli import main
from builder.wheelhouse import Wheelhouse

SCHEMAS = Path(__file__).parent / "schemas"


@pytest.fixture
def wh(tmp_path: Path) -> Wheelhouse:
    return sample_wheelhouse(tmp_path / "wh")


def _schema(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((SCHEMAS / name).read_text())
    return data


def test_tree_per_accelerator(wh: Wheelhouse) -> None:
    cpu = json.loads((wh.root / "cpu/simple/index.json").read_text())
    cu = json.loads((wh.root / "cu128/simple/index.json").read_text())
    assert [p["name"] for p in cpu["projects"]] == ["alpha", "beta"]
    # universal wheels are listed in every accelerator's index, cu128-only ones only there
    assert [p["name"] for p in cu["projects"]] == ["alpha", "beta", "gamma-cuda"]
    html = (wh.root / "cu128/simple/index.html").read_text()
    assert '<a href="gamma-cuda/">gamma-cuda</a>' in html


def test_project_json_matches_schema_and_bytes(wh: Wheelhouse) -> None:
    doc = json.loads((wh.root / "cpu/simple/alpha/index.json").read_text())
    jsonschema.validate(doc, _schema("pep691-project.json"))
    jsonschema.validate(
        json.loads((wh.root / "cpu/simple/index.json").read_text()), _schema("pep691-root.json")
    )
    assert doc["versions"] == ["1.0", "1.1"]
    page_dir = wh.root / "cpu/simple/alpha"
    for f in doc["files"]:
        path = (page_dir / f["url"]).resolve()
        assert path.is_file()
        entry = wh.find(f["filename"])
        assert entry is not None
        assert f["hashes"]["sha256"] == entry.sha256
        assert f["size"] == path.stat().st_size
        meta = path.with_name(path.name + ".metadata").read_bytes()
        with zipfile.ZipFile(path) as zf:
            assert meta == zf.read(f"alpha-{entry.version}.dist-info/METADATA")
        assert f["core-metadata"] == {"sha256": entry.metadata_sha256}
        # PEP 714: JSON carries only core-metadata (pip 22.3-23.1 crash on a dict here).
        assert "dist-info-metadata" not in f


def test_html_escapes_and_percent_encodes(wh: Wheelhouse) -> None:
    html = (wh.root / "cpu/simple/beta/index.html").read_text()
    assert 'href="../../../files/' in html
    assert "beta-2.0%2Blocal.1-py3-none-any.whl#sha256=" in html
    assert 'data-requires-python="&gt;=3.8"' in html
    assert 'data-core-metadata="sha256=' in html and 'data-dist-info-metadata="sha256=' in html
    assert '<meta name="pypi:repository-version" content="1.1">' in html
    alpha = (wh.root / "cpu/simple/alpha/index.html").read_text()
    assert 'data-requires-python="&lt;4,&gt;=3.8"' in alpha


def test_yanked_is_rendered(tmp_path: Path) -> None:
    wh = sample_wheelhouse(tmp_path / "wh")
    entry = wh.entries("beta")[0]
    from dataclasses import replace

    wh._write_catalog("beta", [replace(entry, yanked="broken <build>"), *wh.entries("beta")[1:]])
    index.update_project(wh, "beta")
    html = (wh.root / "cpu/simple/beta/index.html").read_text()
    assert 'data-yanked="broken &lt;build&gt;"' in html
    doc = json.loads((wh.root / "cpu/simple/beta/index.json").read_text())
    assert doc["files"][0]["yanked"] == "broken <build>"
    assert doc["files"][1]["yanked"] is False


def test_only_newest_build_is_listed(tmp_path: Path) -> None:
    wh = Wheelhouse(tmp_path / "wh")
    for build in ("1abc", "2abc", "10abc"):
        add_wheel(wh, tmp_path / "tmp", "delta", "1.0", build=build)
    add_wheel(wh, tmp_path / "tmp", "delta", "1.0", tag="py2.py3-none-any")
    files = [
        f["filename"]
        for f in json.loads((wh.root / "cpu/simple/delta/index.json").read_text())["files"]
    ]
    assert files == ["delta-1.0-10abc-py3-none-any.whl", "delta-1.0-py2.py3-none-any.whl"]


def test_update_touches_only_that_project(wh: Wheelhouse, tmp_path: Path) -> None:
    other = wh.root / "cpu/simple/alpha/index.html"
    before = other.stat().st_mtime_ns
    add_wheel(wh, tmp_path / "tmp", "beta", "3.0")
    assert other.stat().st_mtime_ns == before
    assert "beta-3.0-py3-none-any.whl" in (wh.root / "cpu/simple/beta/index.html").read_text()
    leftovers = [p for p in wh.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert index.check(wh).problems == []


def test_project_leaves_an_accelerator(wh: Wheelhouse) -> None:
    from dataclasses import replace

    wh._write_catalog("beta", [replace(e, accels=("cu128",)) for e in wh.entries("beta")])
    index.update_project(wh, "beta")
    assert not (wh.root / "cpu/simple/beta").exists()
    cpu = json.loads((wh.root / "cpu/simple/index.json").read_text())
    assert [p["name"] for p in cpu["projects"]] == ["alpha"]
    assert (wh.root / "cu128/simple/beta/index.html").is_file()
    assert index.check(wh).problems == []


def test_rebuild_equals_incremental(wh: Wheelhouse, tmp_path: Path) -> None:
    def snapshot() -> dict[str, bytes]:
        return {
            str(p.relative_to(wh.root)): p.read_bytes()
            for p in sorted(wh.root.glob("*/simple/**/index.*"))
        }

    incremental = snapshot()
    (wh.root / "cpu/simple/alpha/index.html").write_text("stale")
    (wh.root / "cpu/simple/zombie").mkdir()
    (wh.root / "cpu/simple/zombie/index.html").write_text("gone")
    index.rebuild(wh)
    assert snapshot() == incremental
    assert (wh.root / "status.html").is_file()


def test_check_catches_corrupted_wheel(wh: Wheelhouse) -> None:
    wheel = next(wh.files_dir.glob("*/alpha-1.0-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[40] ^= 0xFF
    wheel.write_bytes(bytes(data))
    problems = index.check(wh).problems
    assert any("alpha-1.0" in p and "sha256" in p for p in problems), problems


def test_check_catches_missing_metadata(wh: Wheelhouse) -> None:
    meta = next(wh.files_dir.glob("*/beta-2.0-py3-none-any.whl.metadata"))
    meta.unlink()
    problems = index.check(wh).problems
    assert any("beta-2.0-py3-none-any.whl.metadata is missing" in p for p in problems), problems


def test_check_catches_stale_page_and_bad_link(wh: Wheelhouse) -> None:
    page = wh.root / "cpu/simple/alpha/index.html"
    page.write_text(page.read_text().replace("files/", "files/x"))
    problems = index.check(wh).problems
    assert any("does not resolve" in p for p in problems)
    assert any("alpha/index.html does not list" in p for p in problems)


def test_check_cli_exit_codes(wh: Wheelhouse) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["index", "check", "--wheelhouse", str(wh.root)])
    assert ok.exit_code == 0, ok.output
    os.unlink(next(wh.files_dir.glob("*/alpha-1.1-*.whl")))
    bad = runner.invoke(main, ["index", "check", "--wheelhouse", str(wh.root), "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and any("alpha-1.1" in p for p in report["problems"])
    rebuilt = runner.invoke(main, ["index", "rebuild", "--wheelhouse", str(wh.root)])
    assert rebuilt.exit_code == 0, rebuilt.output


def test_wheel_helper_is_valid() -> None:
    name, data = wheel_bytes("pkg-x", "1.0", build="1b", payload=1000)
    assert name == "pkg_x-1.0-1b-py3-none-any.whl"
    assert len(data) > 1000


def test_concurrent_updates_keep_the_root_complete(tmp_path: Path) -> None:
    wh = Wheelhouse(tmp_path / "wh")
    wh.ensure()
    names = [f"p{i:02d}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: add_wheel(wh, tmp_path / "tmp" / n, n, "1.0"), names))
    root = json.loads((wh.root / "cpu/simple/index.json").read_text())
    assert [p["name"] for p in root["projects"]] == names
    assert index.check(wh).problems == []


def test_check_says_what_it_checked(tmp_path: Path) -> None:
    """`index OK` names the pages, files and hashes behind it, never a bare OK."""
    wh = sample_wheelhouse(tmp_path / "wh")
    result = index.check(wh)
    files = sum(1 for _ in wh.all_entries())
    # Two accelerators: project pages (HTML + JSON) and the two root pages of each.
    listed = {a: index.listed_projects(wh, a) for a in ("cpu", "cu128")}
    assert result.problems == []
    assert result.files == files == 5
    assert result.pages == sum(2 * len(p) + 2 for p in listed.values())
    assert result.hashes >= 2 * files  # each wheel and its .metadata file
    out = CliRunner().invoke(main, ["index", "check", "--wheelhouse", str(wh.root)])
    assert out.exit_code == 0
    assert out.output.strip() == f"index OK: {wh.root}: {result.summary()}"
