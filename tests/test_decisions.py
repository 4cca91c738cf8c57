"""The decisions, tested alone: plan actions, cache keys, grouping, superseded builds, the
no-op stamp's reading of a command line. No process is started and nothing is built (a
fixture makes starting one fail), so these run in milliseconds; the end-to-end tests prove
the same paths for real.
"""

from __future__ import annotations

import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import refuse_processes
from indexkit import add_wheel, sample_record
from packaging.utils import canonicalize_name
from packaging.version import Version

from builder import stamp, summary
from builder.config import Config, PackageConfig, TargetSpec, parse_config
from builder.pipeline import grouping
from builder.pipeline.report import ItemResult
from builder.records import CacheKey, InterpreterKey, KeyInputs, RepairOptions
from builder.sandbox import Isolation
from builder.stages import keys
from builder.stages.classify import SdistScan
from builder.stages.plan import PlanItem, plan_item
from builder.stages.publish import Publisher
from builder.targets import Interpreter, Target, compilers
from builder.upstream import UpstreamFile
from builder.wheelhouse import CatalogEntry, Wheelhouse

GCC = "gcc (Debian 12.2.0-14+deb12u1) 12.2.0"


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A decision that starts a process is a bug here; so is asking the machine's compiler
    or sandbox."""
    refuse_processes(monkeypatch)
    monkeypatch.setattr(compilers, "c_compiler", lambda env=None: {"path": "cc", "version": GCC})
    # What the machine allows is found by starting bubblewrap: here, a full sandbox.
    monkeypatch.setattr(
        keys, "isolation", lambda setting="auto": Isolation(mode="bwrap", requested=setting)
    )
    yield


def target(python: tuple[int, int, int] = (3, 11, 7), accel: str = "cpu") -> Target:
    interp = Interpreter(
        path=Path(sys.executable), version=python, implementation="cpython", gil_disabled=False
    )
    abi = interp.abi
    return Target(
        name=f"{abi}-{accel}-auto",
        spec=TargetSpec(python=interp.short, accel=accel, policy="auto"),
        interpreter=interp,
        toolkit=None,
        arch_list=(),
        repair_excludes=("libcuda.so.1",),
        missing=None,
    )


def upstream_file(filename: str, sha: str = "ab" * 32) -> UpstreamFile:
    wheel = filename.endswith(".whl")
    version = Version(filename.split("-")[1].removesuffix(".tar.gz"))
    return UpstreamFile(
        filename=filename,
        url=f"http://upstream/files/{filename}",
        sha256=sha,
        requires_python=None,
        yanked=False,
        version=version,
        is_wheel=wheel,
    )


def config(**packages: PackageConfig) -> Config:
    return replace(parse_config({}, source="<test>"), packages=packages)


# -- cache keys ---------------------------------------------------------------------------------


def test_the_key_digests_the_same_inputs_as_before() -> None:
    """The typed inputs digest to the key the dict-based inputs gave (computed with the code
    before the records became types): a wheelhouse built before is still cached."""
    inputs = KeyInputs(
        recipe="2",
        name="pw-cext",
        version="1.0",
        sdist_sha256="ab" * 32,
        env=(("A", "1"),),
        config_settings=(),
        build_requires=("cython<3",),
        build_constraints_sha256=None,
        patches_sha256=(),
        auditwheel="6.8.2",
        repair=RepairOptions(plat="auto", strip=False, exclude=()),
        interpreter=InterpreterKey(implementation="cpython", version="3.11.7", abi="cp311"),
        policy="auto",
        arch="x86_64",
        accel="any",
        toolkit=None,
        arch_list=None,
        compiler=GCC,
    )
    key = CacheKey(inputs=inputs)
    assert key.key == "8326e3925a917e02a2e6a8e140545899d381fb0bfe76c46366b5f267ac081e1a"
    assert key.source_key == "src-351ce8390cfbd21688c74b08fb2eeb5055e7103a869b51534b3059dfa01c27dc"
    assert KeyInputs.from_json(inputs.to_json()) == inputs


def _key(cfg: Config, t: Target | None = None, *, per_accel: bool = False) -> CacheKey:
    return keys.compute(
        name="pw-cext",
        version="1.0",
        sdist_sha256="ab" * 32,
        target=t or target(),
        config=cfg,
        per_accel=per_accel,
    )


def test_keys_change_with_what_changes_the_bytes() -> None:
    base = _key(config())
    env = _key(config(**{"pw-cext": PackageConfig(name="pw-cext", env={"CFLAGS": "-O3"})}))
    other_python = _key(config(), target((3, 12, 1)))
    assert len({base.key, env.key, other_python.key}) == 3
    # A pure wheel's source key ignores the interpreter: built once, it serves every Python.
    assert base.source_key == other_python.source_key != env.source_key
    assert _key(config()).key == base.key  # and the same inputs, the same key


def test_neutral_keys_are_shared_by_accelerators_per_accel_keys_are_not() -> None:
    cpu, cu = target(accel="cpu"), target(accel="cu130")
    assert _key(config(), cpu).key == _key(config(), cu).key
    assert not _key(config(), cpu).accel_specific
    assert _key(config(), cpu).inputs.repair.exclude == ()  # repaired as the cpu one
    per_cpu, per_cu = _key(config(), cpu, per_accel=True), _key(config(), cu, per_accel=True)
    assert per_cpu.key != per_cu.key and per_cu.inputs.accel == "cu130"
    forced = config(**{"pw-cext": PackageConfig(name="pw-cext", accel_specific=True)})
    assert _key(forced, cu).accel_specific


# -- plan actions -------------------------------------------------------------------------------


def _plan(
    files: list[UpstreamFile],
    tmp_path: Path,
    cfg: Config | None = None,
    hashes: frozenset[str] = frozenset(),
    t: Target | None = None,
) -> PlanItem:
    wh = Wheelhouse(tmp_path / "wh")
    return plan_item(
        t or target(),
        canonicalize_name("pw-cext"),
        "1.0",
        hashes,
        cfg or config(),
        wh,
        files=files,
        scan=lambda f, h: (f.sha256 or "", NO_CUDA),
    )


NO_CUDA = SdistScan(cuda_sources=(), toolkit_use=(), build_requires=())
SDIST = upstream_file("pw_cext-1.0.tar.gz")
PURE = upstream_file("pw_cext-1.0-py3-none-any.whl", "cd" * 32)
OTHER_PLATFORM = upstream_file("pw_cext-1.0-cp311-cp311-win_amd64.whl", "ef" * 32)


def test_a_wheel_that_fits_is_downloaded_else_the_sdist_is_built(tmp_path: Path) -> None:
    assert _plan([SDIST, PURE], tmp_path).action == "download"
    built = _plan([SDIST, OTHER_PLATFORM], tmp_path)
    assert (built.action, built.file) == ("build", SDIST)
    assert built.key is not None and built.accel_key is not None  # both settled in the plan
    assert built.accel_key.accel_specific and not built.key.accel_specific
    forced = config(**{"pw-cext": PackageConfig(name="pw-cext", force_build=True)})
    assert _plan([SDIST, PURE], tmp_path, forced).action == "build"


def test_config_skips_and_python_ranges(tmp_path: Path) -> None:
    skip = config(**{"pw-cext": PackageConfig(name="pw-cext", skip="broken on 3.13")})
    item = _plan([SDIST], tmp_path, skip)
    assert (item.action, item.reason) == ("skip", "broken on 3.13")
    only_new = parse_config({"packages": {"pw-cext": {"python": ">=3.12"}}}, source="<test>")
    assert _plan([SDIST], tmp_path, only_new).action == "skip"
    assert _plan([SDIST], tmp_path, only_new, t=target((3, 12, 1))).action == "build"


def test_hash_pins_choose_the_file(tmp_path: Path) -> None:
    """A pin that names the sdist's hash builds it although a wheel fits; a pin that names
    no file keeps the usual choice, and the fetch will refuse the bytes (exit 3)."""
    assert _plan([SDIST, PURE], tmp_path, hashes=frozenset({"ab" * 32})).action == "build"
    unmatched = _plan([SDIST, PURE], tmp_path, hashes=frozenset({"00" * 32}))
    assert unmatched.action == "download" and unmatched.hashes == {"00" * 32}


def test_a_build_recorded_under_the_key_is_cached(tmp_path: Path) -> None:
    first = _plan([SDIST], tmp_path)
    assert first.action == "build" and first.key is not None
    wh = Wheelhouse(tmp_path / "wh")
    wheel = add_wheel(wh, tmp_path / "w", "pw-cext", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    entry = wh.find(wheel.name)
    assert entry is not None
    record = sample_record("pw-cext", "1.0", cache_key=first.key.key).published(
        wheel=entry.filename, sha256=entry.sha256, imported=(), warnings=(), duration=1.0
    )
    wh.write_record(first.key.key, record)
    again = _plan([SDIST], tmp_path)
    assert (again.action, again.cached_file) == ("cached", entry.filename)


# -- grouping -----------------------------------------------------------------------------------


def _item(
    action: str, *, t: Target | None = None, key: CacheKey | None = None, **kw: object
) -> PlanItem:
    return PlanItem(
        target=t or target(),
        name=canonicalize_name(str(kw.pop("name", "pw-cext"))),
        version="1.0",
        action=action,  # type: ignore[arg-type]
        reason="test",
        key=key,
        **kw,  # type: ignore[arg-type]
    )


def test_items_that_share_a_file_or_key_share_the_work() -> None:
    k311 = _key(config())
    k312 = _key(config(), target((3, 12, 1)))
    items = (
        _item("cached", cached_file="a.whl"),
        _item("skip", name="pw-skip"),
        _item("download", name="six", file=PURE),
        _item("download", name="six", file=PURE, t=target((3, 12, 1))),
        _item("build", key=k311, file=SDIST),
        _item("build", key=k311, file=SDIST, t=target(accel="cu130")),
        _item("build", key=k312, file=SDIST, t=target((3, 12, 1))),
    )
    work = grouping.group(items, superseded=lambda _: None)
    assert [r.status for r in work.done] == ["cached", "skipped"]
    assert [len(g) for g in work.downloads] == [2]  # one download per URL
    # One source, two keys: the 3.11 key built once for cpu and cu130, then the 3.12 one.
    assert [[len(g) for g in groups] for groups in work.builds] == [[2, 1]]
    assert work.building == {"pw-cext"}


def test_a_superseded_cached_build_is_listed_again() -> None:
    entry = CatalogEntry(
        filename="a.whl",
        path="files/ab/a.whl",
        sha256="ab" * 32,
        size=1,
        version="1.0",
        requires_python=None,
        metadata_sha256="cd" * 32,
        upload_time="2026-01-01T00:00:00Z",
        accels=None,
        origin="built",
    )
    items = (_item("cached", cached_file="a.whl"), _item("cached", cached_file="a.whl"))
    work = grouping.group(items, superseded=lambda _: entry)
    assert work.done == () and len(work.relists) == 1 and len(work.relists[0][1]) == 2


def test_abi3_and_verify_order_decisions() -> None:
    built = _key(config())
    same_kind = _key(config(), target((3, 12, 1)))
    per_accel = _key(config(), target(accel="cu130"), per_accel=True)
    wheel = "pw_cext-1.0-cp39-abi3-manylinux_2_17_x86_64.whl"
    assert grouping.abi3_serves(built, wheel, same_kind, target((3, 12, 1)))
    assert not grouping.abi3_serves(built, wheel, per_accel, target(accel="cu130"))
    old = "pw_cext-1.0-cp312-abi3-manylinux_2_17_x86_64.whl"
    assert not grouping.abi3_serves(built, old, same_kind, target((3, 11, 7)))
    assert grouping.verify_now({"six"}, frozenset({"pw-cext"}))
    assert not grouping.verify_now({"pw-cext"}, frozenset({"pw-cext"}))
    assert not grouping.verify_now(None, frozenset())  # unreadable metadata waits
    split = grouping.by_accelerator(
        (_item("build", t=target(accel="cu130")), _item("build", t=target(accel="cpu")))
    )
    assert [g[0].target.accel for g in split] == ["cpu", "cu130"]


def test_a_failure_result_carries_the_exit_code() -> None:
    from builder.errors import HashMismatchError, StepError

    item = _item("download", file=PURE)
    assert ItemResult.failure(item, StepError("x", step="build")).exit_code == 1
    assert ItemResult.failure(item, HashMismatchError("x", step="fetch")).exit_code == 3


# -- superseded builds --------------------------------------------------------------------------


def test_superseded_means_another_build_of_the_same_wheel_was_listed_later(
    tmp_path: Path,
) -> None:
    """The catalog chooses among builds of one version and tags (the one published or listed
    again last), not the build tags' order: tags derive from cache keys."""
    wh = Wheelhouse(tmp_path / "wh")
    wh.ensure()
    tag = "py3-none-any"
    old = add_wheel(wh, tmp_path / "w", "pw-x", "1.0", build="1_bbbbbbbbbbbb", tag=tag)
    new = add_wheel(wh, tmp_path / "w", "pw-x", "1.0", build="1_aaaaaaaaaaaa", tag=tag)
    key = _key(config())
    publisher = Publisher(wh)
    assert publisher.superseded(key, old.name, "cpu") is not None
    assert publisher.superseded(key, new.name, "cpu") is None
    assert publisher.superseded(None, old.name, "cpu") is None  # a downloaded wheel
    wh.relist(old.name)  # the settings went back: the catalog chooses the old build again
    assert publisher.superseded(key, old.name, "cpu") is None
    assert publisher.superseded(key, new.name, "cpu") is not None


# -- the no-op stamp's reading of a command line ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["build", "-r", "r.txt"], (["-r", "r.txt"], "wheelhouse", False)),
        (["build", "-r=r.txt", "--json", "-q"], None),  # `-r=` is not how click spells it
        (["build", "--requirements=r.txt", "--json"],
         (["--requirements", "r.txt"], "wheelhouse", True)),
        (["build", "-r", "r.txt", "--wheelhouse", "w", "-j", "2"],
         (["-r", "r.txt", "--wheelhouse", "w", "-j", "2"], "w", False)),
        (["build", "-r", "r.txt", "--no-retry-failed"],
         (["-r", "r.txt", "--no-retry-failed"], "wheelhouse", False)),
        (["build", "-r", "r.txt", "--retry-failed"],
         (["-r", "r.txt", "--retry-failed"], "wheelhouse", False)),
        (["build", "-r", "r.txt", "--refresh"], None),  # asks for fresh work
        (["build", "-r", "r.txt", "--help"], None),
        (["build", "-r", "r.txt", "--new-option"], None),
        (["plan", "-r", "r.txt"], None),
        (["build", "-r"], None),
    ],
)  # fmt: skip
def test_the_stamp_reads_build_options_from_the_one_table(
    argv: list[str], expected: tuple[list[str], str, bool] | None
) -> None:
    assert stamp._parse(argv) == expected


def test_every_build_option_is_in_the_table_click_reads() -> None:
    from builder.buildargs import BUILD_OPTIONS
    from builder.cli.build import command

    declared = {n for p in command.params for n in (*p.opts, *p.secondary_opts)}
    assert declared - {"--help"} == {n for opt in BUILD_OPTIONS for n in opt.names}


def test_targets_decide_which_wheels_they_accept() -> None:
    t = target()
    assert t.accepts("x-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert t.accepts("x-1.0-py3-none-any.whl")
    assert not t.accepts("x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    assert not t.accepts("x-1.0-cp311-cp311-win_amd64.whl")


def test_config_packages_are_found_by_normalized_name() -> None:
    cfg = parse_config({"packages": {"Foo_Bar": {"heavy": True}}}, source="<t>")
    assert cfg.package("foo-bar").heavy and not cfg.package("other").heavy


# -- failures kept from an earlier run -----------------------------------------------------------


def test_a_cached_failure_is_shown_counted_and_fails_again() -> None:
    def result(name: str, status: str, cached: bool = False, code: int = 1) -> dict[str, object]:
        return {
            "target": "t",
            "name": name,
            "version": "1",
            "status": status,
            "duration": 0.0,
            "wheel": None,
            "error": "boom",
            "step": "build",
            "log": f"/wh/logs/{name}.log",
            "cached_failure": cached,
            "exit_code": code if status == "failed" else 0,
        }

    report = {
        "results": [result("a", "cached"), result("b", "failed", cached=True)],
        "counts": {},
        "skipped_targets": [],
        "duration": 0.0,
    }
    assert [row[3] for row in summary.rows(report)] == ["cached", "failed (cached)"]
    foot = summary.footer(report)
    assert "failed (cached) b 1 (t) at build: log /wh/logs/b.log" in foot
    assert any("--retry-failed" in line for line in foot)
    assert summary.exit_code(report) == 1
    report["results"].append(result("c", "failed", code=3))  # type: ignore[attr-defined]
    assert summary.exit_code(report) == 3
    assert summary.exit_code({"results": [result("a", "cached")]}) == 0


def test_a_waiting_verification_goes_before_a_waiting_build() -> None:
    """With every slot taken and a build and a verification waiting, the slot freed goes to
    the verification: a built wheel is finished before the next build starts."""
    import threading

    from builder.pipeline.steps import Slots

    slots = Slots(1)
    held = slots.acquire(False)
    order: list[str] = []

    def take(name: str, first: bool) -> None:
        count = slots.acquire(False, first=first)
        order.append(name)
        slots.release(count)

    build = threading.Thread(target=take, args=("build", False))
    check = threading.Thread(target=take, args=("verify", True))
    build.start()
    check.start()
    for _ in range(1000):  # both inside the wait (CPython's Condition keeps its waiters)
        if len(slots.cond._waiters) == 2:  # type: ignore[attr-defined]
            break
        threading.Event().wait(0.01)
    assert len(slots.cond._waiters) == 2  # type: ignore[attr-defined]
    slots.release(held)
    build.join(timeout=30)
    check.join(timeout=30)
    assert order == ["verify", "build"]
    assert (slots.used, slots.first_waiting) == (0, 0)


def test_of_the_builds_waiting_the_one_with_the_most_native_source_goes_first() -> None:
    """Longest builds first: with every slot taken, freed slots go to the waiting builds in
    the order of their weight (native source bytes), whatever their order of arrival."""
    import threading

    from builder.pipeline.steps import Slots

    slots = Slots(1)
    held = slots.acquire(False)
    order: list[int] = []

    def take(weight: int) -> None:
        count = slots.acquire(False, weight=weight)
        order.append(weight)
        slots.release(count)

    threads = [threading.Thread(target=take, args=(w,)) for w in (1, 50, 0, 7)]
    for t in threads:
        t.start()
    for _ in range(1000):
        if len(slots.waiting) == len(threads):
            break
        threading.Event().wait(0.01)
    assert len(slots.waiting) == len(threads)
    slots.release(held)
    for t in threads:
        t.join(timeout=30)
    assert order == [50, 7, 1, 0]
    assert (slots.used, slots.waiting) == (0, [])


def test_a_free_slot_waits_for_the_heavier_build_the_scheduler_announced() -> None:
    """The first slots go to the heaviest builds submitted, not to whichever got ready to
    ask first: a light build that asks while a heavier one is expected waits for it to ask
    (or to be withdrawn, or for `EXPECT_S`)."""
    import threading

    from builder.pipeline.steps import Slots

    slots = Slots(1)
    slots.expect("heavy", 500)
    slots.expect("light", 3)
    order: list[str] = []

    def take(name: str, weight: int) -> None:
        count = slots.acquire(False, weight=weight, key=name)
        order.append(name)
        threading.Event().wait(0.05)
        slots.release(count)

    light = threading.Thread(target=take, args=("light", 3))
    light.start()
    light.join(timeout=0.5)
    assert light.is_alive() and order == [], "the light build took the slot first"
    heavy = threading.Thread(target=take, args=("heavy", 500))
    heavy.start()
    for t in (heavy, light):
        t.join(timeout=30)
    assert order == ["heavy", "light"]
    assert (slots.used, slots.waiting, slots.expected) == (0, [], {})

    # Withdrawn (its build ended before asking): the light one goes at once.
    slots.expect("gone", 500)
    started = time.monotonic()
    waiter = threading.Thread(target=take, args=("after-withdraw", 3))
    waiter.start()
    threading.Event().wait(0.1)
    slots.withdraw("gone")
    waiter.join(timeout=30)
    assert order[-1] == "after-withdraw"
    assert time.monotonic() - started < Slots.EXPECT_S

    # Never asks, never withdrawn: waited for no longer than EXPECT_S.
    slots.expect("lost", 500)
    started = time.monotonic()
    take("after-expiry", 3)
    assert Slots.EXPECT_S - 0.1 <= time.monotonic() - started < Slots.EXPECT_S + 5


def test_a_build_that_asks_wakes_the_one_waiting_for_it() -> None:
    """A build waiting for an announced one to ask is woken when it asks, even when the one
    that asks is not the next to go: it asked lighter than announced (a wheel built ahead
    of the plan needs no compiling, weight 0). Before, the waiting build slept until
    `EXPECT_S` ran out and the one that asked waited behind it."""
    import threading

    from builder.pipeline.steps import Slots

    slots = Slots(1)
    slots.EXPECT_S = 60.0  # the instance's: a missed wake-up would wait this long
    slots.expect("announced", 500)
    order: list[str] = []

    def take(name: str) -> None:
        count = slots.acquire(False, weight=0, key=name)
        order.append(name)
        slots.release(count)

    first = threading.Thread(target=take, args=("first",))
    first.start()
    first.join(timeout=0.3)
    assert first.is_alive(), "it did not wait for the announced build"
    started = time.monotonic()
    take("announced")
    first.join(timeout=30)
    assert order == ["first", "announced"]
    assert time.monotonic() - started < 10, "the waiting build was not woken"


def test_native_bytes_counts_what_a_compiler_reads(tmp_path: Path) -> None:
    import io
    import tarfile
    import zipfile

    from builder.archive import native_bytes

    members = {"p-1/setup.py": 300, "p-1/p/_x.c": 1000, "p-1/p/x.H": 20, "p-1/README.md": 5000}
    tgz = tmp_path / "p-1.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tf.addfile(info, io.BytesIO(b"x" * size))
    with zipfile.ZipFile(tmp_path / "p-1.zip", "w") as zf:
        for name, size in members.items():
            zf.writestr(name, b"x" * size)
    assert native_bytes(tgz) == native_bytes(tmp_path / "p-1.zip") == 1020
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    assert native_bytes(tmp_path / "broken.tar.gz") == 0


def test_a_heavy_build_waiting_for_every_slot_does_not_hold_up_a_light_one() -> None:
    import threading

    from builder.pipeline.steps import Slots

    slots = Slots(2)
    held = slots.acquire(False)
    order: list[str] = []

    def take(name: str, heavy: bool, weight: int) -> None:
        count = slots.acquire(heavy, weight=weight)
        order.append(name)
        slots.release(count)

    heavy = threading.Thread(target=take, args=("heavy", True, 100))
    heavy.start()
    for _ in range(1000):
        if slots.waiting:
            break
        threading.Event().wait(0.01)
    light = threading.Thread(target=take, args=("light", False, 1))
    light.start()
    light.join(timeout=30)
    assert order == ["light"], "the light build waited behind the heavy one"
    slots.release(held)
    heavy.join(timeout=30)
    assert order == ["light", "heavy"]


@pytest.mark.parametrize(
    ("top_level", "members", "imported"),
    [
        # An optional extension that did not build (PyYAML 5.3.1's `_yaml`): not imported.
        ("_gone\npkg\n", {"pkg/__init__.py": b""}, ["pkg"]),
        # Listed and held: every one.
        ("a\nb\n", {"a/__init__.py": b"", "b.py": b""}, ["a", "b"]),
        # Nothing it lists is there: a broken wheel, whose import must fail.
        ("pkg\n", {"other.py": b""}, ["pkg"]),
        # No top_level.txt: what it holds.
        (None, {"pkg/__init__.py": b"", "mod.py": b""}, ["mod", "pkg"]),
    ],
)
def test_the_modules_verify_imports(
    tmp_path: Path, top_level: str | None, members: dict[str, bytes], imported: list[str]
) -> None:
    from builder.wheelfile import top_level_modules

    wheel = tmp_path / "pw_mods-1.0-py3-none-any.whl"
    di = "pw_mods-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{di}/METADATA", "Metadata-Version: 2.1\nName: pw-mods\nVersion: 1.0\n")
        if top_level is not None:
            zf.writestr(f"{di}/top_level.txt", top_level)
    assert top_level_modules(wheel) == imported


def test_a_compile_error_is_named_from_the_packages_own_sources(tmp_path: Path) -> None:
    """The failure names the first error in the package's sources, not a feature probe's
    (numpy tests compiler flags with -Werror first, failing in the system's headers)."""
    from builder.errors import CommandError
    from builder.stages.buildfailure import why_it_failed

    log = tmp_path / "b.log"
    log.write_text(
        "$ hook get_requires_for_build_wheel\nok\n[exit 0 after 0.1s]\n\n"
        "$ hook build_wheel\n"
        "/usr/lib/gcc/x86_64-linux-gnu/12/include/avx512erintrin.h:55:20: error: '__W' is "
        "used uninitialized [-Werror=uninitialized]\n"
        "/tmp/tmpab12/source.c:3:1: error: unknown type name 'x'\n"
        "pkg/core.c:65:26: error: lvalue required as left operand of assignment\n"
        "pkg/core.c:70:1: error: a cascade\n"
        "error: command '/usr/bin/gcc' failed with exit code 1\n"
    )
    exc = CommandError(f"build failed (exit 1), see {log}", step="build", log=str(log), tail="")
    said = why_it_failed(exc)
    assert said.message == (
        "build failed (exit 1): pkg/core.c:65:26: error: lvalue required as left operand of "
        "assignment"
    )
    log.write_text("$ hook build_wheel\n" + "".join(f"running step {i}\n" for i in range(9)))
    assert why_it_failed(exc) is exc, "nothing says why: the failure as it was"


@pytest.mark.parametrize(
    ("output", "said"),
    [
        # maturin without a Rust toolchain (orjson 3.6.0): its deepest cause.
        (
            "💥 maturin failed\n  Caused by: Cargo metadata failed.\n  Caused by: `cargo "
            "metadata` exited with an error: error: rustup could not choose a version of "
            "cargo\nError: command ['maturin', 'pep517'] returned non-zero exit status 1\n",
            "`cargo metadata` exited with an error: error: rustup could not choose a version "
            "of cargo",
        ),
        # A setup.py that raised; the frontend's CalledProcessError is not the reason.
        (
            'Traceback (most recent call last):\n  File "setup.py", line 9\n'
            "RuntimeError: libfoo 2.0 or later is required\n"
            "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1.\n",
            "RuntimeError: libfoo 2.0 or later is required",
        ),
        # A library the linker cannot find (a compile error would name a source line).
        (
            "gcc -shared build/x.o -lssl -o x.so\n/usr/bin/ld: cannot find -lssl: No such "
            "file or directory\ncollect2: error: ld returned 1 exit status\n"
            "error: command '/usr/bin/gcc' failed with exit code 1\n",
            "/usr/bin/ld: cannot find -lssl: No such file or directory",
        ),
        # A setup.py that stopped with SystemExit("..."): its whole output is the reason.
        (
            "pw_cu_always needs the CUDA toolkit: set CUDA_HOME\n",
            "pw_cu_always needs the CUDA toolkit: set CUDA_HOME",
        ),
        # CMake's error and the line that says what it is.
        (
            "-- Configuring incomplete\nCMake Error at CMakeLists.txt:5 (find_package):\n"
            '  Could not find a package configuration file provided by "Eigen3"\n',
            "CMake Error at CMakeLists.txt:5 (find_package): Could not find a package "
            'configuration file provided by "Eigen3"',
        ),
    ],
)
def test_a_failed_build_says_the_backends_reason(tmp_path: Path, output: str, said: str) -> None:
    from builder.errors import CommandError
    from builder.stages.buildfailure import why_it_failed

    log = tmp_path / "b.log"
    log.write_text(f"$ hook build_wheel\n{output}[exit 1 after 0.2s]\n")
    exc = CommandError(f"build failed (exit 1), see {log}", step="build", log=str(log), tail="")
    assert why_it_failed(exc).message == f"build failed (exit 1): {said}"


def test_debug_lines_of_the_libraries_prewheel_calls_are_written() -> None:
    """`prewheel --debug` tags every line with its package; an INFO line of the `build`
    library (which has no such tag of its own) is written too, not a "--- Logging error
    ---"; the libraries' own debugging is not."""
    import io
    import logging

    from builder import log

    out = io.StringIO()
    level = logging.getLogger().level
    try:
        log.configure(True, out)
        logging.getLogger("build").info("Building wheel...")
        logging.getLogger("py_serializable").debug("Registering ...")
        with log.working_on("crcmod"):
            log.get_logger("t").debug("built")
    finally:
        log.configure(False, io.StringIO())
        logging.getLogger().setLevel(level)
    assert "INFO build Building wheel..." in out.getvalue()
    assert "DEBUG prewheel.t [crcmod] built" in out.getvalue()
    assert "Registering" not in out.getvalue()  # a library's own debugging stays out


def test_a_kept_sdist_is_taken_only_with_the_expected_bytes(tmp_path: Path) -> None:
    """The copy the resolver's proxy kept is used for the build only when its sha256 is the
    one the index (or a --hash pin) gave; otherwise, or with no digest to check, the file is
    downloaded as before."""
    import hashlib

    from builder import scratch
    from builder.stages.fetch import _take_kept

    good = b"the sdist"
    digest = hashlib.sha256(good).hexdigest()
    dest = tmp_path / "sources" / "p-1.tar.gz"
    assert _take_kept("p-1.tar.gz", {digest}, dest) is None  # outside a run: nothing kept
    with scratch.session():
        kept = scratch.kept_files()
        assert kept is not None
        kept.mkdir()
        (kept / "p-1.tar.gz").write_bytes(b"other bytes under that name")
        assert _take_kept("p-1.tar.gz", {digest}, dest) is None
        assert not dest.exists()
        (kept / "p-1.tar.gz").write_bytes(good)
        assert _take_kept("p-1.tar.gz", set(), dest) is None, "nothing to check it against"
        assert _take_kept("p-1.tar.gz", {digest}, dest) == digest
        assert dest.read_bytes() == good
