"""A program, not a module: `python -m MODULE`, started ahead by `cmd.spare`.

    python -I _spare.py MODULE [IMPORT...]

It imports what MODULE will (auditwheel's imports take 0.2 s, about half its run), then
waits for one line on its standard input: the JSON of the command's arguments, environment,
working directory and output file (prewheel's open log, by its /proc path). Told, it runs
MODULE as `python -m MODULE ARGS...` would, its output appended to that file, and exits with
MODULE's status. At an end of input instead (prewheel is done without it), it exits.

`-I` keeps this file's directory (prewheel's package, whose `cmd` and `log` would shadow the
standard library's) and the caller's directory off `sys.path`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import sys


def main() -> None:
    module, *imports = sys.argv[1:]
    for name in imports:
        with contextlib.suppress(Exception):  # the run itself says what cannot be imported
            importlib.import_module(name)
    line = sys.stdin.readline()
    if not line:
        return
    told = json.loads(line)
    fd = os.open(told["output"], os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(told["env"])
    if told["cwd"]:
        os.chdir(told["cwd"])
    sys.argv = [module, *told["args"]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
