"""The wheel is built while its backend is asked what more the build needs
(`get_requires_for_build_wheel`), not after (`build._Beside`): the question in a copy of the
tree, the build in the tree at its usual place. Where the backend asks for more, the wheel
that counts is the one built again with it installed; what the environment already holds
is not more."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from clitools import prewheel
from conftest import WriteConfig
from upstream import Upstream

from builder.stages.build import _held

# The question (`egg_info`, setuptools' get_requires) waits for the build (`bdist_wheel`)
# to have started in the other tree, and says whether it saw it; one after the other, it
# waits in vain. Each tree is `<work>/<tree>/<top>`.
WAITS = """\
import os, sys, time
from setuptools import setup
here = os.path.dirname(os.path.abspath(__file__))
top, tree, work = os.path.basename(here), os.path.basename(os.path.dirname(here)), \\
    os.path.dirname(os.path.dirname(here))
if "bdist_wheel" in sys.argv:
    open(os.path.join(here, "building"), "w").close()
    with open("pw_beside/__init__.py", "w") as fh:
        fh.write(f"TREE = {tree!r}\\n")
elif "egg_info" in sys.argv:
    other = os.path.join(work, "src", top, "building")
    end = time.monotonic() + 30
    while not os.path.exists(other) and time.monotonic() < end:
        time.sleep(0.05)
    print("question in", tree, "saw the build:", os.path.exists(other), flush=True)
setup(packages=["pw_beside"])
"""

# Records in the wheel whether its setup_requires was importable when it was built.
ASKS = """\
import sys
from setuptools import setup
if "bdist_wheel" in sys.argv:
    try:
        import pw_haswheel
        have = True
    except ImportError:
        have = False
    with open("pw_asks/__init__.py", "w") as fh:
        fh.write(f"HAD_IT = {have!r}\\n")
setup(packages=["pw_asks"], setup_requires=["pw-haswheel==1.0"])
"""


# Asks again (`setup_requires`, no version) for what `[build-system] requires` installed.
HELD = """\
import sys
from setuptools import setup
if "bdist_wheel" in sys.argv:
    import pw_haswheel
    with open("pw_held/__init__.py", "w") as fh:
        fh.write("HAD_IT = True\\n")
setup(name="pw-held", version="1.0", packages=["pw_held"], setup_requires=["pw-haswheel"])
"""
HELD_PYPROJECT = """\
[build-system]
requires = ["setuptools>=40.8", "pw-haswheel>=1.0"]
build-backend = "setuptools.build_meta"
"""

_ERRORS: dict[str, list[tuple[str | None, str | None]]] = {}


def _build(write_config: WriteConfig, tmp_path: Path, name: str) -> tuple[str, str, dict[str, str]]:
    """Build `name==1.0`: its log, the wheel's `__init__.py`, its result."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"{name}==1.0\n")
    wh = tmp_path / "wh"
    config = write_config(tmp_path, build={"jobs": 1})
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    results = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    _ERRORS[name] = [(r["error"], r["log"]) for r in json.loads(proc.stdout)["results"]]
    (log,) = wh.glob(f"logs/{name}-1.0-*.log")
    assert not list(wh.glob("logs/*.build.log")), "the build's own log went into its log"
    module = name.replace("-", "_")
    wheels = list(wh.glob(f"files/*/{module}-1.0-*.whl"))
    init = ""
    if wheels:
        with zipfile.ZipFile(wheels[0]) as zf:
            init = zf.read(f"{module}/__init__.py").decode()
    return log.read_text(), init, results


def test_the_wheel_is_built_while_the_backend_is_asked_for_more(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """The question saw the build running in the other tree (one after the other it would
    wait 30 s and say False); the wheel is the build's in `src`, its output in the log after
    the question's, and no copy of the tree is left."""
    upstream.add_sdist("pw-beside", "1.0", {"setup.py": WAITS, "pw_beside/__init__.py": ""})
    log, init, results = _build(write_config, tmp_path, "pw-beside")
    assert results == {"pw-beside": "built"}, results
    assert "saw the build: True" in log, log
    assert "question in asked saw" in log, log
    assert init == "TREE = 'src'\n", init
    asked = log.index(" get_requires_for_build_wheel ")
    beside = log.index("prewheel: the wheel's build, run beside that question:")
    assert asked < beside < log.index(" build_wheel "), log
    assert "the backend asked for" not in log


def test_a_backend_that_asks_for_more_gets_it_and_builds_again(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """`setup_requires`: the build beside the question is stopped and the wheel built again
    once pw-haswheel is installed; the wheel is that build's (it could import it)."""
    upstream.add_sdist("pw-asks", "1.0", {"setup.py": ASKS, "pw_asks/__init__.py": ""})
    log, init, results = _build(write_config, tmp_path, "pw-asks")
    assert results == {"pw-asks": "built"}, (results, log)
    assert "prewheel: the backend asked for pw-haswheel==1.0" in log, log
    assert init == "HAD_IT = True\n", init
    after = log.index("prewheel: the backend asked for")
    assert " build_wheel " in log[after:], "built again, after the install"


def test_what_the_environment_holds_is_not_asked_for_more(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """The backend names `pw-haswheel` again (`setup_requires`), which `[build-system]`
    installed as `pw-haswheel>=1.0`: the build beside the question is the wheel, not
    stopped and built again."""
    files = {"setup.py": HELD, "pyproject.toml": HELD_PYPROJECT, "pw_held/__init__.py": ""}
    upstream.add_sdist("pw-held", "1.0", files)
    log, init, results = _build(write_config, tmp_path, "pw-held")
    assert results == {"pw-held": "built"}, (results, log)
    assert "the backend asked for" not in log, log
    assert init == "HAD_IT = True\n", init
    assert log.count(" build_wheel ") == 1, log


def test_held_is_a_version_in_range_without_extras_or_markers() -> None:
    installed = {"setuptools-scm": "8.1.0", "wheel": "0.45.1"}
    assert _held("setuptools_scm", installed)
    assert _held("setuptools-scm>=3.4,<9", installed)
    assert _held("Wheel", installed)
    assert not _held("setuptools_scm>=9", installed)
    assert not _held("setuptools_scm[toml]", installed)
    assert not _held("wheel; python_version >= '3'", installed)
    assert not _held("cython", installed)
    assert not _held("not a requirement (", installed)


def test_a_build_that_fails_beside_the_question_is_said_from_its_log(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """The failure names the wheelhouse's log (which holds the build's output) and why,
    read from it, as a build after the question does."""
    failing = (
        "import sys\nfrom setuptools import setup\n"
        "if 'bdist_wheel' in sys.argv:\n    raise RuntimeError('no good at building')\n"
        "setup(packages=['pw_fails'])\n"
    )
    upstream.add_sdist("pw-fails", "1.0", {"setup.py": failing, "pw_fails/__init__.py": ""})
    log, _, results = _build(write_config, tmp_path, "pw-fails")
    assert results == {"pw-fails": "failed"}, results
    ((error, where),) = _ERRORS["pw-fails"]
    assert error is not None and "RuntimeError: no good at building" in error, error
    assert where is not None and "/wh/logs/pw-fails-1.0-" in where, where
    assert ".build.log" not in error, error
    assert "RuntimeError: no good at building" in log[log.index(" build_wheel ") :], log
