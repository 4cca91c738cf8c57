"""A small devpi-server client over its HTTP API, and the push of a wheelhouse to it.

devpi is the production index (users, ACLs, replicas). We speak its documented HTTP API with
the standard library rather than driving `devpi` or `twine` as subprocesses, so every failure
becomes a `PushError` whose message names the server, the user and the index involved.

Build records travel as a JSON attachment of the wheel they describe (devpi calls these
attachments "toxresult"s; they are the only per-file JSON devpi keeps), so a remote cache can
confirm a wheel's full cache key from the index alone.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.metadata import parse_email
from packaging.utils import canonicalize_name

from .. import stamp
from ..errors import PushError

CHUNK = 1 << 20
RECORD_KIND = "prewheel-build-record"

# RawMetadata key -> devpi/twine form field, for the fields whose names differ.
_FORM_NAMES = {
    "platforms": "platform",
    "supported_platforms": "supported_platform",
    "license_files": "license_file",
    "provides_extra": "provides_extras",
}


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    body: bytes
    content_type: str
    url: str

    def json(self) -> Any:
        return json.loads(self.body)

    def json_if_ok(self) -> Any:
        """The JSON body of a 200 answer; None for any other status or a body not JSON."""
        if self.status != 200:
            return None
        try:
            return self.json()
        except ValueError:
            return None

    def message(self) -> str:
        """devpi's own explanation of an error, for our error messages."""
        try:
            data = self.json()
        except ValueError:
            return self.body.decode("utf-8", "replace").strip()[:300]
        return str(data.get("message", data)) if isinstance(data, dict) else str(data)


class Unreachable(Exception):
    """The server could not be reached at all (refused, DNS, timeout)."""


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    timeout: float = 60.0,
) -> Response:
    """One HTTP exchange; HTTP error statuses are returned, not raised, so callers decide."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Unreachable(f"{url}: only http:// and https:// URLs are supported")
    stamp.volatile(url)
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(
                status=resp.status,
                body=resp.read(),
                content_type=resp.headers.get("Content-Type", ""),
                url=resp.url,
            )
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return Response(
            status=exc.code,
            body=data,
            content_type=exc.headers.get("Content-Type", "") if exc.headers else "",
            url=url,
        )
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{url}: {reason}") from exc


@dataclass(frozen=True, kw_only=True)
class DevpiFile:
    """A release file of a devpi index, with the build records attached to it."""

    filename: str
    url: str
    sha256: str | None
    record_urls: tuple[str, ...] = ()


def _multipart(
    fields: list[tuple[str, str]], file_field: str, path: Path
) -> tuple[str, int, Iterator[bytes]]:
    """A streamed multipart/form-data body: (content type, length, chunks)."""
    boundary = uuid.uuid4().hex
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode()
        + v.encode()
        + b"\r\n"
        for k, v in fields
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        yield tail

    return f"multipart/form-data; boundary={boundary}", length, chunks()


def metadata_form(metadata: bytes) -> list[tuple[str, str]]:
    """The wheel's core metadata as upload form fields, as twine sends them.

    devpi keeps these per release and serves `requires_python` as `data-requires-python`,
    which installers need to skip wheels for other Pythons.
    """
    raw, _ = parse_email(metadata)
    out: list[tuple[str, str]] = []
    for key, value in raw.items():
        name = _FORM_NAMES.get(key, key)
        if key == "project_urls" and isinstance(value, dict):
            out += [("project_urls", f"{label}, {url}") for label, url in value.items()]
        elif key == "keywords" and isinstance(value, list):
            out.append(("keywords", ",".join(value)))
        elif isinstance(value, list):
            out += [(name, str(v)) for v in value]
        elif isinstance(value, str):
            out.append((name, value))
    return out


@dataclass
class DevpiClient:
    """A logged-in session with one devpi-server. Methods raise `PushError`."""

    url: str
    timeout: float = 60.0
    user: str | None = None
    _auth: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/") + "/"

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        h = {"Accept": accept}
        if self._auth:
            h["X-Devpi-Auth"] = self._auth
        return h

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        accept: str = "application/json",
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        url = path if "://" in path else urllib.parse.urljoin(self.url, path.lstrip("/"))
        h = {**self._headers(accept), **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        try:
            return http_request(method, url, headers=h, body=body, timeout=self.timeout)
        except Unreachable as exc:
            raise PushError(
                f"cannot reach devpi-server at {self.url} ({exc})",
                hint="check the --devpi URL and that devpi-server is running",
            ) from exc

    def check_server(self) -> None:
        """Fail early, with a clear message, when the URL is not a devpi-server."""
        resp = self.request("GET", "+api")
        if resp.status != 200 or "apiconfig" not in resp.body.decode("utf-8", "replace"):
            raise PushError(
                f"{self.url} does not look like a devpi-server (GET +api: HTTP {resp.status})",
                hint="pass the server root, e.g. http://host:3141/",
            )

    def login(self, user: str, password: str) -> None:
        resp = self.request("POST", "+login", json_body={"user": user, "password": password})
        if resp.status == 401:
            raise PushError(
                f"devpi-server at {self.url} refused the login of user {user!r}: {resp.message()}",
                hint="check --user and the password in the --password-env variable",
            )
        if resp.status != 200:
            raise PushError(f"login to {self.url} failed: HTTP {resp.status} {resp.message()}")
        token = resp.json()["result"]["password"]
        self.user = user
        self._auth = base64.b64encode(f"{user}:{token}".encode()).decode()

    def create_user(self, user: str, password: str, email: str = "") -> None:
        """Used by tests and first-time setup; normally an admin creates users."""
        resp = self.request("PUT", user, json_body={"password": password, "email": email})
        if resp.status not in (200, 201):
            raise PushError(f"cannot create user {user!r}: HTTP {resp.status} {resp.message()}")

    def get_index(self, user: str, index: str) -> dict[str, Any] | None:
        resp = self.request("GET", f"{user}/{index}")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise PushError(f"cannot read index {user}/{index}: HTTP {resp.status}")
        result: dict[str, Any] = resp.json()["result"]
        return result

    def create_index(self, user: str, index: str, *, bases: tuple[str, ...] = ()) -> None:
        """A non-volatile stage: a file name, once uploaded, can never change its bytes."""
        config = {
            "type": "stage",
            "bases": list(bases),
            "volatile": False,
            "acl_upload": [user],
            "acl_toxresult_upload": [user],
        }
        resp = self.request("PUT", f"{user}/{index}", json_body=config)
        if resp.status in (401, 403):
            raise PushError(
                f"user {self.user!r} may not create index {user}/{index} on {self.url}: "
                f"{resp.message()}",
                hint="ask the devpi admin to create the index or grant the permission",
            )
        if resp.status not in (200, 201):
            raise PushError(
                f"cannot create index {user}/{index}: HTTP {resp.status} {resp.message()}"
            )

    def list_files(self, user: str, index: str, project: str) -> dict[str, DevpiFile]:
        """Release files of `project` on the index itself (not its bases), by file name."""
        name = canonicalize_name(project)
        resp = self.request("GET", f"{user}/{index}/{name}")
        if resp.status == 404:
            return {}
        if resp.status != 200:
            raise PushError(f"cannot list {name} on {user}/{index}: HTTP {resp.status}")
        return files_from_project_json(resp.json().get("result", {}))

    def upload(self, user: str, index: str, wheel: Path, *, sha256: str, metadata: bytes) -> bool:
        """Upload one file with the `file_upload` form twine uses; identical bytes are a no-op.

        Returns False when the index already holds other bytes under this name (HTTP 409):
        with parallel CI jobs that can happen between our listing and our upload.
        """
        fields = [
            (":action", "file_upload"),
            ("protocol_version", "1"),
            ("filetype", "bdist_wheel"),
            ("pyversion", "py3"),
            ("sha256_digest", sha256),
            *metadata_form(metadata),
        ]
        ctype, length, chunks = _multipart(fields, "content", wheel)
        resp = self.request(
            "POST",
            f"{user}/{index}/",
            body=chunks,
            accept="*/*",
            headers={"Content-Type": ctype, "Content-Length": str(length)},
        )
        if resp.status == 200:
            return True
        if resp.status == 409:
            return False
        if resp.status in (401, 403):
            raise PushError(
                f"user {self.user!r} may not upload to {user}/{index}: HTTP {resp.status}",
                hint="the index's acl_upload must include the user",
            )
        raise PushError(
            f"upload of {wheel.name} to {user}/{index} failed: HTTP {resp.status} {resp.message()}"
        )

    def attach_record(self, file_url: str, record: dict[str, Any]) -> None:
        resp = self.request("POST", file_url, json_body=record)
        if resp.status != 200:
            raise PushError(
                f"cannot attach the build record to {file_url}: HTTP {resp.status} {resp.message()}"
            )


def _uploader(link: dict[str, Any]) -> str | None:
    for entry in link.get("log", []):
        if entry.get("what") == "upload":
            who = entry.get("who")
            return str(who) if who else None
    return None


def files_from_project_json(result: dict[str, Any]) -> dict[str, DevpiFile]:
    """Release files and their attached records from devpi's project JSON (`GET /u/i/p`).

    Only records attached by the user who uploaded the file count: on an index that lets
    anyone attach results, a stranger's record must not vouch for a wheel's cache key.
    """
    files: dict[str, tuple[DevpiFile, str | None]] = {}
    records: list[tuple[str, str, str | None]] = []  # (for_href, href, uploader)
    for verdata in result.values():
        if not isinstance(verdata, dict):
            continue
        for link in verdata.get("+links", []):
            href = link.get("href", "")
            if link.get("rel") == "releasefile":
                fname = href.rsplit("/", 1)[-1]
                sha = link.get("hashes", {}).get("sha256")
                files[fname] = (DevpiFile(filename=fname, url=href, sha256=sha), _uploader(link))
            elif link.get("rel") == "toxresult":
                records.append((link.get("for_href", ""), href, _uploader(link)))
    return {
        n: DevpiFile(
            filename=f.filename,
            url=f.url,
            sha256=f.sha256,
            record_urls=tuple(h for fo, h, who in records if fo == f.url and who == owner),
        )
        for n, (f, owner) in files.items()
    }


def record_attachment(
    *, filename: str, sha256: str, cache_key: str, record: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON attached to an uploaded wheel: its full cache key, and the build record."""
    return {
        "kind": RECORD_KIND,
        "filename": filename,
        "sha256": sha256,
        "cache_key": cache_key,
        "record": record,
    }


def client_config(index_url: str) -> dict[str, str]:
    """pip.conf and uv.toml text that point installers at one pushed index, wheels only."""
    pip = f"[global]\nindex-url = {index_url}\nonly-binary = :all:\n"
    uv = f'no-build = true\n\n[[index]]\nurl = "{index_url}"\ndefault = true\n'
    return {"pip.conf": pip, "uv.toml": uv}
