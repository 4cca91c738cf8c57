"""The build cache: one changed input rebuilds exactly the package it belongs to, nothing else.

One real build of a small set is shared by the module; each test copies its wheelhouse,
changes one input of the cache key, builds again and looks at what was rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel, snapshot
from needs import missing
from packaging.utils import parse_wheel_filename
from upstream import Upstream

from builder.config import default_config, load_config, parse_config
from builder.stages.keys import build_tag, compute
from builder.targets import Interpreter, resolve_targets

pytestmark = pytest.mark.slow

REQS = "pw-cext==1.0\npw-pure==1.0\npw-haswheel==1.0\n"


def _build(root: Path, config: str, wh: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (root / "requirements.txt").write_text(REQS)
    (root / "prewheel.toml").write_text(config)
    return prewheel(
        "build",
        "-r",
        root / "requirements.txt",
        "-c",
        root / "prewheel.toml",
        "--wheelhouse",
        wh,
        "--json",
        *args,
    )


def _status(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}


def _base_config(url: str) -> str:
    return f'[index]\nupstream = "{url}"\n'


@pytest.fixture(scope="module")
def baseline(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheelhouse with pw-cext (C), pw-pure (built, pure) and pw-haswheel (downloaded)."""
    root = tmp_path_factory.mktemp("baseline")
    proc = _build(root, _base_config(upstream.url), root / "wh")
    assert _status(proc) == {"pw-cext": "built", "pw-pure": "built", "pw-haswheel": "downloaded"}
    return root / "wh"


@pytest.fixture
def wheelhouse(baseline: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "wh"
    shutil.copytree(baseline, dest)
    return dest


def _cext_wheels(wh: Path) -> list[str]:
    catalog = json.loads((wh / "catalog" / "pw-cext.json").read_text())
    return sorted(f["filename"] for f in catalog["files"])


def test_nothing_changed_rebuilds_nothing(
    upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    before = snapshot(wheelhouse)
    time.sleep(0.2)  # older than the no-op stamp's racy margin (see test_noop.py)
    proc = _build(tmp_path, _base_config(upstream.url), wheelhouse)
    assert set(_status(proc).values()) == {"cached"}
    # No build, repair, verify or build-dependency install: no log, record or file changed.
    # The one new file is the no-op stamp, which the next run is answered from.
    after = snapshot(wheelhouse)
    (stamp,) = set(after) - set(before)
    assert stamp.startswith("cache/noop/") and {k: after[k] for k in before} == before
    proc = _build(tmp_path, _base_config(upstream.url), wheelhouse)
    assert set(_status(proc).values()) == {"cached"} and json.loads(proc.stdout)["fast_path"]
    assert snapshot(wheelhouse) == after


def test_changed_env_var_rebuilds_that_package_under_a_new_name(
    upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    old = _cext_wheels(wheelhouse)
    config = _base_config(upstream.url) + '[packages.pw-cext]\nenv = { PW_EXTRA = "1" }\n'
    proc = _build(tmp_path, config, wheelhouse)
    assert _status(proc) == {"pw-cext": "built", "pw-pure": "cached", "pw-haswheel": "cached"}

    # Both builds of pw-cext 1.0 coexist, with build tags derived from their keys ...
    both = _cext_wheels(wheelhouse)
    assert len(both) == 2 and set(old) < set(both)
    new = next(w for w in both if w not in old)
    tags = {w: parse_wheel_filename(w)[2] for w in both}
    assert tags[new] != tags[old[0]]
    records = [json.loads(p.read_text()) for p in (wheelhouse / "builds").glob("*.json")]
    rec = next(r for r in records if r.get("wheel") == new)
    assert rec["inputs"]["env"] == {"PW_EXTRA": "1"}
    assert tags[new] == (1, f"_{rec['cache_key'][:12]}")

    # ... and the index serves the one published last.
    simple = wheelhouse / "cpu" / "simple" / "pw-cext"
    page = (simple / "index.html").read_text()
    assert new in page and old[0] not in page
    listed = [f["filename"] for f in json.loads((simple / "index.json").read_text())["files"]]
    assert listed == [new]


def test_going_back_relists_the_earlier_build_without_building(
    upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    """Settings A, then B, then A again: A's wheel is reused and listed again, under its own
    name (the catalog chooses it; no file is rewritten)."""
    (first,) = _cext_wheels(wheelhouse)
    changed = _base_config(upstream.url) + '[packages.pw-cext]\nenv = { PW_EXTRA = "2" }\n'
    assert _status(_build(tmp_path, changed, wheelhouse))["pw-cext"] == "built"
    logs = sorted(p.name for p in (wheelhouse / "logs").iterdir())

    assert _served(wheelhouse) != first
    stored = {p.name: p.read_bytes() for p in (wheelhouse / "files").glob("*/pw_cext-*.whl")}

    back = _build(tmp_path, _base_config(upstream.url), wheelhouse)
    assert set(_status(back).values()) == {"cached"}
    assert sorted(p.name for p in (wheelhouse / "logs").iterdir()) == logs, "nothing was built"
    assert _served(wheelhouse) == first
    # The next run finds it listed: nothing more to do; no file was added or rewritten.
    assert set(_status(_build(tmp_path, _base_config(upstream.url), wheelhouse)).values()) == {
        "cached"
    }
    assert len(_cext_wheels(wheelhouse)) == 2
    assert _served(wheelhouse) == first
    assert {p.name: p.read_bytes() for p in (wheelhouse / "files").glob("*/pw_cext-*.whl")} == (
        stored
    )
    assert prewheel("index", "check", "--wheelhouse", wheelhouse).returncode == 0


def _served(wh: Path) -> str:
    listed = json.loads((wh / "cpu" / "simple" / "pw-cext" / "index.json").read_text())
    (served,) = [f["filename"] for f in listed["files"]]
    return str(served)


def test_changed_sdist_rebuilds_that_package(
    fresh_upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    """Same name, same version, other bytes (another index): only pw-cext is rebuilt."""
    from upstream import _cext_files

    files = _cext_files("1.0")
    files["pw_cext.c"] += "/* changed */\n"
    fresh_upstream.add_sdist("pw-cext", "1.0", files)
    proc = _build(tmp_path, _base_config(fresh_upstream.url), wheelhouse)
    assert _status(proc) == {"pw-cext": "built", "pw-pure": "cached", "pw-haswheel": "cached"}
    assert len(_cext_wheels(wheelhouse)) == 2


def test_a_patch_in_config_rebuilds_that_package_with_the_change(
    upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    patch = tmp_path / "pw-pure.diff"
    patch.write_text(
        "--- a/pw_pure/__init__.py\n+++ b/pw_pure/__init__.py\n"
        "@@ -1 +1,2 @@\n VALUE = 'pw_pure'\n+PATCHED = True\n"
    )
    config = _base_config(upstream.url) + '[packages.pw-pure]\npatches = ["pw-pure.diff"]\n'
    proc = _build(tmp_path, config, wheelhouse)
    assert _status(proc) == {"pw-cext": "cached", "pw-pure": "built", "pw-haswheel": "cached"}
    wheel = next(r["wheel"] for r in json.loads(proc.stdout)["results"] if r["name"] == "pw-pure")
    (path,) = (wheelhouse / "files").rglob(wheel)
    with zipfile.ZipFile(path) as zf:
        assert "PATCHED = True" in zf.read("pw_pure/__init__.py").decode()


def test_changed_repair_options_rebuild_only_what_is_repaired(
    upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    """`strip` (on by default) changes auditwheel's options and the compiler flags: the C
    extension is rebuilt, the pure wheel is not (neither touches it, so its source key still
    finds it)."""
    config = _base_config(upstream.url) + "[build]\nstrip = false\n"
    proc = _build(tmp_path, config, wheelhouse)
    assert _status(proc) == {"pw-cext": "built", "pw-pure": "cached", "pw-haswheel": "cached"}


def test_changed_interpreter_rebuilds_only_the_extension(
    upstream: Upstream, wheelhouse: Path, tmp_path: Path
) -> None:
    target = resolve_targets(parse_config({"targets": {"python": ["3.12"]}}, source="t"))[0]
    if target.missing:
        missing(f"needs CPython 3.12: {target.missing}")
    config = _base_config(upstream.url) + '[targets]\npython = ["3.12"]\n'
    proc = _build(tmp_path, config, wheelhouse)
    assert _status(proc) == {"pw-cext": "built", "pw-pure": "cached", "pw-haswheel": "cached"}
    assert any("-cp312-cp312-" in w for w in _cext_wheels(wheelhouse))


# -- the key itself, without building -------------------------------------------------------


def _key(**changes: Any) -> str:
    config = changes.pop("config", default_config())
    target = changes.pop("target", resolve_targets(default_config())[0])
    args = {"name": "pw-cext", "version": "1.0", "sdist_sha256": "a" * 64} | changes
    return compute(target=target, config=config, **args).key


def test_key_is_stable_and_names_each_input(tmp_path: Path) -> None:
    target = resolve_targets(default_config())[0]
    assert target.interpreter is not None
    other_python = dataclasses.replace(
        target,
        interpreter=dataclasses.replace(target.interpreter, version=(3, 11, 99)),
    )
    base = _key()
    assert _key() == base
    variants = {
        "sdist": _key(sdist_sha256="b" * 64),
        "env": _key(config=_cfg({"packages": {"pw-cext": {"env": {"X": "1"}}}})),
        "config_settings": _key(
            config=_cfg({"packages": {"pw-cext": {"config_settings": {"--build-option": "x"}}}})
        ),
        "build_requires": _key(
            config=_cfg({"packages": {"pw-cext": {"build_requires": ["cython==3.0"]}}})
        ),
        "strip": _key(config=_cfg({"build": {"strip": False}})),
        "werror": _key(config=_cfg({"packages": {"pw-cext": {"werror_implicit": False}}})),
        "interpreter": _key(target=other_python),
        "patches": _key(config=_patched(tmp_path)),
        "policy": _key(
            target=dataclasses.replace(
                target, spec=dataclasses.replace(target.spec, policy="manylinux_2_28_x86_64")
            )
        ),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)
    # Per package or for all, the same settings give the same key.
    assert _key(config=_cfg({"packages": {"pw-cext": {"strip": False}}})) == variants["strip"]
    # Another package's settings are not this package's input.
    assert _key(config=_cfg({"packages": {"pw-pure": {"env": {"X": "1"}}}})) == base


def test_key_includes_build_constraints_file(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("setuptools==70.0\n")
    config = _cfg({"build": {"constraints": str(constraints)}})
    first = _key(config=config)
    constraints.write_text("setuptools==71.0\n")
    assert _key(config=config) != first


def test_build_tag_is_derived_from_the_key_only() -> None:
    target = resolve_targets(default_config())[0]
    key = compute(
        name="x", version="1", sdist_sha256="c" * 64, target=target, config=default_config()
    )
    assert build_tag(key) == f"1_{key.key[:12]}"
    assert isinstance(target.interpreter, Interpreter)


def _patched(tmp_path: Path) -> Any:
    (tmp_path / "fix.diff").write_text("--- a/x\n+++ b/x\n")
    config = tmp_path / "prewheel.toml"
    config.write_text('[packages.pw-cext]\npatches = ["fix.diff"]\n')
    return load_config(config)


def _cfg(raw: dict[str, Any]) -> Any:
    return parse_config(raw, source="test")
