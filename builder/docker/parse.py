"""A small, strict Dockerfile parser: stages, instructions with flags, and the commands of a RUN.

Our own rather than a general one, so that a file Docker would reject is an error with its line
(and `lint-dockerfile` exits 2) instead of being linted half-read, and so that each shell
command inside a long RUN can be traced back to its physical line.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import PrewheelError

_KEYWORD_WORDS = (
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK "
    "LABEL MAINTAINER ONBUILD RUN SHELL STOPSIGNAL USER VOLUME WORKDIR"
)
KEYWORDS = frozenset(_KEYWORD_WORDS.split())
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FLAG = re.compile(r"--[a-z][a-z-]*(=\S*)?")
_OPERATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"})


class DockerfileParseError(PrewheelError):
    """The Dockerfile would not parse; `line` says where."""

    def __init__(self, message: str, *, path: str, line: int) -> None:
        super().__init__(
            f"{path}:{line}: {message}", hint="fix the line; `docker build` would reject it too"
        )
        self.line = line


@dataclass(frozen=True, kw_only=True)
class Instruction:
    keyword: str
    flags: tuple[str, ...]
    args: str  # after the flags; continuation lines joined by spaces, heredoc bodies appended
    line: int
    line_starts: tuple[tuple[int, int], ...] = ()  # (offset in args, physical line)

    def line_of(self, offset: int) -> int:
        """The physical line holding offset `offset` of `args`."""
        line = self.line
        for start, physical in self.line_starts:
            if start > offset:
                break
            line = physical
        return line

    def flag(self, name: str) -> list[str]:
        return [f.split("=", 1)[1] for f in self.flags if f.startswith(f"--{name}=")]


@dataclass(frozen=True, kw_only=True)
class Stage:
    base: str  # with ARG defaults substituted
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def _logical_lines(text: str, path: str) -> Iterator[tuple[int, str, list[tuple[int, int]]]]:
    """(first line, joined text, [(offset, physical line)]) per instruction."""
    lines = text.splitlines()
    escape = "\\"
    i = 0
    in_directives = True
    while i < len(lines):
        raw = lines[i].strip()
        if in_directives:
            m = re.fullmatch(r"#\s*escape\s*=\s*(\S)", raw, flags=re.IGNORECASE)
            if m:
                escape = m.group(1)
                i += 1
                continue
            if not re.fullmatch(r"#\s*\w+\s*=.*", raw):
                in_directives = False
        if not raw or raw.startswith("#"):
            i += 1
            continue
        first = i + 1
        parts: list[str] = []
        starts: list[tuple[int, int]] = []
        offset = 0
        while i < len(lines):
            piece = lines[i].rstrip()
            if parts and piece.lstrip().startswith("#"):
                i += 1
                continue
            cont = piece.endswith(escape)
            piece = piece[:-1] if cont else piece
            starts.append((offset, i + 1))
            parts.append(piece)
            offset += len(piece) + 1
            i += 1
            if not cont:
                break
        joined = " ".join(parts)
        for m in _HEREDOC.finditer(joined):
            strip, word = m.group(1) == "-", m.group(3)
            body: list[str] = []
            while True:
                if i >= len(lines):
                    raise DockerfileParseError(
                        f"heredoc '{word}' is never closed", path=path, line=first
                    )
                cur = lines[i]
                i += 1
                if (cur.lstrip("\t") if strip else cur) == word:
                    break
                starts.append((offset, i))
                body.append(cur)
                offset += len(cur) + 1
            joined += "\n" + "\n".join(body)
        yield first, joined, starts


def parse(text: str, *, path: str = "Dockerfile") -> list[Stage]:
    """The stages of a Dockerfile; DockerfileParseError where Docker would refuse it."""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line, joined, starts in _logical_lines(text, path):
        m = re.match(r"\s*(\S+)\s*", joined)
        assert m is not None
        keyword = m.group(1).upper()
        if keyword not in KEYWORDS:
            raise DockerfileParseError(f"unknown instruction: {m.group(1)}", path=path, line=line)
        rest, cut = joined[m.end() :], m.end()
        flags: list[str] = []
        while fm := _FLAG.match(rest):
            flags.append(fm.group(0))
            skip = fm.end() + len(rest[fm.end() :]) - len(rest[fm.end() :].lstrip())
            rest, cut = rest[skip:], cut + skip
        if not rest.strip():
            raise DockerfileParseError(f"{keyword} needs an argument", path=path, line=line)
        ins = Instruction(
            keyword=keyword,
            flags=tuple(flags),
            args=rest.rstrip(),
            line=line,
            line_starts=tuple((max(0, o - cut), n) for o, n in starts),
        )
        if keyword == "FROM":
            words = rest.split()
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                raise DockerfileParseError("FROM takes IMAGE [AS NAME]", path=path, line=line)
            stages.append(
                Stage(
                    base=_expand(words[0], global_args),
                    name=words[2] if len(words) == 3 else None,
                    line=line,
                )
            )
        elif not stages:
            if keyword != "ARG":
                raise DockerfileParseError(
                    f"{keyword} before the first FROM (only ARG may come first)",
                    path=path,
                    line=line,
                )
            name, _, default = rest.strip().partition("=")
            global_args[name] = default.strip("\"'")
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileParseError(
            "no FROM instruction", path=path, line=max(1, len(text.splitlines()))
        )
    return stages


def _expand(word: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), word)


def commands(ins: Instruction) -> Iterator[tuple[list[str], int]]:
    """Each simple command of a RUN, as words, with the line it starts on."""
    text = ins.args
    if text.lstrip().startswith("["):
        try:
            argv = json.loads(text)
        except json.JSONDecodeError:
            argv = None
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            if len(argv) >= 3 and argv[1] == "-c" and argv[0].endswith("sh"):
                text = argv[2]
            else:
                yield argv, ins.line
                return
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: fall back to plain words
        tokens = text.split()
    cursor = 0
    words: list[str] = []
    for tok in [*tokens, ";"]:
        if tok not in _OPERATORS:
            words.append(tok)
            continue
        if words:
            pos = text.find(words[0], cursor)
            cursor = pos if pos >= 0 else cursor
            yield words, ins.line_of(cursor)
            cursor += len(words[0])
        words = []
