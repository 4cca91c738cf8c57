"""The options of `build` (and the ones `plan` shares), in one table.

click builds the commands from it (`cli/_options.py`), and the no-op stamp reads it to tell
which arguments decide what a run does. The stamp runs before anything else is imported, so
this module imports nothing at run time (not even dataclasses).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: the stamp runs first
if TYPE_CHECKING:
    from typing import Literal, TypeAlias

    # What an option means to the no-op stamp:
    #   key     its value is part of the stamp's key (two runs differ when it differs)
    #   output  it only changes how the answer is printed
    #   never   a run with it is never answered from a stamp (it asks for fresh work)
    Stamp: TypeAlias = Literal["key", "output", "never"]
    Kind: TypeAlias = Literal["file", "dir", "int", "str", "flag"]


class Option:
    """One option: its spellings (a flag's second name is its "off" switch), where click puts
    its value, its kind, and what it means to the stamp."""

    __slots__ = ("default", "dest", "help", "kind", "metavar", "multiple", "names", "required",
                 "stamp")  # fmt: skip

    def __init__(
        self,
        *,
        names: tuple[str, ...],
        dest: str,
        kind: Kind,
        help: str,
        stamp: Stamp,
        multiple: bool = False,
        required: bool = False,
        metavar: str | None = None,
        default: object = None,
    ) -> None:
        self.names, self.dest, self.kind, self.help, self.stamp = names, dest, kind, help, stamp
        self.multiple, self.required, self.metavar, self.default = (
            multiple, required, metavar, default
        )  # fmt: skip

    @property
    def takes_value(self) -> bool:
        return self.kind != "flag"


REQUIREMENTS = Option(
    names=("-r", "--requirements"),
    dest="requirements",
    kind="file",
    required=True,
    help="requirements.txt (pinned) or pylock.toml.",
    stamp="key",
)
CONFIG = Option(
    names=("-c", "--config"),
    dest="config_path",
    kind="file",
    help="Configuration file (default: config/prewheel.toml if present, else built-ins).",
    stamp="key",
)
TARGET = Option(
    names=("--target",),
    dest="targets",
    kind="str",
    multiple=True,
    metavar="NAME",
    help="Only these targets (name or glob; repeatable). Default: all configured.",
    stamp="key",
)
WHEELHOUSE = Option(
    names=("--wheelhouse",),
    dest="wheelhouse",
    kind="dir",
    help="The wheelhouse directory.",
    stamp="key",
)
ALLOW_UNPINNED = Option(
    names=("--allow-unpinned",),
    dest="allow_unpinned",
    kind="flag",
    help="Let the resolver pin loose requirements.",
    stamp="key",
)
REFRESH = Option(
    names=("--refresh",),
    dest="refresh",
    kind="flag",
    help="Resolve again, even when the cached resolution still holds (a locked closure, or "
    "an index whose closure pages did not change).",
    stamp="never",
)
JSON = Option(
    names=("--json",), dest="as_json", kind="flag", help="Print JSON for machines.", stamp="output"
)
QUIET = Option(
    names=("-q", "--quiet"),
    dest="quiet",
    kind="flag",
    help="Plain lines only, no live display.",
    stamp="output",
)

BUILD_OPTIONS: tuple[Option, ...] = (
    REQUIREMENTS,
    CONFIG,
    TARGET,
    WHEELHOUSE,
    Option(
        names=("-j", "--jobs"),
        dest="jobs",
        kind="int",
        help="Builds at once (default: build.jobs in the config, else the CPU count).",
        stamp="key",
    ),
    ALLOW_UNPINNED,
    Option(
        names=("--retry-failed", "--no-retry-failed"),
        dest="retry_failed",
        kind="flag",
        default=False,
        help="Build again what failed under the same cache key last time (default: a "
        "failure is kept, shown as 'failed (cached)', until its cache key changes).",
        stamp="key",
    ),
    Option(
        names=("--cache-from",),
        dest="cache_from",
        kind="str",
        multiple=True,
        metavar="URL",
        help="A devpi or prewheel index to take wheels of the same cache key from, instead "
        "of building (repeatable).",
        stamp="key",
    ),
    Option(
        names=("--check-reproducible",),
        dest="check_reproducible",
        kind="flag",
        help="Build every wheel that is built a second time, in a fresh environment, and "
        "compare the two (the members that differ are reported and recorded; diffoscope, "
        "when installed, says how).",
        stamp="never",
    ),
    REFRESH,
    Option(
        names=("--package",),
        dest="packages",
        kind="str",
        multiple=True,
        metavar="NAME",
        help="Build only these packages (a CI batch from `plan --matrix`); downloads still "
        "run, so the batch's built dependencies must be in the same batch or already "
        "published.",
        stamp="key",
    ),
    JSON,
    QUIET,
)

BY_NAME: dict[str, Option] = {name: opt for opt in BUILD_OPTIONS for name in opt.names}
