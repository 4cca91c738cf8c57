"""Build environments shared by the builds of one run (`stages.sharedenv`): under bubblewrap
the builds whose environments would hold the same build requirements use one, made once and
shown read-only at each build's own `env`, compiled once a second build takes it; a backend
that asks for more gets one of its own; a failure to make one is every build's own; without
bubblewrap each build makes its own."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import needs
import pytest
from clitools import prewheel
from conftest import WriteConfig
from upstream import Upstream

# Writes what its build saw of its environment into the wheel: sys.prefix, and whether it
# could create a file there.
SEEING = """\
import os, sys
from setuptools import setup
if "bdist_wheel" in sys.argv:
    try:
        open(os.path.join(sys.prefix, "pwned"), "w").close()
        wrote = True
    except OSError:
        wrote = False
    os.makedirs("{module}", exist_ok=True)
    with open("{module}/__init__.py", "w") as fh:
        fh.write(f"PREFIX = {{sys.prefix!r}}\\nWROTE = {{wrote!r}}\\n")
setup(packages=["{module}"]{extra})
"""


def _seeing(name: str, extra: str = "") -> dict[str, str]:
    module = name.replace("-", "_")
    return {"setup.py": SEEING.format(module=module, extra=extra), f"{module}/__init__.py": ""}


def _build(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path, names: list[str], **build: str
) -> tuple[Path, dict[str, str]]:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("".join(f"{n}==1.0\n" for n in names))
    wh = tmp_path / "wh"
    config = write_config(tmp_path, build={"jobs": 2, **build})
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    results = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    return wh, results


def _log(wh: Path, name: str) -> str:
    (log,) = wh.glob(f"logs/{name}-1.0-*.log")
    return log.read_text()


def _made_here(log: str) -> list[str]:
    """The build environments a log's `uv venv` made (the shared ones, under envs/)."""
    return re.findall(r"^\$ \S*uv venv .* (\S+/envs/\w+)$", log, flags=re.MULTILINE)


def test_builds_with_the_same_requirements_share_one_environment_shown_read_only(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """Three sdists needing setuptools: one environment made, by one build; the other two
    logs say whose it is. Each build saw it at its own fixed path, and could not write in
    it. A fourth whose setup.py asks for more (`setup_requires`) gets an environment of its
    own, with setuptools and that."""
    needs.bubblewrap()
    names = ["pw-see-a", "pw-see-b", "pw-see-c"]
    for n in names:
        upstream.add_sdist(n, "1.0", _seeing(n))
    upstream.add_sdist(
        "pw-see-more", "1.0", _seeing("pw-see-more", ", setup_requires=['pw-haswheel==1.0']")
    )
    wh, results = _build(upstream, write_config, tmp_path, [*names, "pw-see-more"])
    assert results == dict.fromkeys([*names, "pw-see-more"], "built"), results

    logs = {n: _log(wh, n) for n in names}
    more = _log(wh, "pw-see-more")
    made, own = [env for log in logs.values() for env in _made_here(log)], _made_here(more)
    # The setuptools environment is made once, by whichever of the four builds needs it
    # first; pw-see-more's own (with pw-haswheel too) is the last its log makes.
    assert len(made) + len(own) == 2 and own, (made, own)
    shared = [n for n, log in logs.items() if "build environment shared, made by" in log]
    assert len(shared) == len(names) - len(made), logs
    for n in names:
        module = n.replace("-", "_")
        (wheel,) = wh.glob(f"files/*/{module}-1.0-*.whl")
        text = _member(wheel, f"{module}/__init__.py")
        assert f"/tmp/prewheel-build/{n}-1.0-" in text and "/env'" in text, text
        assert "WROTE = False" in text, text

    assert own[-1] not in made
    assert re.search(r"uv pip install .*pw-haswheel==1\.0", more), more
    (wheel,) = wh.glob("files/*/pw_see_more-1.0-*.whl")
    assert "WROTE = False" in _member(wheel, "pw_see_more/__init__.py")


def test_a_failure_to_make_the_environment_is_each_builds_own(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """Build requirements no index has: both builds fail, each log holds the failed install
    (a build that waited on another's failure makes the environment itself)."""
    needs.bubblewrap()
    pyproject = (
        '[build-system]\nrequires = ["setuptools>=61", "pw-nowhere>=1"]\n'
        'build-backend = "setuptools.build_meta"\n\n[project]\nname = "{n}"\nversion = "1.0"\n'
    )
    names = ["pw-nodeps-a", "pw-nodeps-b"]
    for n in names:
        upstream.add_sdist(n, "1.0", {"pyproject.toml": pyproject.format(n=n), "m.py": ""})
    wh, results = _build(upstream, write_config, tmp_path, names)
    assert results == dict.fromkeys(names, "failed"), results
    for n in names:
        log = _log(wh, n)
        assert "pw-nowhere" in log and "uv pip install" in log, log
        assert "build environment shared" not in log


@pytest.mark.parametrize("sandbox", ["netns"])
def test_without_bubblewrap_each_build_makes_its_own(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path, sandbox: str
) -> None:
    """Where package code could write into its environment, none is shared."""
    needs.network_namespace()
    names = ["pw-own-a", "pw-own-b"]
    for n in names:
        upstream.add_sdist(n, "1.0", _seeing(n))
    wh, results = _build(upstream, write_config, tmp_path, names, sandbox=sandbox)
    assert results == dict.fromkeys(names, "built"), results
    for n in names:
        log = _log(wh, n)
        assert "build environment shared" not in log
        assert re.search(r"^\$ \S*uv venv .* \S+/env$", log, flags=re.MULTILINE), log


# Says in its build's log whether setuptools' bytecode was there when the backend was asked
# what the build needs (`egg_info`, not `bdist_wheel`).
ASKING = """\
import importlib.util, os, sys
import setuptools
if "bdist_wheel" not in sys.argv:
    cached = importlib.util.cache_from_source(setuptools.__file__)
    print(f"QUESTION: bytecode there: {os.path.exists(cached)}")
setuptools.setup(py_modules=["m"])
"""


def test_an_environment_a_second_build_takes_has_its_bytecode_compiled_for_the_question(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """Two builds share setuptools' environment: the one that takes it second finds it
    compiled when its backend is asked (the question waits for the compile the second build
    began), nothing of it written into the shared wheel cache the environment links to.
    A build alone in its environment compiles nothing (its question compiles in memory)."""
    needs.bubblewrap()
    names = ["pw-pyc-a", "pw-pyc-b"]
    for n in [*names, "pw-pyc-alone"]:
        upstream.add_sdist(n, "1.0", {"setup.py": ASKING, "m.py": ""})
    wh, results = _build(upstream, write_config, tmp_path, names)
    assert results == dict.fromkeys(names, "built"), results
    second = [log for log in map(lambda n: _log(wh, n), names) if "environment shared" in log]
    assert len(second) == 1, second
    assert "QUESTION: bytecode there: True" in second[0], second[0]
    assert not list((wh / "cache" / "uv").rglob("*.pyc"))

    alone = tmp_path / "alone"
    alone.mkdir()
    wh, results = _build(upstream, write_config, alone, ["pw-pyc-alone"])
    assert results == {"pw-pyc-alone": "built"}, results
    assert "QUESTION: bytecode there: False" in _log(wh, "pw-pyc-alone")


def _member(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name).decode()
