"""Verify's install, with uv and with pip: the same wheels pass and fail the same way.

Real installers into real venvs of a real interpreter, with tiny wheels written directly
(no build): the closure's pins are what is installed, nothing is compiled, a wheel the
interpreter does not support is refused, and pip's tag rule is applied after uv as well.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from indexkit import wheel_bytes
from needs import bubblewrap, declared

from builder.config import Smoke, TargetSpec
from builder.errors import StepError
from builder.sandbox import policy
from builder.stages import verify
from builder.targets import Target, find_interpreter

INSTALLERS = ["uv", "pip"]


@pytest.fixture(scope="module")
def target() -> Target:
    interp, why = find_interpreter("3.11")
    assert interp is not None, why
    return Target(
        name=f"{interp.abi}-cpu-auto",
        spec=TargetSpec(python=interp.short, accel="cpu", policy="auto"),
        interpreter=interp,
        toolkit=None,
        arch_list=(),
        repair_excludes=("libcuda.so.1",),
        missing=None,
    )


@pytest.fixture(params=INSTALLERS)
def installer(request: pytest.FixtureRequest) -> verify.Installer:
    if request.param == "uv":
        declared("uv")
        return "uv"
    return "pip"


def _wheel(d: Path, name: str, version: str, **kw: object) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    filename, data = wheel_bytes(name, version, **kw)  # type: ignore[arg-type]
    (d / filename).write_bytes(data)
    return d / filename


def _install(
    tmp_path: Path, target: Target, installer: verify.Installer, wheel: Path, pins: str
) -> verify.VerifyVenv:
    return verify.install(
        wheel,
        target=target,
        find_links=[tmp_path / "links"],
        constraints=pins,
        workdir=tmp_path / "work",
        log_file=tmp_path / "verify.log",
        policy=policy("auto", memory=None, wheelhouse=None),
        installer=installer,
        cache=tmp_path / "cache",
    )


def test_installs_the_closure_at_the_plan_pins(
    tmp_path: Path, target: Target, installer: verify.Installer
) -> None:
    """pw-vdep 2.0 is offered too; the pins say 1.0, so 1.0 is installed, and imports."""
    links = tmp_path / "links"
    _wheel(links, "pw-vdep", "1.0")
    _wheel(links, "pw-vdep", "2.0")
    app = _wheel(tmp_path / "cand", "pw-vapp", "1.0", requires=("pw-vdep",))
    env = _install(tmp_path, target, installer, app, "pw-vdep==1.0\n")
    assert verify.installed_dists(tmp_path / "work" / "venv") == [
        ("pw_vapp", "1.0"),
        ("pw_vdep", "1.0"),
    ]
    log = tmp_path / "verify.log"
    imported = verify.import_modules(
        env, app, name="pw-vapp", import_names=("pw_vapp", "pw_vdep"), log_file=log
    )
    assert imported == ["pw_vapp", "pw_vdep"]
    text = log.read_text()
    assert "--constraint" in text and "--no-index" in text
    assert ("--offline --no-index --no-build" in text) == (installer == "uv")
    assert ("--only-binary=:all:" in text) == (installer == "pip")


def test_a_dependency_offered_only_as_an_sdist_is_not_built(
    tmp_path: Path, target: Target, installer: verify.Installer
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    src = tmp_path / "pw_vsrc-1.0"
    src.mkdir()
    (src / "setup.py").write_text("from setuptools import setup\nsetup(name='pw-vsrc')\n")
    with tarfile.open(links / "pw_vsrc-1.0.tar.gz", "w:gz") as tf:
        tf.add(src, arcname="pw_vsrc-1.0")
    app = _wheel(tmp_path / "cand", "pw-vapp", "1.0", requires=("pw-vsrc",))
    with pytest.raises(StepError) as caught:
        _install(tmp_path, target, installer, app, "")
    assert caught.value.check == "install"
    assert "without a compiler" in caught.value.message


def test_a_wheel_for_another_interpreter_is_refused(
    tmp_path: Path, target: Target, installer: verify.Installer
) -> None:
    (tmp_path / "links").mkdir()
    other = _wheel(tmp_path / "cand", "pw-vold", "1.0", tag="cp38-cp38-manylinux_2_17_x86_64")
    with pytest.raises(StepError) as caught:
        _install(tmp_path, target, installer, other, "")
    assert caught.value.check == "install"


def test_the_interpreter_tags_are_pips(target: Target) -> None:
    """What the check after either installer holds wheels against: packaging.tags as the
    target interpreter computes them."""
    assert target.interpreter is not None
    tags = verify.interpreter_tags(target.interpreter.path)
    assert tags is not None
    assert {"py3-none-any", "cp311-cp311-manylinux_2_17_x86_64", "cp311-abi3-linux_x86_64"} <= tags
    assert not {"cp38-cp38-manylinux_2_17_x86_64", "cp311-cp311-win_amd64"} & tags


def test_uv_asked_for_but_missing_fails_verify_naming_the_fix(
    tmp_path: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder import tools

    monkeypatch.setattr(tools, "find", lambda name: None)
    app = _wheel(tmp_path / "cand", "pw-vapp", "1.0")
    with pytest.raises(StepError) as caught:
        _install(tmp_path, target, "uv", app, "")
    assert caught.value.step == "verify"
    assert "uv not found" in caught.value.message
    assert caught.value.hint is not None and 'verify_installer = "pip"' in caught.value.hint


def test_a_failed_import_says_why_and_hints_only_at_a_missing_module(
    tmp_path: Path, target: Target
) -> None:
    """The import's own error is in the message (a module gone from a newer Python, say);
    the hint about `import_names` comes only when the module itself is not there."""
    (tmp_path / "links").mkdir()
    broken = _wheel(
        tmp_path / "cand",
        "pw-vgone",
        "1.0",
        extra={"pw_vgone/__init__.py": b"from inspect import formatargspec\n"},
    )
    env = _install(tmp_path, target, "pip", broken, "")
    log = tmp_path / "verify.log"
    with pytest.raises(StepError) as caught:
        verify.import_modules(env, broken, name="pw-vgone", import_names=None, log_file=log)
    assert caught.value.check == "import"
    assert "ImportError: cannot import name 'formatargspec'" in caught.value.message
    assert caught.value.hint is None
    with pytest.raises(StepError) as missing:
        verify.import_modules(env, broken, name="pw-vgone", import_names=("pw_x",), log_file=log)
    assert "ModuleNotFoundError: No module named 'pw_x'" in missing.value.message
    assert missing.value.hint is not None and "import_names" in missing.value.hint


def test_under_bubblewrap_the_venv_is_read_only_and_linked_from_the_runs_cache(
    tmp_path: Path, target: Target
) -> None:
    """uv links the venv's files from the run's cache (no second copy of each file); the
    package code that runs there cannot write them, so nothing it does reaches the cache
    that the run's next verifications install from."""
    bubblewrap()
    declared("uv")
    links = tmp_path / "links"
    _wheel(links, "pw-vdep", "1.0")
    app = _wheel(tmp_path / "cand", "pw-vapp", "1.0", requires=("pw-vdep",))
    env = _install(tmp_path, target, "uv", app, "pw-vdep==1.0\n")
    (dep,) = (tmp_path / "work" / "venv").glob("lib/python*/site-packages/pw_vdep/__init__.py")
    assert dep.stat().st_nlink > 1  # one inode with the cache's unpacked copy
    assert "--link-mode hardlink" in (tmp_path / "verify.log").read_text()
    code = (
        "import pathlib, sys, pw_vdep\n"
        "f = pathlib.Path(pw_vdep.__file__)\n"
        "for attempt in (lambda: f.write_text('X = 1'), lambda: f.chmod(0o777),\n"
        "                lambda: (f.parent / 'new.py').write_text('')):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.errno)\n"
        "    else:\n"
        "        sys.exit('written')\n"
    )
    smoke = Smoke(code=code, source="test")
    verify.smoke_test(env, smoke, name="pw-vapp", log_file=tmp_path / "verify.log")
    assert (tmp_path / "verify.log").read_text().count("refused 30") == 3  # EROFS
    assert dep.read_text() == "VERSION = '1.0'\n"


def test_the_import_and_a_python_smoke_test_run_in_one_process_and_fail_apart(
    tmp_path: Path, target: Target
) -> None:
    """One sandboxed interpreter imports the wheel's modules and then runs the smoke test
    from its empty directory; a failure says which of the two failed."""
    (tmp_path / "links").mkdir()
    app = _wheel(tmp_path / "cand", "pw-vapp", "1.0")
    env = _install(tmp_path, target, "pip", app, "")
    log = tmp_path / "verify.log"
    here = "import os, sys, pw_vapp; print('smoke in', os.listdir('.'), sys.argv[1:])"
    imported, smoked = verify.import_and_smoke(
        env, app, name="pw-vapp", import_names=None, smoke=Smoke(code=here, source="t"),
        log_file=log,
    )  # fmt: skip
    assert (imported, smoked) == (["pw_vapp"], True)
    text = log.read_text()
    assert text.count("$ ") == 3, text  # the venv, the install, then one process for both
    assert "imported pw_vapp" in text and "smoke in [] []" in text
    failing = Smoke(code="raise SystemExit('the smoke test says no')", source="t")
    with pytest.raises(StepError) as smoke_failed:
        verify.import_and_smoke(
            env, app, name="pw-vapp", import_names=None, smoke=failing, log_file=log
        )
    assert smoke_failed.value.check == "smoke"
    assert "the smoke test says no" in smoke_failed.value.message
    loud = Smoke(code="for i in range(200):\n    print(i)\nraise SystemExit('no')", source="t")
    with pytest.raises(StepError) as loud_failed:  # its start long out of the output's tail
        verify.import_and_smoke(env, app, name="pw-vapp", import_names=None, smoke=loud,
                                log_file=log)  # fmt: skip
    assert loud_failed.value.check == "smoke"
    with pytest.raises(StepError) as import_failed:
        verify.import_and_smoke(
            env, app, name="pw-vapp", import_names=("pw_gone",), smoke=failing, log_file=log
        )
    assert import_failed.value.check == "import"
    # A command is not Python: it runs on its own, after the import.
    command = Smoke(command=("true",), source="t")
    assert verify.import_and_smoke(
        env, app, name="pw-vapp", import_names=None, smoke=command, log_file=log
    ) == (["pw_vapp"], False)
