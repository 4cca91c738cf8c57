"""`prewheel push` against a real devpi-server: indexes, uploads, conflicts, installs, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from devpi_support import DevpiServer, free_port, key_of, publish_built, push
from upstream import make_wheel, pip_isolated_env

from builder.devpi.client import DevpiClient
from builder.devpi.push import push_wheelhouse
from builder.devpi.remote_check import check_remote
from builder.errors import PushError
from builder.wheelhouse import Wheelhouse

pytest_plugins = ["devpi_fixture"]


def make_house(root: Path, *, body: str = "VALUE = 1\n") -> Wheelhouse:
    """pw-app (downloaded, every accelerator) needs pw-dplib (built for cpu and cu130)."""
    wh = Wheelhouse(root / "wheelhouse")
    wh.ensure()
    src = root / "src"
    lib = make_wheel(src, "pw-dplib", "1.0", {"pw_dplib/__init__.py": body})
    publish_built(wh, lib, cache_key=key_of("a"), accels=("cpu", "cu130"))
    app = make_wheel(
        src,
        "pw-dpapp",
        "2.0",
        {"pw_dpapp/__init__.py": "from pw_dplib import VALUE\n"},
        deps=["pw-dplib==1.0"],
    )
    wh.publish(app, origin="downloaded", accels=None)
    return wh


def remote_files(devpi: DevpiServer, user: str, accel: str, project: str) -> dict[str, str]:
    files = DevpiClient(devpi.url).list_files(user, accel, project)
    return {n: f.sha256 or "" for n, f in files.items()}


def test_push_creates_indexes_then_pip_and_uv_install(devpi: DevpiServer, tmp_path: Path) -> None:
    user, password = devpi.new_user("push")
    wh = make_house(tmp_path)
    result = push(devpi, user, password, wh)
    assert result.exit_code == 0, result.output
    assert f"indexes created: {user}/cpu, {user}/cu130" in result.stdout
    url = devpi.simple_url(user, "cpu")
    assert f"index-url = {url}" in result.stdout  # the pip.conf snippet
    assert f'url = "{url}"' in result.stdout  # the uv.toml snippet
    for accel in ("cpu", "cu130"):
        config = DevpiClient(devpi.url).get_index(user, accel)
        assert config is not None and config["bases"] == [] and not config["volatile"]
        for project in ("pw-dplib", "pw-dpapp"):
            local = {e.filename: e.sha256 for e in wh.entries(project)}
            assert remote_files(devpi, user, accel, project) == local
    assert check_remote(url) == []

    # Installers, isolated from this machine's configuration, with no compiler to fall back on.
    env = pip_isolated_env({"CC": "/bin/false", "CXX": "/bin/false"})
    venv = tmp_path / "venv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "venv",
            "--no-config",
            "--seed",
            "-q",
            "--python",
            sys.executable,
            str(venv),
        ],
        check=True,
        env=env,
    )
    py = str(venv / "bin" / "python")
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "--isolated",
            "install",
            "-q",
            "--index-url",
            url,
            "--only-binary=:all:",
            "pw-dpapp",
        ],
        check=True,
        env=env,
    )
    run = subprocess.run(
        [py, "-c", "import pw_dpapp; print(pw_dpapp.VALUE)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert run.stdout.strip() == "1"
    uv_venv = tmp_path / "uv-venv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "venv",
            "--no-config",
            "-q",
            "--python",
            sys.executable,
            str(uv_venv),
        ],
        check=True,
        env=env,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "pip",
            "install",
            "--no-config",
            "-q",
            "--no-build",
            "--python",
            str(uv_venv / "bin" / "python"),
            "--index-url",
            url,
            "pw-dpapp",
        ],
        check=True,
        env=env,
    )
    run = subprocess.run([str(uv_venv / "bin" / "python"), "-c", "import pw_dpapp"], env=env)
    assert run.returncode == 0


def test_push_twice_uploads_nothing_and_a_conflict_is_refused(
    devpi: DevpiServer, tmp_path: Path
) -> None:
    user, password = devpi.new_user("twice")
    wh = make_house(tmp_path / "a")
    assert push(devpi, user, password, wh).exit_code == 0
    again = push(devpi, user, password, wh, "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["uploaded"] == [] and report["records"] == [] and report["created"] == []
    assert len(report["skipped"]) == 4  # two wheels x two indexes

    # Another builder's wheelhouse: same file name for pw-dplib, other bytes; one new wheel.
    other = make_house(tmp_path / "b", body="VALUE = 2\n")
    extra = make_wheel(tmp_path / "b" / "src", "pw-dpextra", "1.0", {"pw_dpextra.py": ""})
    other.publish(extra, origin="downloaded", accels=("cpu",))
    before = remote_files(devpi, user, "cpu", "pw-dplib")
    result = push(devpi, user, password, other)
    assert result.exit_code == 1, result.output
    (name,) = before
    assert f"refused: {name}" in result.stderr
    assert "already holds a different file under this name" in result.stderr
    assert remote_files(devpi, user, "cpu", "pw-dplib") == before  # nothing replaced
    assert remote_files(devpi, user, "cpu", "pw-dpextra")  # the rest was pushed
    assert "pip.conf" not in result.stdout  # no "point pip here" advice after a refusal


def test_wrong_password_unreachable_and_missing_variable_exit_2(
    devpi: DevpiServer, tmp_path: Path
) -> None:
    user, password = devpi.new_user("bad")
    wh = make_house(tmp_path)
    wrong = push(devpi, user, "not-the-password", wh)
    assert wrong.exit_code == 2
    assert f"refused the login of user '{user}'" in wrong.stderr
    assert DevpiClient(devpi.url).get_index(user, "cpu") is None  # nothing created

    gone = push(devpi, user, password, wh, url=f"http://127.0.0.1:{free_port()}/")
    assert gone.exit_code == 2
    assert "cannot reach devpi-server" in gone.stderr

    unset = push(devpi, user, None, wh, password_env="PW_NO_SUCH_VARIABLE")
    assert unset.exit_code == 2
    assert "PW_NO_SUCH_VARIABLE is not set" in unset.stderr


def test_index_without_permission_stops_before_any_upload(
    devpi: DevpiServer, tmp_path: Path
) -> None:
    user, password = devpi.new_user("noperm")
    client = devpi.client(user, password)
    # The admin has locked the user's cpu index; cu130 does not exist yet.
    resp = client.request(
        "PUT", f"{user}/cpu", json_body={"type": "stage", "bases": [], "acl_upload": ["root"]}
    )
    assert resp.status == 200, resp.message()
    result = push(devpi, user, password, make_house(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"user '{user}' has no upload permission on {user}/cpu" in result.stderr
    for accel in ("cpu", "cu130"):
        for project in ("pw-dplib", "pw-dpapp"):
            assert remote_files(devpi, user, accel, project) == {}


def test_a_failure_midway_names_what_was_and_was_not_uploaded(
    devpi: DevpiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = devpi.new_user("mid")
    wh = make_house(tmp_path)
    client = devpi.client(user, password)
    real_upload = DevpiClient.upload
    calls: list[str] = []

    def flaky(self: DevpiClient, user_: str, index: str, wheel: Path, **kw: object) -> bool:
        calls.append(wheel.name)
        if len(calls) == 2:
            raise PushError("connection reset (simulated)")
        return real_upload(self, user_, index, wheel, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(DevpiClient, "upload", flaky)
    with pytest.raises(PushError) as info:
        push_wheelhouse(wh, client, user=user)
    message = info.value.message
    assert f"push stopped at {calls[1]}" in message
    assert f"uploaded before the failure (1): {calls[0]}" in message
    assert "not uploaded (3):" in message and calls[1] in message.split("not uploaded")[1]
    monkeypatch.setattr(DevpiClient, "upload", real_upload)
    report = push_wheelhouse(wh, client, user=user)  # the fix: run it again
    assert len(report.uploaded) == 3 and report.ok


def test_password_never_appears_in_output(devpi: DevpiServer, tmp_path: Path) -> None:
    user, password = devpi.new_user("secret")
    result = push(devpi, user, password, make_house(tmp_path), "--json")
    assert result.exit_code == 0
    assert password not in result.output


def test_push_sends_what_the_static_index_lists(devpi: DevpiServer, tmp_path: Path) -> None:
    """A superseded build (older build tag) and a yanked wheel stay home."""
    user, password = devpi.new_user("newest")
    wh = make_house(tmp_path)
    (old,) = wh.entries("pw-dplib")
    rebuilt = make_wheel(
        tmp_path / "re", "pw-dplib", "1.0", {"pw_dplib/__init__.py": "VALUE = 3\n"}
    )
    new = publish_built(wh, rebuilt, cache_key=key_of("9"), accels=("cpu",), when=1764439999)
    gone = make_wheel(tmp_path / "y", "pw-dpyanked", "1.0", {"pw_dpyanked.py": ""})
    entry = wh.publish(gone, origin="downloaded", accels=("cpu",))
    catalog = wh.catalog_dir / "pw-dpyanked.json"
    catalog.write_text(catalog.read_text().replace('"yanked": false', '"yanked": "broken"'))
    assert wh.find(entry.filename) is not None and wh.find(entry.filename).yanked == "broken"
    result = push(devpi, user, password, wh, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(remote_files(devpi, user, "cpu", "pw-dplib")) == {new.filename}
    assert set(remote_files(devpi, user, "cu130", "pw-dplib")) == {old.filename}
    assert remote_files(devpi, user, "cpu", "pw-dpyanked") == {}
    assert report["warnings"] == [f"{entry.filename} is yanked here; not pushed"]


def test_a_conflict_that_appears_during_the_push_is_refused_not_fatal(
    devpi: DevpiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel jobs: another job uploads other bytes between our listing and our upload."""
    user, password = devpi.new_user("race")
    assert push(devpi, user, password, make_house(tmp_path / "a")).exit_code == 0
    other = make_house(tmp_path / "b", body="VALUE = 2\n")
    client = devpi.client(user, password)
    real_list = DevpiClient.list_files
    listed: list[str] = []

    def stale(self: DevpiClient, user_: str, index: str, project: str) -> dict[str, object]:
        listed.append(project)
        if len(listed) <= 4:  # the planning pass sees an empty index
            return {}
        return real_list(self, user_, index, project)  # type: ignore[return-value]

    monkeypatch.setattr(DevpiClient, "list_files", stale)
    report = push_wheelhouse(other, client, user=user)
    assert not report.ok
    assert {i.filename for i, _ in report.conflicts} == {other.entries("pw-dplib")[0].filename}
    assert all(remote != "unknown" for _, remote in report.conflicts)
