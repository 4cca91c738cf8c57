"""The layers of `builder/` (docs/ARCHITECTURE.md), enforced: which part may import which.

A requirement flows down the pipeline one way; a module that imported a higher layer would
make it bounce back up. Read from the code's own imports (ast), with no module imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

BUILDER = Path(__file__).resolve().parent.parent / "builder"

# Each part, and the parts it may import (itself always). Core modules are single files at
# the top of `builder/`; the rest are subpackages, plus the entry point.
CORE = "core"
ALLOWED: dict[str, set[str]] = {
    CORE: set(),
    "targets": {CORE},
    "index": {CORE, "targets"},
    "stages": {CORE, "targets", "index"},
    "devpi": {CORE, "targets", "index"},
    "pipeline": {CORE, "targets", "index", "stages", "devpi"},
    "serve": {CORE, "index"},
    "docker": {CORE, "targets"},
    "doctor": {CORE, "targets"},
    "cli": {CORE, "targets", "index", "stages", "pipeline", "serve", "devpi", "docker", "doctor"},
    "entry": {CORE, "cli"},
}
ENTRY = {"entry", "__main__"}


def part_of(module: str) -> str:
    """`builder.stages.plan` -> `stages`; `builder.wheelhouse` -> core."""
    parts = module.split(".")
    if len(parts) == 1:
        return CORE
    if parts[1] in ENTRY:
        return "entry"
    if (BUILDER / parts[1]).is_dir():
        return parts[1]
    return CORE


def module_name(path: Path) -> str:
    rel = path.relative_to(BUILDER.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The builder modules `path` imports, absolute (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "builder":
                continue
            found.add(target)
            for alias in node.names:  # `from . import stamp` imports a module
                if (BUILDER.parent / target.replace(".", "/") / f"{alias.name}.py").is_file():
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "builder"}
    return found


def test_every_import_follows_the_layers() -> None:
    broken = []
    for path in sorted(BUILDER.rglob("*.py")):
        source = part_of(module_name(path))
        for target in imports(path):
            dest = part_of(target)
            if dest != source and dest not in ALLOWED[source] and target != "builder":
                broken.append(f"{module_name(path)} ({source}) imports {target} ({dest})")
    assert not broken, "\n".join(broken)


def test_the_entry_point_only_tries_the_stamp_then_calls_the_cli() -> None:
    entry = BUILDER / "entry.py"
    assert imports(entry) - {"builder"} == {"builder.stamp", "builder.summary", "builder.cli"}
    for path in BUILDER.rglob("*.py"):
        if module_name(path) not in ("builder.entry", "builder.__main__"):
            assert "builder.entry" not in imports(path), path


# Programs `cmd.run` starts by path (not imported): the launcher that contains a command's
# process tree, and the relay inside the sandbox. They start the command they are given.
CHILD_PROGRAMS = {"builder._contain", "builder._forward"}


def test_only_cmd_starts_processes() -> None:
    """Every subprocess goes through `cmd` (run, probe, venv): logged, timed out, typed
    errors. The server's worker fork is the one other process start."""
    starters = {"subprocess", "os.fork", "os.exec", "os.spawn", "os.system", "os.popen"}
    offenders = []
    for path in sorted(BUILDER.rglob("*.py")):
        if module_name(path) == "builder.cmd" or module_name(path) in CHILD_PROGRAMS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "subprocess" for a in node.names):
                offenders.append(f"{module_name(path)} imports subprocess")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.{node.attr}"
                if any(name.startswith(s) for s in starters) and name != "os.fork":
                    offenders.append(f"{module_name(path)} calls {name}")
    assert not offenders, "\n".join(offenders)
