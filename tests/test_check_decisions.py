"""The decisions behind the checks, alone and in milliseconds: smoke settings and recipes,
runtime constraints, compiler flags, which symbols and strings are ABI findings, sizes in
records and the summary. No process is started (test_decisions' guard is reused)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_decisions import no_processes, target  # noqa: F401  (the guard is a fixture)

from builder import summary
from builder.config import WERROR_IMPLICIT, Smoke, parse_config, smoke_recipes
from builder.elf import DynamicSymbols
from builder.errors import ConfigError, ConstraintError
from builder.records import CacheKey, KeyInputs, Sizes
from builder.requirements import Pin
from builder.stages import abi, constraints
from builder.stages.build import with_flags
from builder.stages.buildfailure import undeclared_functions
from builder.stages.verify import (
    choose_installer,
    exception_line,
    installed_dists,
    refused_wheels,
)


def _config(**packages: dict[str, Any]) -> Any:
    return parse_config({"packages": packages}, source="prewheel.toml")


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="prewheel.toml")
    return info.value.problems


# -- smoke tests: config and recipes ------------------------------------------------------


def test_smoke_is_code_or_a_command_and_overrides_the_recipe() -> None:
    config = _config(
        fasttext={"smoke": "import fasttext"},
        annoy={"smoke": ["annoy-cli", "--version"]},
        hnswlib={"smoke": False},
    )
    assert config.smoke_for("fasttext") == Smoke(
        code="import fasttext", source="[packages.fasttext] smoke"
    )
    assert config.smoke_for("annoy") == Smoke(
        command=("annoy-cli", "--version"), source="[packages.annoy] smoke"
    )
    assert config.smoke_for("hnswlib") is None, "false turns the recipe off"
    recipe = config.smoke_for("Python_Levenshtein")
    assert recipe is not None and "Levenshtein.distance" in (recipe.code or "")
    assert config.smoke_for("pw-cext") is None
    off = parse_config({"build": {"smoke_recipes": False}}, source="t")
    assert off.smoke_for("python-levenshtein") is None


def test_bad_smoke_settings_are_named() -> None:
    problems = _problems(
        {
            "packages": {
                "a": {"smoke": "import (\n"},
                "b": {"smoke": 3},
                "c": {"smoke": []},
                "d": {"requires": ["numpy"]},
                "e": {"requires": ["numpy @ https://example.com/numpy.whl"]},
                "f": {"requires": ["numpy<<2"]},
                "g": {"strip": "no", "abi_check": 1, "werror_implicit": "yes"},
            }
        }
    )
    text = "\n".join(problems)
    assert "packages.a.smoke: not valid Python" in text
    assert "packages.b.smoke: expected Python code" in text
    assert "packages.c.smoke: expected Python code" in text
    assert "packages.d.requires[0]: expected a name and a version range" in text
    assert "packages.e.requires[0]: expected a name and a version range" in text
    assert "packages.f.requires[0]: not a requirement" in text
    for key in ("strip", "abi_check", "werror_implicit"):
        assert f"packages.g.{key}: expected bool" in text


def test_every_shipped_recipe_is_code_that_calls_its_library() -> None:
    recipes = smoke_recipes()
    wanted = {"python-levenshtein", "annoy", "hnswlib", "fasttext", "pyworld", "numpy"}
    assert wanted <= set(recipes)
    for name, recipe in recipes.items():
        assert recipe.code, name
        compile(recipe.code, name, "exec")
        # More than an import: at least one call or assertion beyond the import lines.
        body = [ln for ln in recipe.code.splitlines() if ln and not ln.startswith("import")]
        assert any("(" in ln for ln in body), name


# -- compiler flags -------------------------------------------------------------------------


def test_flags_follow_strip_and_werror_settings() -> None:
    config = _config(keep={"strip": False}, loose={"werror_implicit": False})
    assert config.build_flags("other") == ("-g0", WERROR_IMPLICIT)
    assert config.build_flags("keep") == (WERROR_IMPLICIT,)
    assert config.build_flags("loose") == ("-g0",)
    unstripped = parse_config(
        {"build": {"strip": False}, "packages": {"x": {"strip": True}}}, source="t"
    )
    assert unstripped.build_flags("y") == (WERROR_IMPLICIT,)
    assert unstripped.build_flags("x") == ("-g0", WERROR_IMPLICIT)
    assert (unstripped.strips("y"), unstripped.strips("x")) == (False, True)


def test_flags_are_appended_to_what_the_config_sets() -> None:
    flags = ("-g0", WERROR_IMPLICIT)
    python = "-DNDEBUG -g -O3 -Wall"
    env = with_flags({"CFLAGS": "-O3 -g", "CXXFLAGS": "-std=c++17"}, flags, python)
    assert env == {
        "CFLAGS": f"-O3 -g -g0 {WERROR_IMPLICIT}",
        "CXXFLAGS": "-std=c++17 -g0",  # the C-only flag is not given to g++
    }
    assert with_flags({"CFLAGS": "-O2"}, (), python) == {}


def test_without_config_flags_the_interpreter_flags_are_kept() -> None:
    """setuptools 75.7+ compiles with $CFLAGS instead of the interpreter's CFLAGS when it is
    set: a bare -g0 would drop -O3."""
    flags = ("-g0", WERROR_IMPLICIT)
    python = "-DNDEBUG -g -O3 -Wall"
    assert with_flags({}, flags, python) == {
        "CFLAGS": f"{python} -g0 {WERROR_IMPLICIT}",
        "CXXFLAGS": f"{python} -g0",
    }
    assert with_flags({"CFLAGS": "-DX"}, flags, python)["CXXFLAGS"] == f"{python} -g0"
    assert with_flags({}, flags, "") == {"CFLAGS": f"-g0 {WERROR_IMPLICIT}", "CXXFLAGS": "-g0"}
    assert with_flags({}, flags, None) == {}, "unknown: leave the build's flags alone"


def test_the_build_key_holds_the_flags_and_old_keys_digest_as_before() -> None:
    inputs = KeyInputs.from_json(
        {
            "recipe": "3",
            "name": "x",
            "version": "1",
            "sdist_sha256": "ab" * 32,
            "repair": {"plat": "auto", "strip": True, "exclude": []},
            "interpreter": {"implementation": "cpython", "version": "3.11.7", "abi": "cp311"},
            "policy": "auto",
            "arch": "x86_64",
            "accel": "any",
        }
    )
    flagged = replace(inputs, build_flags=("-g0",))
    assert "build_flags" not in inputs.to_json()
    assert KeyInputs.from_json(flagged.to_json()) == flagged
    assert CacheKey(inputs=flagged).key != CacheKey(inputs=inputs).key
    assert CacheKey(inputs=flagged).source_key == CacheKey(inputs=inputs).source_key


def test_undeclared_functions_are_read_from_gcc_and_clang_logs() -> None:
    log = textwrap.dedent(
        """\
        src/x.c:10:5: error: implicit declaration of function \u2018Py_SetStandardStreamEncoding\u2019; did you mean ...? [-Werror=implicit-function-declaration]
        src/x.c:12:5: error: implicit declaration of function 'PyUnicode_AS_UNICODE' [-Werror=implicit-function-declaration]
        src/y.c:3:1: error: call to undeclared function 'PyEval_CallObject'; ISO C99 and later do not support implicit function declarations [-Wimplicit-function-declaration]
        src/x.c:10:5: error: implicit declaration of function \u2018Py_SetStandardStreamEncoding\u2019
        src/z.c:1:1: warning: implicit declaration of function 'harmless'
        """  # noqa: E501
    )
    assert undeclared_functions(log) == [
        "Py_SetStandardStreamEncoding",
        "PyUnicode_AS_UNICODE",
        "PyEval_CallObject",
    ]


# -- runtime constraints ----------------------------------------------------------------------


def _pins(text: str) -> list[Pin]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        name, version = line.split("==")
        out.append(Pin(name=name, requirement=line, version=version, where=f"reqs.txt:{i}"))
    return out


def test_a_conflict_names_both_pins_and_where_they_are_set() -> None:
    config = _config(fasttext={"requires": ["numpy<2", "scipy<1; python_version < '3.9'"]})
    closure = {"fasttext": "0.9.3", "numpy": "2.1.0", "scipy": "1.14.0", "pybind11": "2.13"}
    found = constraints.conflicts(target(), closure, config, _pins("fasttext==0.9.3"))
    assert found == [
        "fasttext==0.9.3 (reqs.txt:1) requires numpy<2 ([packages.fasttext] requires in "
        "prewheel.toml), but the closure for cp311-cpu-auto pins numpy==2.1.0 (resolved by "
        "pip, not pinned in the requirements)"
    ], "the scipy constraint's marker does not hold for 3.11"
    with pytest.raises(ConstraintError) as info:
        constraints.check(
            target(), closure, config, _pins("fasttext==0.9.3\nnumpy==2.1.0\nscipy==1.14.0")
        )
    assert "pins numpy==2.1.0 (reqs.txt:2)" in info.value.message
    assert info.value.exit_code == 2


def test_constraints_apply_only_with_their_package_and_their_target() -> None:
    config = _config(fasttext={"requires": ["numpy<2"]})
    assert not constraints.conflicts(target(), {"numpy": "2.1.0"}, config, [])
    assert not constraints.conflicts(target(), {"fasttext": "0.9.3"}, config, [])
    assert not constraints.conflicts(target(), {"fasttext": "0.9.3", "numpy": "1.26.4"}, config, [])


def test_verify_installs_with_every_pin_and_the_requires() -> None:
    config = _config(fasttext={"requires": ["numpy[extra]<2; python_version >= '3.8'"]})
    text = constraints.constraints_file(target(), {"fasttext": "0.9.3", "numpy": "1.26.4"}, config)
    assert text.splitlines() == [
        "fasttext==0.9.3",
        "numpy==1.26.4",
        'numpy<2; python_version >= "3.8"  # [packages.fasttext] requires',
    ]


# -- ABI findings ---------------------------------------------------------------------------------


def _syms(undefined: Iterable[str], defined: Iterable[str] = ()) -> DynamicSymbols:
    return DynamicSymbols(undefined=frozenset(undefined), defined=frozenset(defined))


def test_c_api_symbols_the_target_lacks_are_findings() -> None:
    exports = frozenset({"PyLong_FromLong", "PyModule_Create2", "_Py_NoneStruct"})
    objects = [
        ("pkg/_a.so", _syms({"PyLong_FromLong", "Py_SetStandardStreamEncoding", "memcpy"})),
        ("pkg/_b.so", _syms({"_PyPrivate_Gone", "PyPkg_Helper"})),
        ("pkg/_c.so", _syms(set(), {"PyPkg_Helper"})),  # provided inside the wheel
    ]
    found = abi.removed_api(objects, exports, "3.13")
    assert [(f.extension, f.symbol) for f in found] == [
        ("pkg/_a.so", "Py_SetStandardStreamEncoding"),
        ("pkg/_b.so", "_PyPrivate_Gone"),
    ]
    assert str(found[0]).startswith(
        "pkg/_a.so: Py_SetStandardStreamEncoding: Python 3.13 does not export it"
    )


@pytest.mark.parametrize(
    ("version", "abi3", "expected"),
    [
        ((3, 9), False, False),  # before 3.10, `#` without the macro took an int
        ((3, 10), False, True),
        ((3, 12), False, True),
        ((3, 13), False, False),  # 3.13's headers: the plain names take Py_ssize_t
        ((3, 13), True, True),  # but an abi3 wheel was compiled against older headers
    ],
)
def test_ssize_t_findings_depend_on_the_target(
    version: tuple[int, int], abi3: bool, expected: bool
) -> None:
    syms = _syms({"PyArg_ParseTuple", "Py_BuildValue", "_PyArg_ParseTuple_SizeT"})
    found = abi.ssize_t_unclean(
        "crc16/_crc16.so", syms, ["y#|I:crc16xmodem", "hello"], version=version, abi3=abi3
    )
    assert bool(found) == expected
    if expected:
        assert [f.symbol for f in found] == ["PyArg_ParseTuple", "Py_BuildValue"]
        assert "'y#|I:crc16xmodem'" in found[0].detail


def test_no_ssize_t_finding_without_a_hash_format_or_with_the_macro() -> None:
    plain = _syms({"PyArg_ParseTuple"})
    assert not abi.ssize_t_unclean("m.so", plain, ["ii:add"], version=(3, 11), abi3=False)
    clean = _syms({"_PyArg_ParseTuple_SizeT"})
    assert not abi.ssize_t_unclean("m.so", clean, ["s#"], version=(3, 11), abi3=False)


@pytest.mark.parametrize(
    ("text", "is_format"),
    [
        ("s#", True),
        ("y#|I:crc16xmodem", True),
        ("(s#i)", True),
        ("es#:encode", True),
        ("z#;need a buffer", True),
        ("O!|s#", True),
        ("ii:add", False),
        ("#include", False),
        ("see issue #12", False),
        ("bus#1", False),
        ("", False),
    ],
)
def test_format_strings_with_hash_units(text: str, is_format: bool) -> None:
    assert abi.is_hash_format(text) is is_format


# -- sizes and the summary ---------------------------------------------------------------------


def test_sizes_round_trip() -> None:
    sizes = Sizes(wheel=3014, shared_objects=14296, strip_saved=1376)
    assert Sizes.from_json(sizes.to_json()) == sizes


def test_the_summary_shows_strip_savings_and_what_the_checks_caught() -> None:
    def result(name: str, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "target": "cp311-cpu-auto",
            "name": name,
            "version": "1.0",
            "status": status,
            "duration": 1.0,
            "wheel": f"{name}.whl" if status == "built" else None,
            "error": "boom" if status == "failed" else None,
            **extra,
        }

    report = {
        "duration": 3.0,
        "counts": {"built": 2, "failed": 2},
        "caught": {"abi": 1, "smoke": 1},
        "results": [
            result("a", "built", strip_saved=41_062),
            result("b", "built", strip_saved=None),
            result("c", "failed", step="abi", log="c.log"),
            result("d", "failed", step="smoke", log="d.log"),
        ],
        "skipped_targets": [],
    }
    lines = summary.plain(report).splitlines()
    assert "stripped" in lines[0]
    assert "-40.1 KiB" in next(ln for ln in lines if " a " in ln)
    assert "caught before publishing: 1 by abi, 1 by smoke" in lines
    assert "stripped: 40.1 KiB taken off the shared objects of 1 built wheel(s)" in lines


def test_a_failed_smoke_test_is_named_by_its_exception() -> None:
    output = (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 14, in <module>\n'
        "ValueError: Unable to avoid copy while creating an array as requested.\n"
        "If using `np.array(obj, copy=False)` replace it with `np.asarray(obj)`.\n"
        "For more details, see https://numpy.org/devdocs/numpy_2_0_migration_guide.html\n"
    )
    assert exception_line(output).startswith("ValueError: Unable to avoid copy")
    assert exception_line("segfault\n") == "segfault"
    assert exception_line("") == "no output"


def test_verify_installer_is_uv_when_found_unless_the_config_says_pip() -> None:
    assert choose_installer("auto", uv_found=True) == "uv"
    assert choose_installer("auto", uv_found=False) == "pip"
    assert choose_installer("pip", uv_found=True) == "pip"
    # asked for explicitly: install then says uv is missing and how to get it
    assert choose_installer("uv", uv_found=False) == "uv"
    assert parse_config({}, source="x").verify_installer == "auto"
    assert (
        parse_config({"build": {"verify_installer": "pip"}}, source="x").verify_installer == "pip"
    )
    problems = _problems({"build": {"verify_installer": "uvv"}})
    assert problems == [
        "build.verify_installer: 'uvv' is not one of auto, uv, pip, did you mean 'uv'?"
    ]


def test_installed_wheels_are_held_against_the_tags_pip_accepts(tmp_path: Path) -> None:
    """What an installer put in a venv, against the wheel files it was offered and the
    target interpreter's tags: a distribution passes when a file of its name and version has
    a tag pip accepts (a compressed tag set counts when any of its tags does)."""
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    for dist in ("pure-1.0", "ext_mod-2.0", "new-1.0", "gone-1.0"):
        (site / f"{dist}.dist-info").mkdir(parents=True)
    found = installed_dists(tmp_path)
    assert found == [("ext_mod", "2.0"), ("gone", "1.0"), ("new", "1.0"), ("pure", "1.0")]
    files = [
        "pure-1.0-py2.py3-none-any.whl",
        "Ext.Mod-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "new-1.0-cp311-cp311-manylinux_2_99_x86_64.whl",
        "new-0.9-py3-none-any.whl",
        "not a wheel.whl",
    ]
    accepted = frozenset({"py3-none-any", "cp311-cp311-manylinux2014_x86_64"})
    assert refused_wheels(found, files, accepted) == ["gone 1.0", "new 1.0"]
    assert refused_wheels(found, files, None) == [
        "the target interpreter's tags (packaging.tags) could not be computed"
    ]


def _symbols_by_pyelftools(data: bytes) -> DynamicSymbols:
    """The reference: `.dynsym` as pyelftools (auditwheel's reader) reads it."""
    import io

    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    undefined: set[str] = set()
    defined: set[str] = set()
    dynsym = ELFFile(io.BytesIO(data)).get_section_by_name(".dynsym")
    assert isinstance(dynsym, SymbolTableSection)
    for sym in dynsym.iter_symbols():
        bind = sym["st_info"]["bind"]
        if not sym.name or bind not in ("STB_GLOBAL", "STB_WEAK", "STB_GNU_UNIQUE"):
            continue
        if sym["st_shndx"] == "SHN_UNDEF":
            if bind != "STB_WEAK":
                undefined.add(sym.name)
        elif sym["st_other"]["visibility"] in ("STV_DEFAULT", "STV_PROTECTED"):
            defined.add(sym.name)
    return DynamicSymbols(undefined=frozenset(undefined), defined=frozenset(defined))


def test_dynamic_symbols_are_what_pyelftools_reads() -> None:
    """`elf.dynamic_symbols` reads `.dynsym` with struct: the same symbols as pyelftools
    finds, on the interpreter (thousands of exports), libpython where it is shared, and the
    extension modules of this environment (undefined symbols, weak ones, hidden ones)."""
    import sys
    import sysconfig

    from elftools.common.exceptions import ELFError

    from builder.elf import dynamic_symbols

    libdir = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")
    library = sysconfig.get_config_var("LDLIBRARY") or ""
    objects = [Path(sys.executable).resolve(), libdir / library]
    objects += sorted(Path(sysconfig.get_paths()["platlib"]).rglob("*.so"))[:25]
    objects += sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("lib-dynload/*.so"))[:25]
    seen = 0
    for path in objects:
        if not path.is_file() or path.read_bytes()[:4] != b"\x7fELF":
            continue
        data = path.read_bytes()
        assert dynamic_symbols(data) == _symbols_by_pyelftools(data), path
        seen += 1
    assert seen >= 10, objects
    with pytest.raises(ELFError):
        dynamic_symbols(b"not an ELF object at all")
    with pytest.raises(ELFError):
        dynamic_symbols(Path(sys.executable).resolve().read_bytes()[:100])
