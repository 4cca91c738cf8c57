"""config/prewheel.toml: typed per-package settings, every problem at once, "did you mean"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel
from packaging.specifiers import SpecifierSet
from upstream import Upstream, WriteConfig

from builder.config import PackageConfig, load_config, parse_config
from builder.errors import ConfigError


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="prewheel.toml")
    return info.value.problems


def test_package_settings_are_typed_and_names_normalized() -> None:
    config = parse_config(
        {
            "build": {"timeout": 60, "jobs": 3, "strip": True},
            "packages": {
                "Some_Pkg": {
                    "env": {"CFLAGS": "-O2", "LEVEL": 3},
                    "config_settings": {"--build-option": "--no-native"},
                    "build_requires": ["cython<3"],
                    "python": ">=3.10",
                    "heavy": True,
                    "timeout": 90,
                    "import_names": ["some_pkg"],
                },
                "other": {"skip": "no 3.13 support", "force_build": True},
            },
        },
        source="prewheel.toml",
    )
    assert (config.build_timeout, config.jobs, config.strip) == (60.0, 3, True)
    pkg = config.package("some.pkg")
    assert pkg.env == {"CFLAGS": "-O2", "LEVEL": "3"}
    assert pkg.config_settings == {"--build-option": "--no-native"}
    assert pkg.build_requires == ("cython<3",)
    assert pkg.python == SpecifierSet(">=3.10")
    assert (pkg.heavy, pkg.timeout, pkg.import_names) == (True, 90.0, ("some_pkg",))
    assert config.package("Other").skip == "no 3.13 support"
    assert config.package("Other").force_build
    assert config.package("unlisted") == PackageConfig(name="unlisted")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"packages": {"annoy": {"evn": {}}}},
            "packages.annoy.evn: unknown key, did you mean 'env'?",
        ),
        (
            {"packages": {"annoy": {"haevy": True}}},
            "packages.annoy.haevy: unknown key, did you mean 'heavy'?",
        ),
        (
            {"packages": {"annoy": {"config-settings": {}}}},
            "packages.annoy.config-settings: unknown key, did you mean 'config_settings'?",
        ),
        ({"biuld": {}}, "biuld: unknown key, did you mean 'build'?"),
        ({"build": {"timout": 5}}, "build.timout: unknown key, did you mean 'timeout'?"),
        (
            {"index": {"resolver": "ppi"}},
            "index.resolver: 'ppi' is not one of uv, pip, did you mean 'pip'?",
        ),
    ],
)
def test_unknown_key_names_it_and_the_closest_valid_one(raw: dict[str, Any], expected: str) -> None:
    assert _problems(raw) == [expected]


def test_the_resolver_is_uv_unless_pip_is_asked_for() -> None:
    assert parse_config({}, source="x").resolver == "uv"
    assert parse_config({"index": {"resolver": "pip"}}, source="x").resolver == "pip"


def test_unknown_key_without_a_close_match_lists_the_valid_ones() -> None:
    (problem,) = _problems({"packages": {"x": {"zzz": 1}}})
    assert problem.startswith("packages.x.zzz: unknown key (valid: env, config_settings,")


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        {
            "build": {"timeout": -5, "jobs": -1},
            "packages": {
                "a": {
                    "heavy": "yes",
                    "python": "3.x",
                    "timeout": 0,
                    "env": {"A": ["list"]},
                    "build_requires": ["not a req ==="],
                    "skip": True,
                },
                "A": {},
            },
        }
    )
    wheres = [p.split(":")[0] for p in problems]
    assert wheres == [
        "build.timeout",
        "build.jobs",
        "packages.a.python",
        "packages.a.env.A",
        "packages.a.build_requires[0]",
        "packages.a.skip",
        "packages.a.heavy",
        "packages.a.timeout",
        "packages.A",
    ]


def test_load_config_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prewheel.toml"
    path.write_text("[packages.x]\nheavvy = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message
    assert "did you mean 'heavy'?" in info.value.message
    path.write_text("[packages.x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_bytes(b"\xef\xbb\xbf[packages.x]\r\nheavy = true\r\n")  # a Windows editor's
    assert load_config(path).package("x").heavy
    path.write_bytes(b"[packages.x]\nheavy = \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_bad_config_is_exit_2_naming_key_and_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "prewheel.toml"
    config.write_text('[packages.pw-cext]\nenv = { A = "1" }\nheavvy = true\n')
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-cext==1.0\n")
    proc = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh")
    assert proc.returncode == 2
    assert "packages.pw-cext.heavvy: unknown key, did you mean 'heavy'?" in proc.stderr


def test_skip_and_python_filter_appear_in_the_plan(
    upstream: Upstream, tmp_path: Path, write_config: WriteConfig
) -> None:
    config = write_config(
        tmp_path,
        packages={
            "pw-cext": {"skip": "not needed on this deployment"},
            "pw-pure": {"python": "<3.9"},
        },
    )
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-cext==1.0\npw-pure==1.0\npw-haswheel==1.0\n")
    proc = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh", "--json")
    assert proc.returncode == 0, proc.stderr
    items = {i["name"]: i for i in json.loads(proc.stdout)["items"]}
    assert items["pw-cext"]["action"] == "skip"
    assert items["pw-cext"]["reason"] == "not needed on this deployment"
    assert items["pw-pure"]["action"] == "skip"
    assert "<3.9" in items["pw-pure"]["reason"]
    assert items["pw-haswheel"]["action"] == "download"


def test_patches_are_found_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "fix.diff").write_text("--- a/x\n+++ b/x\n")
    path = tmp_path / "prewheel.toml"
    path.write_text('[packages.x]\npatches = ["patches/fix.diff"]\n')
    assert load_config(path).package("x").patches == (str(tmp_path / "patches" / "fix.diff"),)
    path.write_text('[packages.x]\npatches = ["patches/fix.diff", "missing.diff"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"packages.x.patches[1]: no such file: {tmp_path}/missing.diff"]
