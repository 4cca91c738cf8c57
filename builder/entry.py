"""The `prewheel` command: a repeated no-op `build` is answered from its stamp, before
anything heavier than the standard library is imported; everything else goes to the CLI."""

from __future__ import annotations

import sys
import time

from . import stamp, summary


def main() -> None:
    started = time.perf_counter()
    argv = sys.argv[1:]
    try:
        answer = stamp.check(argv)
    except Exception as exc:  # a fast path must never be the reason a run fails
        stamp.debug(f"the check failed ({type(exc).__name__}: {exc})")
        answer = None
    if answer is None:
        stamp.set_command_line(argv)
        from .cli import main as cli

        cli()
        return
    report, as_json, path = answer
    seconds = time.perf_counter() - started
    if as_json:
        import json

        out = {**report, "duration": round(seconds, 3), "fast_path": True}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        text = summary.plain(report, seconds)
        sys.stdout.write(f"{text}\nnothing changed since the last run: answered from {path}\n")
    # A stamped run with failures kept from before fails again, with the same code.
    code = summary.exit_code(report)
    if code:
        sys.exit(code)
