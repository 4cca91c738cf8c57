"""Check a Dockerfile for what makes runtime images big: build tools, caches, sdists, layers.

The checks are the habits that shrink a runtime stage (a compiler never belongs in it, pip and
apt leave caches behind unless told not to, an sdist means a compiler is needed); each finding
names the line so a user can fix it. This is a library: it returns findings and raises
`DockerfileParseError`; the CLI prints. The parser is our own, small and strict, so that a file
Docker would reject is reported with its line instead of being linted half-read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from .parse import DockerfileParseError, Instruction, Stage, commands, parse

__all__ = ["DockerfileParseError", "Finding", "lint"]

_WRAPPERS = frozenset({"sudo", "env", "time", "exec", "nice", "command", "nohup"})
_PIP = re.compile(r"pip(\d+(\.\d+)?)?")
_PYTHON = re.compile(r"python(\d+(\.\d+)?t?)?")
# pip install options that take a value as the next word.
_PIP_VALUED_WORDS = (
    "-r --requirement -c --constraint -e --editable -i --index-url --extra-index-url -f -p "
    "--find-links -t --target --prefix --root --platform --python-version "
    "--implementation --abi --only-binary --no-binary --progress-bar --trusted-host "
    "--cert --client-cert --cache-dir --src --upgrade-strategy --log --proxy --retries "
    "--timeout --exists-action --global-option --config-settings -C --report --python "
    "--root-user-action --keyring-provider --use-feature --use-deprecated --group"
)
_PIP_VALUED = frozenset(_PIP_VALUED_WORDS.split())
_COMPILER = re.compile(
    r"(gcc|g\+\+|cpp|clang|clang\+\+|gfortran|build-essential|build-base|cuda-nvcc|"
    r"cuda-toolkit|nvidia-cuda-toolkit)(-[\d.]+)?(:\w+)?|.*-(dev|devel)(:\w+)?"
)
_PKG_INSTALL = {
    "apt-get": "install",
    "apt": "install",
    "apk": "add",
    "yum": "install",
    "dnf": "install",
    "microdnf": "install",
}


@dataclass(frozen=True, kw_only=True)
class Finding:
    rule: str
    line: int
    message: str

    def to_json(self, path: str) -> dict[str, object]:
        return {"file": path, "line": self.line, "rule": self.rule, "message": self.message}


def _strip_wrappers(words: list[str]) -> tuple[list[str], dict[str, str]]:
    env: dict[str, str] = {}
    while words:
        if re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            k, _, v = words[0].partition("=")
            env[k] = v
        elif Path(words[0]).name not in _WRAPPERS:
            break
        words = words[1:]
    while words and words[0].startswith("-"):  # wrapper options (sudo -E, env -i)
        words = words[1:]
    return words, env


def _pip_install_args(words: list[str]) -> tuple[str, list[str]] | None:
    """("pip" or "uv", the arguments after `pip install`, `python -m pip install` or
    `uv pip install`), else None."""
    exe = Path(words[0]).name if words else ""
    rest: list[str] | None = None
    tool = "pip"
    if _PIP.fullmatch(exe):
        rest = words[1:]
    elif _PYTHON.fullmatch(exe) and words[1:3] == ["-m", "pip"]:
        rest = words[3:]
    elif exe == "uv" and words[1:2] == ["pip"]:
        tool, rest = "uv", words[2:]
    if rest is None:
        return None
    while rest and rest[0].startswith("-"):
        rest = rest[1:]
    return (tool, rest[1:]) if rest and rest[0] == "install" else None


def _pip_requirements(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(options with their values, positional requirement words)."""
    opts: dict[str, list[str]] = {}
    reqs: list[str] = []
    it = iter(args)
    for word in it:
        if word.startswith("-"):
            name, eq, value = word.partition("=")
            if not eq and name in _PIP_VALUED:
                value = next(it, "")
            opts.setdefault(name, []).append(value)
        else:
            reqs.append(word)
    return opts, reqs


def _package_install(words: list[str]) -> tuple[str, list[str], list[str]] | None:
    """(manager, options, packages) for apt-get/apt/apk/yum/dnf installs (and apt updates)."""
    exe = Path(words[0]).name if words else ""
    if exe not in _PKG_INSTALL:
        return None
    opts: list[str] = []
    positional: list[str] = []
    it = iter(words[1:])
    for word in it:
        if word in ("-o", "-c", "-t", "--option", "--config-file", "--target-release"):
            opts.append(f"{word}={next(it, '')}")
        elif word.startswith("-"):
            opts.append(word)
        else:
            positional.append(word)
    if exe in ("apt-get", "apt") and positional[:1] == ["update"]:
        return exe, opts, []
    if positional[:1] != [_PKG_INSTALL[exe]]:
        return None
    return exe, opts, positional[1:]


def _alpine(image: str) -> bool:
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return name.rsplit("/", 1)[-1] == "alpine" or "alpine" in tag


def _compiler_base(image: str) -> bool:
    """Images known to ship a compiler: python:X (not -slim), buildpack-deps, CUDA devel, ..."""
    name, _, tag = image.partition(":")
    last = name.rsplit("/", 1)[-1]
    if last == "python":
        return not any(t in tag for t in ("slim", "alpine"))
    return (
        last in ("buildpack-deps", "gcc")
        or last.startswith(("manylinux", "musllinux"))
        or "devel" in tag
    )


def lint(text: str, *, path: Path | None = None) -> list[Finding]:
    """Every finding in `text`, in line order. `path` (the file on disk) enables the
    .dockerignore check; DockerfileParseError if the file would not parse."""
    stages = parse(text, path=str(path) if path else "<stdin>")
    stage_names = {s.name for s in stages if s.name}
    findings: list[Finding] = []
    python_app = bool(re.search(r"\b(pip\d?|python\d?(\.\d+)?)\b", text))
    for idx, stage in enumerate(stages):
        final = idx == len(stages) - 1
        if stage.base not in stage_names:
            if _alpine(stage.base) and (python_app or "python" in stage.base):
                findings.append(
                    Finding(
                        rule="alpine-python",
                        line=stage.line,
                        message=f"Alpine base '{stage.base}' for a Python app: musl means no "
                        "manylinux wheels, so packages build from source; use a -slim image",
                    )
                )
            if final and _compiler_base(stage.base):
                findings.append(
                    Finding(
                        rule="compiler-in-final",
                        line=stage.line,
                        message=f"the final stage starts from '{stage.base}', which ships a "
                        "compiler and -dev packages; start it from a slim runtime image",
                    )
                )
        findings += _lint_stage(stage, final=final)
    if path is not None and not (
        (path.parent / ".dockerignore").is_file()
        or path.with_name(path.name + ".dockerignore").is_file()
    ):
        findings.append(
            Finding(
                rule="no-dockerignore",
                line=1,
                message="no .dockerignore beside this Dockerfile: the whole directory (.git, "
                "venvs, wheelhouses) goes into the build context, and COPY . puts it in the image",
            )
        )
    return sorted(findings, key=lambda f: (f.line, f.rule))


def _lint_stage(stage: Stage, *, final: bool) -> list[Finding]:
    out: list[Finding] = []
    env: dict[str, str] = {}
    prev: Instruction | None = None
    for ins in stage.instructions:
        if ins.keyword in ("ENV", "ARG"):
            for m in re.finditer(r"(\w+)[= ]\s*\"?([^\s\"]*)", ins.args):
                env[m.group(1)] = m.group(2)
        if ins.keyword != "RUN":
            prev = None
            continue
        if prev is not None and prev.flags == ins.flags:
            out.append(
                Finding(
                    rule="consecutive-run",
                    line=ins.line,
                    message=f"RUN follows the RUN at line {prev.line}: join them with && into one "
                    "layer, so that what one deletes never stays in the other's",
                )
            )
        prev = ins
        out += _lint_run(ins, env, final=final)
    return out


def _lint_run(ins: Instruction, stage_env: dict[str, str], *, final: bool) -> list[Finding]:
    out: list[Finding] = []
    caches = " ".join(m for m in ins.flag("mount") if "type=cache" in m)
    apt_line: int | None = None
    for words, line in commands(ins):
        words, env = _strip_wrappers(words)
        env = {**stage_env, **env}
        pip = _pip_install_args(words)
        if pip is not None:
            out += _lint_pip(*pip, env, caches, line, final=final)
            continue
        pkg = _package_install(words)
        if pkg is None:
            continue
        manager, opts, packages = pkg
        if manager in ("apt-get", "apt"):
            apt_line = apt_line or line
            if packages and not (
                "--no-install-recommends" in opts
                or re.search(r"Install-Recommends=(false|0|no)", " ".join(opts), re.I)
            ):
                out.append(
                    Finding(
                        rule="apt-recommends",
                        line=line,
                        message=f"{manager} install without --no-install-recommends pulls in "
                        "recommended packages nobody asked for",
                    )
                )
        compilers = [p for p in packages if _COMPILER.fullmatch(p)]
        if final and compilers:
            out.append(
                Finding(
                    rule="compiler-in-final",
                    line=line,
                    message=f"the final stage installs build tools ({', '.join(compilers)}): build "
                    "wheels in a builder stage (prewheel build) and install only wheels here",
                )
            )
    if apt_line is not None and not (
        re.search(r"\brm\s+(-\w+\s+)*\S*/var/lib/apt/lists", ins.args) or "/var/lib/apt" in caches
    ):
        out.append(
            Finding(
                rule="apt-lists",
                line=apt_line,
                message="apt package lists are not removed in the same RUN (rm -rf "
                "/var/lib/apt/lists/*): they stay in the layer, and a later install in another RUN "
                "uses stale lists",
            )
        )
    return out


def _lint_pip(
    tool: str, args: list[str], env: dict[str, str], caches: str, line: int, *, final: bool
) -> list[Finding]:
    out: list[Finding] = []
    opts, reqs = _pip_requirements(args)
    if tool == "uv":
        no_cache = bool({"--no-cache", "-n"} & opts.keys() or env.get("UV_NO_CACHE"))
        flag, where = "--no-cache", "~/.cache/uv"
    else:
        no_cache = "--no-cache-dir" in opts or bool(env.get("PIP_NO_CACHE_DIR"))
        flag, where = "--no-cache-dir", "~/.cache/pip"
    if not no_cache and ".cache" not in caches:
        out.append(
            Finding(
                rule="pip-cache",
                line=line,
                message=f"{'uv pip' if tool == 'uv' else 'pip'} install without {flag} keeps "
                "every downloaded wheel in the "
                f"layer ({where})",
            )
        )
    constrained = "-c" in opts or "--constraint" in opts or env.get("PIP_CONSTRAINT")
    for req in reqs:
        if (
            constrained
            or "$" in req
            or "/" in req
            or req.startswith(".")
            or re.search(r"\.(whl|zip|tar\.gz|tgz)$", req)
        ):
            continue
        try:
            parsed = Requirement(req)
        except InvalidRequirement:
            continue
        if parsed.url is None and not any(s.operator in ("==", "===") for s in parsed.specifier):
            out.append(
                Finding(
                    rule="pip-unpinned",
                    line=line,
                    message=f"'{req}' is not pinned (name==version): the image changes when "
                    "upstream releases, and a new release may be an sdist that needs a compiler",
                )
            )
    binary = [*opts.get("--only-binary", []), env.get("PIP_ONLY_BINARY", "")]
    if tool == "uv" and ("--no-build" in opts or env.get("UV_NO_BUILD")):
        binary.append(":all:")
    only_wheels = (
        reqs
        and all(r.endswith(".whl") for r in reqs)
        and not ({"-r", "--requirement", "-e", "--editable"} & opts.keys())
    )
    if final and ":all:" not in binary and not only_wheels:
        out.append(
            Finding(
                rule="sdist-in-final",
                line=line,
                message="pip install in the final stage may build sdists (no --only-binary=:all:), "
                "which needs a compiler here; install prebuilt wheels only",
            )
        )
    return out
