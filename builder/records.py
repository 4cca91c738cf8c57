"""The cache key's inputs and the build record, as types.

A build record is written once per build, when it ends (`builds/<cache-key>.json`), and
read by later plans (is it cached? did it fail?), by `show`, the status page and `push`.
Its life is a few transitions of one frozen value: started, then built here or fetched
from a `--cache-from` index, then published, failed, or found to link CUDA; a published
record may later be listed again under a newer file name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

Result: TypeAlias = Literal["building", "ok", "failed", "accel-specific"]
DecidedBy: TypeAlias = Literal["config", "sdist", "framework", "links-cuda", "none"]
ANY_ACCEL = "any"  # the key's accelerator when the build does not depend on one


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in dict(value or {}).items()))


@dataclass(frozen=True, kw_only=True)
class RepairOptions:
    plat: str
    strip: bool
    exclude: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"plat": self.plat, "strip": self.strip, "exclude": list(self.exclude)}


@dataclass(frozen=True, kw_only=True)
class InterpreterKey:
    implementation: str
    version: str
    abi: str

    def to_json(self) -> dict[str, str]:
        return {"implementation": self.implementation, "version": self.version, "abi": self.abi}


@dataclass(frozen=True, kw_only=True)
class KeyInputs:
    """Everything that can change a built wheel's bytes. Its JSON is what the key digests."""

    recipe: str
    name: str
    version: str
    sdist_sha256: str
    env: tuple[tuple[str, str], ...]
    config_settings: tuple[tuple[str, str], ...]
    build_requires: tuple[str, ...]
    build_constraints_sha256: str | None
    patches_sha256: tuple[str, ...]
    auditwheel: str
    repair: RepairOptions
    interpreter: InterpreterKey
    policy: str
    arch: str
    accel: str  # ANY_ACCEL unless the package is built per accelerator
    toolkit: str | None
    arch_list: tuple[str, ...] | None
    compiler: str | None
    # Build requirements that are also runtime pins, at the closure's version: the
    # extension is compiled against the framework it will run with. Left out of the JSON
    # when empty, so keys of builds without one stay what they were.
    framework: tuple[tuple[str, str], ...] = ()
    # The flags prewheel appends to CFLAGS/CXXFLAGS (-g0, -Werror=implicit-function-...).
    build_flags: tuple[str, ...] = ()
    # The sandbox settings that change output (network, filesystem view, fixed environment).
    sandbox: tuple[tuple[str, str], ...] = ()
    # The ISA baseline the compiler wrapper applied and the scan held the wheel to, whether
    # the package may dispatch above it, and the toolchain ("host", "zig 0.13.0 <target>").
    isa: str | None = None
    isa_dispatch: bool = False
    toolchain: str | None = None

    @property
    def accel_specific(self) -> bool:
        return self.accel != ANY_ACCEL

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "recipe": self.recipe,
            "name": self.name,
            "version": self.version,
            "sdist_sha256": self.sdist_sha256,
            "env": dict(self.env),
            "config_settings": dict(self.config_settings),
            "build_requires": list(self.build_requires),
            "build_constraints_sha256": self.build_constraints_sha256,
            "patches_sha256": list(self.patches_sha256),
            "auditwheel": self.auditwheel,
            "repair": self.repair.to_json(),
            "interpreter": self.interpreter.to_json(),
            "policy": self.policy,
            "arch": self.arch,
            "accel": self.accel,
            "toolkit": self.toolkit,
            "arch_list": list(self.arch_list) if self.arch_list is not None else None,
            "compiler": self.compiler,
            # Omitted when empty: inputs made before there was a sandbox digest as they did.
            **({"sandbox": dict(self.sandbox)} if self.sandbox else {}),
        }
        # Absent before they existed (or when empty): those keys digest as they did.
        if self.framework:
            out["framework"] = dict(self.framework)
        if self.build_flags:
            out["build_flags"] = list(self.build_flags)
        if self.isa is not None:
            out["isa"] = self.isa
        if self.isa_dispatch:
            out["isa_dispatch"] = True
        if self.toolchain is not None:
            out["toolchain"] = self.toolchain
        return out

    def source_json(self) -> dict[str, Any]:
        """The part a pure wheel depends on: the inputs without the target's (but for the
        accelerator of a package built per accelerator)."""
        target_fields = (
            "interpreter", "policy", "arch", "accel", "toolkit", "arch_list", "compiler", "repair",
            "build_flags", "isa", "isa_dispatch", "toolchain",
        )  # fmt: skip
        out = {k: v for k, v in self.to_json().items() if k not in target_fields}
        if self.accel_specific:
            # Built per accelerator: a pure wheel serves every Python of its accelerator,
            # never another accelerator's index.
            out["accel"] = self.accel
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KeyInputs:
        arch_list = d.get("arch_list")
        return cls(
            recipe=str(d["recipe"]),
            name=str(d["name"]),
            version=str(d["version"]),
            sdist_sha256=str(d["sdist_sha256"]),
            env=_pairs(d.get("env")),
            config_settings=_pairs(d.get("config_settings")),
            build_requires=tuple(d.get("build_requires") or ()),
            build_constraints_sha256=d.get("build_constraints_sha256"),
            patches_sha256=tuple(d.get("patches_sha256") or ()),
            auditwheel=str(d.get("auditwheel", "")),
            repair=RepairOptions(
                plat=str(d["repair"]["plat"]),
                strip=bool(d["repair"]["strip"]),
                exclude=tuple(d["repair"]["exclude"]),
            ),
            interpreter=InterpreterKey(**d["interpreter"]),
            policy=str(d["policy"]),
            arch=str(d["arch"]),
            accel=str(d["accel"]),
            toolkit=d.get("toolkit"),
            arch_list=tuple(arch_list) if arch_list is not None else None,
            compiler=d.get("compiler"),
            framework=_pairs(d.get("framework")),
            build_flags=tuple(d.get("build_flags") or ()),
            sandbox=_pairs(d.get("sandbox")),
            isa=d.get("isa"),
            isa_dispatch=bool(d.get("isa_dispatch", False)),
            toolchain=d.get("toolchain"),
        )


def _digest(data: Mapping[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True, kw_only=True)
class CacheKey:
    """The digest of `inputs`, and of the part a pure wheel depends on (`source_key`): a pure
    wheel built for one Python serves every Python its metadata allows."""

    inputs: KeyInputs
    key: str = field(init=False)
    source_key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _digest(self.inputs.to_json()))
        object.__setattr__(self, "source_key", "src-" + _digest(self.inputs.source_json()))

    @property
    def short(self) -> str:
        return self.key[:12]

    @property
    def accel_specific(self) -> bool:
        return self.inputs.accel_specific


@dataclass(frozen=True, kw_only=True)
class ExternalLibrary:
    """A library the repaired wheel links but does not carry, and who provides it."""

    library: str
    provided_by: str

    def to_json(self) -> dict[str, str]:
        return {"library": self.library, "provided_by": self.provided_by}


@dataclass(frozen=True, kw_only=True)
class GraftedLibrary:
    """A library repair copied into the wheel: its own name, where in the wheel it went,
    and its bytes' sha256 there (auditwheel's 8 hex digits in the member's name are the
    start of the sha256 of the host file it copied). The host path is left out: it can be
    the build's own directory, which would make the record differ between two builds."""

    library: str  # `libz.so.1`
    member: str  # `pkg.libs/libz-1a2b3c4d.so.1`
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"library": self.library, "member": self.member, "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GraftedLibrary:
        return cls(
            library=str(d["library"]),
            member=str(d["member"]),
            sha256=str(d["sha256"]),
        )


@dataclass(frozen=True, kw_only=True)
class Reproduction:
    """The outcome of building a wheel a second time in a fresh environment
    (`build --check-reproducible`): identical, or which members differ."""

    identical: bool
    sha256: str  # the second build's wheel (before it is thrown away)
    differs: tuple[str, ...] = ()  # members whose bytes differ, or that one side lacks
    detail: str | None = None  # diffoscope's summary, when it is installed
    checked: str = ""  # when

    def summary(self) -> str:
        """One line: `reproduced (bit-identical)`, or what differed."""
        if self.identical:
            return "reproduced (bit-identical)"
        if not self.sha256:
            return f"not reproducible: {self.detail}"
        shown = ", ".join(self.differs[:5])
        more = f" +{len(self.differs) - 5}" if len(self.differs) > 5 else ""
        return f"not reproducible: a second build differs in {shown + more or 'the archive'}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "identical": self.identical,
            "sha256": self.sha256,
            "differs": list(self.differs),
            "checked": self.checked,
        }
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Reproduction:
        return cls(
            identical=bool(d["identical"]),
            sha256=str(d.get("sha256", "")),
            differs=tuple(d.get("differs") or ()),
            detail=d.get("detail"),
            checked=str(d.get("checked", "")),
        )


@dataclass(frozen=True, kw_only=True)
class AccelDecision:
    """Whether a package is built per accelerator, who said so, and on what evidence.

    Decided before the build from the sdist and the config (`stages.classify`), so the key
    is right the first time; a neutral build that links CUDA all the same is the second
    check (`by="links-cuda"`)."""

    specific: bool
    by: DecidedBy
    evidence: tuple[str, ...] = ()

    def summary(self) -> str:
        """One short line for a table: `per accel (sdist: csrc/k.cu +3)` or `shared`; the
        whole evidence is in the JSON and the build record."""
        head = "per accel" if self.specific else "shared"
        if self.by == "none" and not self.evidence:
            return head
        shown = f": {self.evidence[0]}" if self.evidence else ""
        more = f" +{len(self.evidence) - 1}" if len(self.evidence) > 1 else ""
        return f"{head} ({self.by}{shown}{more})"

    def to_json(self) -> dict[str, Any]:
        return {"specific": self.specific, "by": self.by, "evidence": list(self.evidence)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AccelDecision:
        return cls(
            specific=bool(d["specific"]),
            by=d.get("by", "none"),
            evidence=tuple(d.get("evidence") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class BuildEnvRecord:
    """The environment a build actually had, as far as the accelerator goes: what it was
    given, what was taken away, and what was hidden from it."""

    accel: str  # "none" for a cpu or neutral build, else the CUDA variant
    toolkit: str | None  # the one toolkit home it could reach
    variables: Mapping[str, str]  # the variables that matter, as set for the build
    unset: tuple[str, ...]  # variables removed from the caller's environment
    removed: tuple[str, ...]  # "VAR: dir" entries taken off search paths
    shadowed: tuple[str, ...]  # shared PATH dirs replaced by a copy without CUDA tools
    hidden: tuple[str, ...]  # toolkit directories made empty for the build
    hiding: str  # how they were hidden, or why they could not be
    toolchain: str | None = None  # the compilers: "host gcc ..., x86-64-v2", "zig ..."

    def to_json(self) -> dict[str, Any]:
        return {
            **({"toolchain": self.toolchain} if self.toolchain else {}),
            "accel": self.accel,
            "toolkit": self.toolkit,
            "variables": dict(self.variables),
            "unset": list(self.unset),
            "removed": list(self.removed),
            "shadowed": list(self.shadowed),
            "hidden": list(self.hidden),
            "hiding": self.hiding,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BuildEnvRecord:
        return cls(
            accel=str(d.get("accel", "none")),
            toolkit=d.get("toolkit"),
            variables=dict(d.get("variables") or {}),
            unset=tuple(d.get("unset") or ()),
            removed=tuple(d.get("removed") or ()),
            shadowed=tuple(d.get("shadowed") or ()),
            hidden=tuple(d.get("hidden") or ()),
            hiding=str(d.get("hiding", "")),
            toolchain=d.get("toolchain"),
        )


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big a built wheel is, and what stripping took off it."""

    wheel: int  # the published file, bytes
    shared_objects: int  # its .so files, uncompressed (grafted libraries included)
    # What `--strip` took off the wheel's own shared objects after a `-g0` compile (the
    # debug info -g0 kept from being written is not counted); None when not stripped.
    strip_saved: int | None

    def to_json(self) -> dict[str, int | None]:
        return {
            "wheel": self.wheel,
            "shared_objects": self.shared_objects,
            "strip_saved": self.strip_saved,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Sizes:
        return cls(
            wheel=int(d["wheel"]),
            shared_objects=int(d["shared_objects"]),
            strip_saved=d.get("strip_saved"),
        )


@dataclass(frozen=True, kw_only=True)
class DeviceCode:
    """The GPU code one shared object carries: SASS per architecture, and PTX."""

    path: str  # inside the wheel
    sass: tuple[str, ...]  # "7.5", "9.0a", ...
    ptx: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sass": list(self.sass), "ptx": list(self.ptx)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeviceCode:
        return cls(path=str(d["path"]), sass=tuple(d["sass"]), ptx=tuple(d["ptx"]))


@dataclass(frozen=True, kw_only=True)
class IsaReport:
    """The ISA scan of a published wheel: its baseline, whether the package may dispatch
    above it, and the objects that do (with their instruction classes)."""

    baseline: str
    dispatch: bool
    above: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "dispatch": self.dispatch,
            "above": {path: list(classes) for path, classes in self.above},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IsaReport:
        above = d.get("above") or {}
        return cls(
            baseline=str(d["baseline"]),
            dispatch=bool(d.get("dispatch", False)),
            above=tuple((str(k), tuple(v)) for k, v in sorted(above.items())),
        )


@dataclass(frozen=True, kw_only=True)
class BuildRecord:
    name: str
    version: str
    target: str  # the first target built for; `targets` lists all it serves
    targets: tuple[str, ...]
    cache_key: str
    source_key: str
    inputs: KeyInputs
    tools: Mapping[str, str]
    tool_paths: Mapping[str, str | None]
    host: str
    started: str
    log: str  # relative to the wheelhouse
    sdist: str | None
    result: Result = "building"
    # How package code ran: the sandbox mode, what a stronger one lacked, the memory limit.
    sandbox: Mapping[str, Any] | None = None
    # Taken from a --cache-from index instead of built here.
    fetched_from: str | None = None
    fetched_url: str | None = None
    remote_record: Mapping[str, Any] | None = None
    # Built here.
    build_deps: Mapping[str, str] = field(default_factory=dict)
    accel_decision: AccelDecision | None = None
    build_env: BuildEnvRecord | None = None
    device_code: tuple[DeviceCode, ...] = ()
    links_cuda: tuple[str, ...] = ()
    external_libraries: tuple[ExternalLibrary, ...] = ()
    grafted: tuple[GraftedLibrary, ...] = ()
    # The SBOM in the wheel (PEP 770): its member, and the document itself, so the record
    # served beside the index answers what is inside without opening the wheel.
    sbom_member: str | None = None
    sbom: Mapping[str, Any] | None = None
    reproduction: Reproduction | None = None
    build_duration: float | None = None
    build_finished: str | None = None
    sizes: Sizes | None = None
    # The platform tags repair gave, oldest policy first (what the build reached), whatever
    # the checks after it decide.
    platforms: tuple[str, ...] = ()
    # The outcome.
    wheel: str | None = None
    sha256: str | None = None
    imported: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()  # passed: "isa", "abi", "import", "smoke"
    isa: IsaReport | None = None
    step: str | None = None
    check: str | None = None  # the check a failure failed: "werror", "abi", "smoke", ...
    # A failed check after the build: what the checks depended on beyond the cache key
    # (`steps.checks_key`); the failure is kept while it is the same.
    checks_key: str | None = None
    error: str | None = None
    tail: str = ""
    finished: str | None = None
    duration: float | None = None
    note: str | None = None
    relisted_from: str | None = None
    relisted: str | None = None

    # -- transitions ----------------------------------------------------------------------

    def slot_taken(self, at: str | None = None) -> BuildRecord:
        """The build starts now, or `at` (built ahead of the plan, in a slot of its own);
        the wait for a build slot does not count."""
        return replace(self, started=at or utcnow())

    def fetched(
        self, *, index_url: str, url: str, remote_record: Mapping[str, Any] | None
    ) -> BuildRecord:
        return replace(self, fetched_from=index_url, fetched_url=url, remote_record=remote_record)

    def built(
        self,
        *,
        links_cuda: tuple[str, ...],
        external_libraries: tuple[ExternalLibrary, ...],
        duration: float,
        device_code: tuple[DeviceCode, ...] = (),
        sizes: Sizes | None = None,
        grafted: tuple[GraftedLibrary, ...] = (),
        platforms: tuple[str, ...] = (),
        finished: str | None = None,
    ) -> BuildRecord:
        """The wheel is made: now, or when its build ahead of the plan gave its slot back
        (`finished`; its repair came after, in the plan's build)."""
        return replace(
            self,
            platforms=platforms,
            links_cuda=links_cuda,
            external_libraries=external_libraries,
            grafted=grafted,
            device_code=device_code,
            sizes=sizes,
            build_duration=round(duration, 3),
            build_finished=finished or utcnow(),
        )

    def with_sbom(self, member: str, document: Mapping[str, Any]) -> BuildRecord:
        return replace(self, sbom_member=member, sbom=document)

    def reproduced(self, outcome: Reproduction) -> BuildRecord:
        return replace(self, reproduction=outcome)

    def with_build_deps(self, deps: Mapping[str, str]) -> BuildRecord:
        return replace(self, build_deps=dict(deps))

    def with_build_env(self, env: BuildEnvRecord) -> BuildRecord:
        return replace(self, build_env=env)

    def found_links_cuda(self, libraries: tuple[str, ...]) -> BuildRecord:
        return replace(
            self,
            result="accel-specific",
            links_cuda=libraries,
            finished=utcnow(),
            note="the accelerator-neutral build linked CUDA; it is built per accelerator",
        )

    def failed(
        self,
        *,
        step: str,
        error: str,
        tail: str,
        duration: float,
        check: str | None = None,
        checks_key: str | None = None,
    ) -> BuildRecord:
        return replace(
            self,
            result="failed",
            step=step,
            check=check,
            checks_key=checks_key,
            error=error,
            tail=tail,
            finished=utcnow(),
            duration=round(duration, 3),
        )

    def published(
        self,
        *,
        wheel: str,
        sha256: str,
        imported: tuple[str, ...],
        warnings: tuple[str, ...],
        duration: float,
        checks: tuple[str, ...] = (),
        isa: IsaReport | None = None,
    ) -> BuildRecord:
        return replace(
            self,
            result="ok",
            isa=isa,
            wheel=wheel,
            sha256=sha256,
            imported=imported,
            warnings=warnings,
            checks=checks,
            finished=utcnow(),
            duration=round(duration, 3),
        )

    def listed_again(self) -> BuildRecord:
        """The index lists this build again (the settings went back to its key): the catalog
        chose it again, under the same file name."""
        return replace(self, relisted=utcnow())

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "targets": list(self.targets),
            "cache_key": self.cache_key,
            "source_key": self.source_key,
            "inputs": self.inputs.to_json(),
            "tools": dict(self.tools),
            "tool_paths": dict(self.tool_paths),
            "host": self.host,
            "started": self.started,
            "log": self.log,
            "sdist": self.sdist,
            "result": self.result,
        }
        optional: dict[str, Any] = {
            "sandbox": dict(self.sandbox) if self.sandbox else None,
            "fetched_from": self.fetched_from,
            "fetched_url": self.fetched_url,
            "remote_record": dict(self.remote_record) if self.remote_record else None,
            "build_deps": dict(self.build_deps) if self.build_deps else None,
            "accel_decision": self.accel_decision.to_json() if self.accel_decision else None,
            "build_env": self.build_env.to_json() if self.build_env else None,
            "sbom_member": self.sbom_member,
            "sbom": dict(self.sbom) if self.sbom else None,
            "reproduction": self.reproduction.to_json() if self.reproduction else None,
            "build_duration": self.build_duration,
            "build_finished": self.build_finished,
            "wheel": self.wheel,
            "sha256": self.sha256,
            "step": self.step,
            "check": self.check,
            "checks_key": self.checks_key,
            "error": self.error,
            "finished": self.finished,
            "duration": self.duration,
            "note": self.note,
            "relisted_from": self.relisted_from,
            "relisted": self.relisted,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.build_finished is not None or self.result == "accel-specific":
            out["links_cuda"] = list(self.links_cuda)
        if self.build_finished is not None:
            out["external_libraries"] = [e.to_json() for e in self.external_libraries]
            out["grafted"] = [g.to_json() for g in self.grafted]
            out["device_code"] = [d.to_json() for d in self.device_code]
            if self.platforms:
                out["platforms"] = list(self.platforms)
        if self.sizes is not None:
            out["sizes"] = self.sizes.to_json()
        if self.result == "ok":
            out["imported"] = list(self.imported)
            out["warnings"] = list(self.warnings)
            out["checks"] = list(self.checks)
            if self.isa is not None:
                out["isa"] = self.isa.to_json()
        if self.result == "failed":
            out["tail"] = self.tail
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BuildRecord:
        """A record as written by this or an earlier prewheel (missing keys take defaults)."""
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            target=str(d.get("target", "")),
            targets=tuple(d.get("targets") or ()),
            cache_key=str(d["cache_key"]),
            source_key=str(d.get("source_key", "")),
            inputs=KeyInputs.from_json(d["inputs"]),
            tools=dict(d.get("tools") or {}),
            tool_paths=dict(d.get("tool_paths") or {}),
            host=str(d.get("host", "")),
            started=str(d.get("started", "")),
            log=str(d.get("log", "")),
            sdist=d.get("sdist"),
            result=d.get("result", "building"),
            sandbox=d.get("sandbox"),
            fetched_from=d.get("fetched_from"),
            fetched_url=d.get("fetched_url"),
            remote_record=d.get("remote_record"),
            build_deps=dict(d.get("build_deps") or {}),
            accel_decision=(
                AccelDecision.from_json(d["accel_decision"]) if d.get("accel_decision") else None
            ),
            build_env=BuildEnvRecord.from_json(d["build_env"]) if d.get("build_env") else None,
            device_code=tuple(DeviceCode.from_json(x) for x in d.get("device_code") or ()),
            links_cuda=tuple(d.get("links_cuda") or ()),
            external_libraries=tuple(
                ExternalLibrary(library=e["library"], provided_by=e["provided_by"])
                for e in d.get("external_libraries") or ()
            ),
            grafted=tuple(GraftedLibrary.from_json(g) for g in d.get("grafted") or ()),
            sbom_member=d.get("sbom_member"),
            sbom=d.get("sbom"),
            reproduction=(
                Reproduction.from_json(d["reproduction"]) if d.get("reproduction") else None
            ),
            build_duration=d.get("build_duration"),
            build_finished=d.get("build_finished"),
            sizes=Sizes.from_json(d["sizes"]) if d.get("sizes") else None,
            platforms=tuple(d.get("platforms") or ()),
            wheel=d.get("wheel"),
            sha256=d.get("sha256"),
            imported=tuple(d.get("imported") or ()),
            warnings=tuple(d.get("warnings") or ()),
            checks=tuple(d.get("checks") or ()),
            isa=IsaReport.from_json(d["isa"]) if d.get("isa") else None,
            step=d.get("step"),
            check=d.get("check"),
            checks_key=d.get("checks_key"),
            error=d.get("error"),
            tail=str(d.get("tail") or ""),
            finished=d.get("finished"),
            duration=d.get("duration"),
            note=d.get("note"),
            relisted_from=d.get("relisted_from"),
            relisted=d.get("relisted"),
        )
