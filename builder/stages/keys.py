"""The cache key of a build: computed once, in the plan, from everything that can change the
built wheel's bytes (see `records.KeyInputs`)."""

from __future__ import annotations

import functools
import hashlib
from importlib.metadata import version as dist_version

from .. import RECIPE_VERSION, stamp
from ..config import Config
from ..records import ANY_ACCEL, CacheKey, InterpreterKey, KeyInputs, RepairOptions
from ..sandbox import isolation
from ..targets import ARCH, Target
from ..targets.compilers import compiler_version
from ..targets.cuda import toolkit_version
from . import toolchain


def repair_options(target: Target, config: Config, name: str) -> RepairOptions:
    return RepairOptions(
        plat=target.policy,
        strip=config.strips(name),
        exclude=tuple(sorted(target.repair_excludes)),
    )


def _file_sha256(path: str, *, missing_ok: bool = False) -> str | None:
    data = stamp.watch_file(path)
    if data is None:
        if missing_ok:
            return None
        raise FileNotFoundError(path)
    return hashlib.sha256(data).hexdigest()


@functools.cache
def _auditwheel_version() -> str:
    return dist_version("auditwheel")


def compute(
    *,
    name: str,
    version: str,
    sdist_sha256: str,
    target: Target,
    config: Config,
    per_accel: bool = False,
    framework: tuple[tuple[str, str], ...] = (),
) -> CacheKey:
    """The key for building `name` for `target`. Accelerator-neutral (accel "any") unless the
    package is accelerator-specific (`per_accel`: decided from the sdist and the config, or
    once a build was found to link CUDA; `accel_specific = true` in the config always is):
    then each accelerator, cpu included, has its own key and its own index entry.
    `framework`: the build requirements pinned to the runtime closure's versions."""
    assert target.interpreter is not None
    pkg = config.package(name)
    per_accel = per_accel or pkg.accel_specific is True
    constraints = None
    if config.build_constraints:
        constraints = _file_sha256(config.build_constraints, missing_ok=True)
    repair = repair_options(target, config, name)
    if not per_accel:  # an accelerator-neutral build is repaired as the cpu one
        repair = RepairOptions(plat=repair.plat, strip=repair.strip, exclude=())
    toolkit = target.toolkit if per_accel else None
    inputs = KeyInputs(
        recipe=RECIPE_VERSION,
        name=name,
        version=version,
        sdist_sha256=sdist_sha256,
        env=tuple(sorted(pkg.env.items())),
        config_settings=tuple(sorted(pkg.config_settings.items())),
        build_requires=tuple(sorted(pkg.build_requires)),
        build_constraints_sha256=constraints,
        patches_sha256=tuple(h for p in pkg.patches if (h := _file_sha256(p)) is not None),
        auditwheel=_auditwheel_version(),
        repair=repair,
        interpreter=InterpreterKey(
            implementation=target.interpreter.implementation,
            version=".".join(map(str, target.interpreter.version)),
            abi=target.interpreter.abi,
        ),
        policy=target.policy,
        arch=ARCH,
        accel=target.accel if per_accel else ANY_ACCEL,
        toolkit=toolkit_version(toolkit.nvcc, toolkit.version) if toolkit else None,
        arch_list=tuple(target.arch_list) if toolkit else None,
        # Under zig the host's compiler builds nothing: zig's version is in `toolchain`.
        compiler=compiler_version(dict(pkg.env)) if target.toolchain == "host" else None,
        framework=framework,
        build_flags=config.build_flags(name),
        sandbox=isolation(config.sandbox).key_settings(),
        isa=target.isa,
        isa_dispatch=pkg.isa_dispatch,
        toolchain=toolchain.key_line(target.toolchain, target.policy),
    )
    return CacheKey(inputs=inputs)


def build_tag(key: CacheKey) -> str:
    """The wheel build tag of a build under `key`: derived from the key only, so the same
    inputs give the same file name on every builder, and two builders can never give one name
    to different builds. PEP 427 wants a leading digit; which build of a version the index
    lists is the catalog's choice (`CatalogEntry.listed`), not the tag's order."""
    return f"1_{key.short}"
