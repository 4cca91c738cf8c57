"""ABI checks that need no test: what makes an extension that imported fine fail later.

Read from the wheel's shared objects before anything is installed, for the target's own
interpreter:

- **C API the target Python does not export** (removed, like `Py_SetStandardStreamEncoding`
  in 3.13, or private ones that moved inside): such an extension fails to load, and when it
  is a submodule that the verify import never touches, it fails in the user's hands.
- **`#` format units without `PY_SSIZE_T_CLEAN`**: from 3.10 they raise `SystemError` at the
  first call. With the macro, `PyArg_ParseTuple` & co. compile to their `_SizeT` variants;
  an extension that imports the plain ones and carries a format string with `#` is broken.
  From 3.13 the plain functions take `Py_ssize_t` themselves (only abi3 wheels, built
  against older headers, can still get it wrong there).
- **abi3 wheels that use the non-limited API** (`abi3audit`): a `cp38-abi3` wheel that
  calls a function outside the limited API, or newer than 3.8's, breaks on another Python.

Each finding names the extension and the symbol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from elftools.common.exceptions import ELFError

from .. import elf, tools
from ..cmd import clean_env, probe, run
from ..errors import StepError, ToolMissingError
from ..targets import Interpreter
from ..threads import once
from ..wheelfile import is_abi3, is_pure

Kind: TypeAlias = Literal["removed-api", "ssize-t", "abi3"]

_C_API = re.compile(r"_?Py[A-Z_]")

# What PY_SSIZE_T_CLEAN renames (to `<name>_SizeT`, or `_Py_BuildValue_SizeT`) in the 3.10-3.12
# headers: an extension that imports these names was compiled without it.
NOT_SIZE_T = frozenset(
    {
        "PyArg_Parse",
        "PyArg_ParseTuple",
        "PyArg_ParseTupleAndKeywords",
        "PyArg_VaParse",
        "PyArg_VaParseTupleAndKeywords",
        "Py_BuildValue",
        "Py_VaBuildValue",
        "PyObject_CallFunction",
        "PyObject_CallMethod",
        "_PyArg_ParseTupleAndKeywordsFast",
        "_PyArg_ParseStack",
        "_PyArg_ParseStackAndKeywords",
        "_PyArg_VaParseTupleAndKeywordsFast",
        "_PyObject_CallMethodId",
        "_Py_VaBuildStack",
    }
)

# A format string: format units (and their grouping) up to an optional ":name" or ";message",
# with at least one length-taking `#` unit (s# z# y# u# U# Z# es# et#).
_FORMAT_CHARS = re.compile(r"[A-Za-z&!*#|$()\[\]{}, ]+")
_HASH_UNIT = re.compile(r"[szyuUZt]#")


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: Kind
    extension: str  # its path inside the wheel
    symbol: str
    detail: str

    def __str__(self) -> str:
        return f"{self.extension}: {self.symbol}: {self.detail}"


def is_hash_format(text: str) -> bool:
    """Whether `text` looks like a PyArg_Parse / Py_BuildValue format with a `#` unit."""
    units = re.split(r"[:;]", text, maxsplit=1)[0]
    return bool(_FORMAT_CHARS.fullmatch(units) and _HASH_UNIT.search(units))


def removed_api(
    objects: Iterable[tuple[str, elf.DynamicSymbols]],
    exports: frozenset[str],
    python: str,
) -> list[Finding]:
    """C-API symbols an object needs that neither the target interpreter nor another object
    of the wheel provides: the dynamic loader refuses the extension."""
    objects = list(objects)
    provided = exports.union(*(s.defined for _, s in objects))
    return [
        Finding(
            kind="removed-api",
            extension=name,
            symbol=sym,
            detail=f"Python {python} does not export it (removed from its C API, or never "
            "public): the extension fails to load",
        )
        for name, syms in objects
        for sym in sorted(syms.undefined)
        if _C_API.match(sym) and sym not in provided
    ]


def ssize_t_unclean(
    name: str,
    syms: elf.DynamicSymbols,
    strings: Iterable[str],
    *,
    version: tuple[int, int],
    abi3: bool,
) -> list[Finding]:
    """The plain (not `_SizeT`) argument functions an object calls when it also carries a `#`
    format: a SystemError at the first call on 3.10+."""
    if version < (3, 10) or (version >= (3, 13) and not abi3):
        return []
    plain = sorted(syms.undefined & NOT_SIZE_T)
    if not plain:
        return []
    formats = sorted({s for s in strings if is_hash_format(s)})
    if not formats:
        return []
    shown = ", ".join(repr(f) for f in formats[:3]) + (" ..." if len(formats) > 3 else "")
    return [
        Finding(
            kind="ssize-t",
            extension=name,
            symbol=sym,
            detail=f"called without PY_SSIZE_T_CLEAN while the extension has '#' formats "
            f"({shown}): SystemError at the first such call on Python 3.10+",
        )
        for sym in plain
    ]


_EXPORTS_PROBE = (
    "import json, os, sys, sysconfig; v = sysconfig.get_config_var;"
    "print(json.dumps({'executable': os.path.realpath(sys.executable),"
    " 'library': os.path.join(v('LIBDIR') or '', v('INSTSONAME') or '')"
    " if v('Py_ENABLE_SHARED') else None}))"
)


@once
def interpreter_exports(python: Path) -> frozenset[str] | None:
    """Every symbol the interpreter exports to extensions: its executable's and, for a shared
    build, libpython's dynamic symbols. None when they cannot be read."""
    out = probe([python, "-c", _EXPORTS_PROBE])
    try:
        where = json.loads(out or "")
        files = [Path(where["executable"]), *([Path(where["library"])] if where["library"] else [])]
        found: set[str] = set()
        for path in files:
            found |= elf.dynamic_symbols(path.read_bytes()).defined
    except (json.JSONDecodeError, KeyError, OSError, ELFError):
        return None
    return frozenset(found) if found else None


def abi3_violations(wheel: Path, *, workdir: Path, log_file: Path) -> list[Finding]:
    """What `abi3audit` finds in an abi3 wheel: symbols outside the limited API, or newer
    than the Python the wheel's tag claims."""
    try:
        exe = tools.require(tools.ABI3AUDIT)
    except ToolMissingError as exc:
        raise StepError(
            f"{exc.message}; {exc.hint}", step="abi", log=str(log_file), hint=exc.hint
        ) from exc
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "abi3audit.json"
    report.unlink(missing_ok=True)
    run(
        [exe, "--report", "--output", report, wheel],
        step="abi3audit",
        log_file=log_file,
        env=clean_env(),
        cwd=workdir,
        timeout=300,
        check=False,  # it exits 1 when it finds something: the report says what
    )
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StepError(
            f"abi3audit wrote no report for {wheel.name} (see the log)",
            step="abi",
            log=str(log_file),
            check="abi",
        ) from exc
    out: list[Finding] = []
    for spec in (data.get("specs") or {}).values():
        for so in spec.get("wheel") or ():
            result = so.get("result") or {}
            for sym in result.get("non_abi3_symbols") or ():
                out.append(
                    Finding(
                        kind="abi3",
                        extension=str(so.get("name")),
                        symbol=str(sym),
                        detail="not in the limited API, yet the wheel is tagged abi3",
                    )
                )
            future = result.get("future_abi3_objects") or {}
            items = future.items() if isinstance(future, dict) else ((f, "?") for f in future)
            for sym, since in items:
                out.append(
                    Finding(
                        kind="abi3",
                        extension=str(so.get("name")),
                        symbol=str(sym),
                        detail=f"in the limited API only from Python {since}, newer than the "
                        f"abi3 baseline the wheel claims ({result.get('baseline')})",
                    )
                )
    return out


def check_wheel(
    wheel: Path, *, interpreter: Interpreter, workdir: Path, log_file: Path
) -> list[Finding]:
    """Every ABI finding in `wheel` for `interpreter` (none for a pure wheel). Reads one
    shared object at a time; what was checked and found goes to the log."""
    if is_pure(wheel):
        return []
    abi3 = is_abi3(wheel)
    version = interpreter.version[:2]
    symbols: list[tuple[str, elf.DynamicSymbols]] = []
    findings: list[Finding] = []
    for name, data in elf.wheel_objects(wheel):
        try:
            syms = elf.dynamic_symbols(data)
            findings += ssize_t_unclean(
                name,
                syms,
                elf.read_only_strings(data) if syms.undefined & NOT_SIZE_T else (),
                version=(version[0], version[1]),
                abi3=abi3,
            )
        except ELFError:
            continue
        symbols.append((name, syms))
    notes = [f"prewheel abi: {len(symbols)} shared object(s) in {wheel.name}"]
    exports = interpreter_exports(interpreter.path)
    if exports is None:
        notes.append(f"cannot read the symbols {interpreter.path} exports: C-API check skipped")
    else:
        findings = removed_api(symbols, exports, interpreter.short) + findings
    if abi3:
        findings += abi3_violations(wheel, workdir=workdir, log_file=log_file)
    notes += [f"  {f}" for f in findings] or ["  no findings"]
    _log(log_file, "\n".join(notes) + "\n")
    return findings


def findings_error(findings: list[Finding], name: str, log_file: Path) -> StepError:
    """The failure for a wheel with findings: the first few in the message, all in the log."""
    shown = "; ".join(map(str, findings[:3]))
    more = f" (and {len(findings) - 3} more, in the log)" if len(findings) > 3 else ""
    return StepError(
        f"{len(findings)} ABI problem(s): {shown}{more}",
        step="abi",
        log=str(log_file),
        tail="\n".join(map(str, findings[:40])),
        check="abi",
        hint=f"a newer release or a patch of the package; [packages.{name}] abi_check = false "
        "publishes it anyway",
    )


def _log(log_file: Path, text: str) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write(text)
