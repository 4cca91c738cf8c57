"""Why a build failed, said in one line: the compiler's first error in the package's own
sources, a C API the target Python removed (`-Werror=implicit-function-declaration`), or the
backend's own account, read from the build's log."""

from __future__ import annotations

import re
from pathlib import Path

from ..cmd import tail
from ..errors import CommandError, StepError

# gcc: "implicit declaration of function 'X'"; clang: "call to undeclared function 'X'".
_UNDECLARED = re.compile(
    r"error: (?:implicit declaration of function|call to undeclared function) "
    r"[\u2018'`\"]?(\w+)"
)


def undeclared_functions(log_text: str) -> list[str]:
    """The functions a failed C compile called without a declaration, in order of appearance."""
    return list(dict.fromkeys(m.group(1) for m in _UNDECLARED.finditer(log_text)))


def undeclared(exc: CommandError, log_file: Path, name: str) -> StepError | None:
    """A build that failed on -Werror=implicit-function-declaration, said as such: usually a
    C API the target Python removed, which would otherwise have failed at import."""
    try:
        found = undeclared_functions(log_file.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    if not found:
        return None
    shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    return StepError(
        f"the C code calls undeclared functions: {shown} "
        "(-Werror=implicit-function-declaration; a C API this Python removed?)",
        step="build",
        log=exc.log,
        tail=exc.tail,
        check="werror",
        hint=f"a newer release of the package, a patch ([packages.{name}] patches), or "
        f"[packages.{name}] werror_implicit = false to build anyway (it then fails at import "
        "or at the ABI check)",
    )


# A compiler's diagnostic: `file.c:209:12: fatal error: longintrepr.h: No such file ...`.
_COMPILE_ERROR = re.compile(r"^(\S+):\d+(?::\d+)?: (?:fatal )?error: .+$", re.MULTILINE)
# Where a build's feature probes fail on purpose (numpy's tests of compiler flags break in
# the system's intrinsics headers and in temporary files): not the package's own error.
_PROBE_PLACES = ("/usr/", "/opt/", "/tmp/tmp")  # noqa: S108 (names, not files it writes)


# When no compiler error says why, the backend's own account: maturin's deepest "Caused
# by:", the exception a setup.py raised, the linker's missing library, CMake's or meson's
# error (setuptools' "error: command ... failed" only repeats that a command failed).
_CAUSED_BY = re.compile(r"^\s*Caused by: (.+)$", re.MULTILINE)
_EXCEPTION = re.compile(
    r"^(?!subprocess\.CalledProcessError)[A-Za-z_][\w.]*(?:Error|Exception): .+$", re.MULTILINE
)
_TOOL_ERROR = re.compile(
    r"^(?:\S*ld(?:\.\w+)?: (?:cannot find|error).+|CMake Error.+\n\s*\S.*|ERROR: .+"
    r"|error: (?!command ).+)$",
    re.MULTILINE,
)


_SHORT = 5  # lines: a failed hook's whole output, short enough to end with its reason


def why_it_failed(exc: CommandError) -> CommandError | StepError:
    """A hook that failed, said with why: the compiler's first error line in the package's
    own sources (the build's last lines are mostly its traceback), else the backend's own
    error line, else the last line of a short output; else the failure as it was."""
    text = _last_command_output(Path(exc.log)) if exc.log else exc.tail
    found = list(_COMPILE_ERROR.finditer(text))
    if found:
        own = next((m for m in found if not m.group(1).startswith(_PROBE_PLACES)), found[0])
        said = own.group(0)
    else:
        causes = _CAUSED_BY.findall(text)
        raised = _EXCEPTION.findall(text)
        tool = _TOOL_ERROR.search(text)
        lines = [ln for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith("[exit ")]
        if causes:
            said = causes[-1]
        elif raised:
            said = raised[-1]
        elif tool:
            said = " ".join(tool.group(0).split())
        elif 0 < len(lines) <= _SHORT:
            said = lines[-1]  # a hook that said little: a setup.py's SystemExit message
        else:
            return exc
    return StepError(
        f"{exc.message.removesuffix(f', see {exc.log}')}: {said.strip()[:300]}",
        step="build",
        log=exc.log,
        tail=exc.tail,
    )


def _last_command_output(log_file: Path) -> str:
    """What the log's last command printed (after its `$ ` line)."""
    try:
        text = log_file.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    start = text.rfind("\n$ ")
    return text[start + 1 :] if start >= 0 else text


def tail_of(log_file: Path) -> str:
    try:
        return tail(log_file.read_text(errors="replace"))
    except FileNotFoundError:
        return ""
