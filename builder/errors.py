"""Every error prewheel raises on purpose, with the exit code the CLI uses for it.

The library raises; only `builder.cli` catches, prints and exits.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# A file's bytes did not match the sha256 the index or a --hash pin promised: a supply-chain
# problem, not a build problem, so CI can tell them apart. Nothing of that package is
# published (when found while resolving, nothing at all).
EXIT_HASH_MISMATCH = 3
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM (CI cancel, docker stop)


class PrewheelError(Exception):
    """Base class: a message for the user and, where one exists, a hint that names the fix."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(PrewheelError):
    """The configuration file is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[str], *, source: str) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} configuration problem(s):\n{lines}")


class RequirementsError(PrewheelError):
    """A requirements file or lock is malformed, unpinned or names something unknown."""


class TargetError(PrewheelError):
    """A target cannot be used (unknown name, missing interpreter or toolkit)."""


class ResolutionError(PrewheelError):
    """The closure could not be resolved against the upstream index."""


class UpstreamError(PrewheelError):
    """The upstream index could not be read."""


class ConstraintError(PrewheelError):
    """A target's closure pins a version that a package's `requires` in the config excludes."""


class StepError(PrewheelError):
    """One package failed a step (fetch, build, repair, verify); the others go on.

    `check` names the check that caught a wheel which built but would not work where it
    lands ("werror", "abi", "import", "smoke"), so reports can count what each one caught.
    """

    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        step: str,
        log: str | None = None,
        tail: str = "",
        hint: str | None = None,
        check: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        self.log = log
        self.tail = tail
        self.check = check


def moved_log(error: PrewheelError, old: str, new: str) -> None:
    """`error` told of its step's log at `new`, where the log at `old` was copied or
    appended: its message, and for a step's error the log it names."""
    error.message = error.message.replace(old, new)
    if isinstance(error, StepError) and error.log is not None:
        error.log = new


class CommandError(StepError):
    """A subprocess failed or ran out of time."""


class CommandTimeout(CommandError):
    """A subprocess ran past its time limit and was killed with its whole process group."""


class CommandCancelled(CommandError):
    """A subprocess whose answer was no longer needed, killed with its whole process group
    (its caller set the `cancel` it was run with)."""


class HashMismatchError(StepError):
    """Downloaded bytes do not match the hash the index or the lock promised."""

    exit_code = EXIT_HASH_MISMATCH


class ToolMissingError(PrewheelError):
    """A program prewheel runs is not installed where it looks (its own environment, PATH)."""


class WheelhouseError(PrewheelError):
    """The wheelhouse is damaged or cannot be written."""


class WheelhouseWriteError(WheelhouseError):
    """A write into the wheelhouse failed (read-only, disk full): the run stops, since every
    later publish would fail the same way. Nothing is half-written (writes are atomic)."""


class SandboxError(PrewheelError):
    """The sandbox the configuration asks for cannot be made on this machine."""


class PushError(PrewheelError):
    """Uploading to a devpi-server failed."""


class ImageError(PrewheelError):
    """An image archive, or the rules to audit it by, cannot be read (nothing was judged)."""


class Interrupted(KeyboardInterrupt):
    """The run was told to stop (SIGINT or SIGTERM): no new work starts, nothing more is
    published, every child's process tree is ended. A KeyboardInterrupt, so that nothing that
    catches errors catches it by mistake."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == 15 else EXIT_INTERRUPTED
