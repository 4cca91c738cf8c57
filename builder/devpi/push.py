"""Push a wheelhouse to devpi-server: one index per accelerator, nothing overwritten, verified.

The order is chosen so a failure is never silent: every index is checked (or created) before
the first upload, conflicts are found before anything is sent, and a failure mid-way raises
with the list of what did and did not reach the server. Re-running uploads only what is
missing, so the fix for any interruption is to run push again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

from ..errors import PushError
from ..index.tree import listing
from ..records import BuildRecord
from ..wheelfile import read_metadata
from ..wheelhouse import CatalogEntry, Wheelhouse
from .client import DevpiClient, DevpiFile, record_attachment


@dataclass(frozen=True, kw_only=True)
class PushItem:
    index: str  # "user/accel"
    filename: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"index": self.index, "filename": self.filename, "sha256": self.sha256}


@dataclass(kw_only=True)
class PushReport:
    """What a push did; `ok` is False when a file was refused or failed verification."""

    server: str
    index_urls: dict[str, str] = field(default_factory=dict)  # accel -> +simple/ URL
    created: list[str] = field(default_factory=list)
    uploaded: list[PushItem] = field(default_factory=list)
    skipped: list[PushItem] = field(default_factory=list)
    records: list[PushItem] = field(default_factory=list)
    conflicts: list[tuple[PushItem, str]] = field(default_factory=list)  # (local, remote sha)
    verify_failures: list[tuple[PushItem, str | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.verify_failures

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "ok": self.ok,
            "index_urls": self.index_urls,
            "created": self.created,
            "uploaded": [i.to_json() for i in self.uploaded],
            "skipped": [i.to_json() for i in self.skipped],
            "records": [i.to_json() for i in self.records],
            "conflicts": [{**i.to_json(), "remote_sha256": r} for i, r in self.conflicts],
            "verify_failures": [
                {**i.to_json(), "remote_sha256": r} for i, r in self.verify_failures
            ],
            "warnings": self.warnings,
        }


def _may(acl: list[str], user: str) -> bool:
    """Whether an ACL lets `user` act; group entries (":name:") cannot be checked from here."""
    return (
        user in acl
        or user == "root"
        or ":ANONYMOUS:" in acl
        or ":AUTHENTICATED:" in acl
        or any(a.startswith(":") and a not in (":ANONYMOUS:", ":AUTHENTICATED:") for a in acl)
    )


def _ensure_index(
    client: DevpiClient, user: str, accel: str, bases: tuple[str, ...], report: PushReport
) -> bool:
    """Create the index if missing; refuse early when the user could not upload to it.

    Returns whether build records can be attached there. Checking every index before the
    first upload is what keeps a permission problem from leaving a half-pushed closure.
    """
    name = f"{user}/{accel}"
    config = client.get_index(user, accel)
    if config is None:
        client.create_index(user, accel, bases=bases)
        report.created.append(name)
        return True
    if config.get("type") != "stage":
        raise PushError(f"{name} on {client.url} is a {config.get('type')} index, not a stage")
    if not _may(list(config.get("acl_upload", [])), user):
        raise PushError(
            f"user {user!r} has no upload permission on {name} "
            f"(acl_upload: {', '.join(config.get('acl_upload', [])) or 'nobody'})",
            hint=f"devpi index {name} acl_upload={user}  (as the index owner or root)",
        )
    return _may(list(config.get("acl_toxresult_upload", [])), user)


def push_wheelhouse(
    wh: Wheelhouse,
    client: DevpiClient,
    *,
    user: str,
    accels: list[str] | None = None,
    bases: tuple[str, ...] = (),
    on_event: Callable[[str], None] | None = None,
) -> PushReport:
    """Upload every wheel the user's per-accelerator indexes lack, then verify the server.

    The wheels pushed are those the static index lists (the newest build per version and
    tags; yanked ones are left out), so devpi and `prewheel serve` offer installers the same
    files. `client` must be logged in. Identical files are skipped; a different file under an
    existing name is refused and reported, never replaced. A failure mid-way raises
    `PushError` naming what was uploaded and what was not.
    """

    def say(msg: str) -> None:
        if on_event is not None:
            on_event(msg)

    report = PushReport(server=client.url)
    wanted = accels if accels is not None else wh.accelerators()
    plan: dict[str, list[tuple[str, CatalogEntry]]] = {}
    for accel in wanted:
        for project in wh.projects():
            for entry in listing(wh, project, accel):  # what the static index lists
                if entry.yanked is not False:
                    if (
                        note := f"{entry.filename} is yanked here; not pushed"
                    ) not in report.warnings:
                        report.warnings.append(note)
                    continue
                plan.setdefault(accel, []).append((project, entry))
    records_ok: dict[str, bool] = {}
    for accel in plan:
        records_ok[accel] = _ensure_index(client, user, accel, bases, report)
        report.index_urls[accel] = f"{client.url}{user}/{accel}/+simple/"
        if not records_ok[accel]:
            report.warnings.append(
                f"{user}/{accel}: no permission to attach build records; wheels only"
            )

    todo: list[tuple[str, str, PushItem, CatalogEntry, DevpiFile | None]] = []
    listings: dict[tuple[str, str], dict[str, DevpiFile]] = {}
    for accel, items in plan.items():
        for project, entry in items:
            key = (accel, project)
            if key not in listings:
                listings[key] = client.list_files(user, accel, project)
            item = PushItem(index=f"{user}/{accel}", filename=entry.filename, sha256=entry.sha256)
            remote = listings[key].get(entry.filename)
            if remote is not None and remote.sha256 != entry.sha256:
                report.conflicts.append((item, remote.sha256 or "unknown"))
                say(f"refused {entry.filename}: {item.index} holds other bytes under this name")
                continue
            todo.append((accel, project, item, entry, remote))

    done: list[PushItem] = []
    for accel, project, item, entry, remote in todo:
        try:
            if remote is None:
                wheel = wh.root / entry.path
                say(f"upload {item.filename} -> {item.index}")
                meta = read_metadata(wheel)
                if not client.upload(user, accel, wheel, sha256=entry.sha256, metadata=meta):
                    now = client.list_files(user, accel, project).get(item.filename)
                    report.conflicts.append((item, (now and now.sha256) or "unknown"))
                    say(f"refused {item.filename}: {item.index} got other bytes meanwhile")
                    continue
                report.uploaded.append(item)
                done.append(item)
            else:
                report.skipped.append(item)
            if entry.cache_key and records_ok[accel] and not (remote and remote.record_urls):
                _attach(client, user, accel, entry, wh.read_record(entry.cache_key))
                report.records.append(item)
        except PushError as exc:
            left = [i.filename for _, _, i, _, r in todo if r is None and i not in done]
            raise PushError(
                f"push stopped at {item.filename} on {item.index}: {exc.message}\n"
                f"  uploaded before the failure ({len(done)}): "
                f"{', '.join(i.filename for i in done) or 'none'}\n"
                f"  not uploaded ({len(left)}): {', '.join(left) or 'none'}",
                hint=exc.hint
                or "fix the cause and run push again; it uploads only what is missing",
            ) from exc

    _verify(client, user, report)
    return report


def _attach(
    client: DevpiClient,
    user: str,
    accel: str,
    entry: CatalogEntry,
    record: BuildRecord | None,
) -> None:
    assert entry.cache_key is not None
    files = client.list_files(user, accel, parse_project(entry.filename))
    remote = files.get(entry.filename)
    if remote is None:
        raise PushError(f"{entry.filename} is missing on {user}/{accel} right after its upload")
    client.attach_record(
        remote.url,
        record_attachment(
            filename=entry.filename,
            sha256=entry.sha256,
            cache_key=entry.cache_key,
            record=record.to_json() if record is not None else None,
        ),
    )


def parse_project(filename: str) -> str:
    return str(canonicalize_name(parse_wheel_filename(filename)[0]))


def _verify(client: DevpiClient, user: str, report: PushReport) -> None:
    """Re-read the server: every file we uploaded or rely on must carry our sha256."""
    listings: dict[tuple[str, str], dict[str, DevpiFile]] = {}
    for item in [*report.uploaded, *report.skipped]:
        accel = item.index.split("/", 1)[1]
        key = (accel, parse_project(item.filename))
        if key not in listings:
            listings[key] = client.list_files(user, accel, key[1])
        remote = listings[key].get(item.filename)
        got = remote.sha256 if remote else None
        if got != item.sha256:
            report.verify_failures.append((item, got))
