"""`prewheel serve`: the embedded index server, or the nginx configuration that replaces it."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from .. import index
from ..errors import PrewheelError
from ..serve.connection import Limits
from ..serve.nginx import nginx_config
from ..serve.server import connection_cap, listen_socket, raise_fd_limit, serve
from ..wheelhouse import Wheelhouse
from ._options import wheelhouse_option


@click.command("serve")
@wheelhouse_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default="0: one per CPU core",
    help="Worker processes, each listening on the port with its own socket (SO_REUSEPORT).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=None,
    show_default="4096, fewer if the file descriptor limit is lower",
    help="Open connections per worker; past it, a new client gets in by closing the one that "
    "has been idle longest.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=1),
    default=Limits().header_timeout,
    show_default=True,
    help="Seconds a client has to send a request's headers; slower clients are closed.",
)
@click.option("--quiet", "-q", is_flag=True, help="No access log and no warnings.")
@click.option(
    "--print-nginx-config",
    "print_nginx",
    is_flag=True,
    help="Print an nginx configuration serving the same tree the same way, and exit.",
)
def command(
    wheelhouse: Path,
    host: str,
    port: int,
    workers: int,
    max_connections: int | None,
    header_timeout: float,
    quiet: bool,
    print_nginx: bool,
) -> None:
    """Serve the wheelhouse: http://HOST:PORT/<accel>/simple/ (PEP 503 HTML, PEP 691 JSON).

    The status page is at http://HOST:PORT/. With --print-nginx-config, print an nginx
    configuration that serves the same tree the same way, with the same limits (needs
    libnginx-mod-http-perl). Stops on Ctrl-C or SIGTERM (exit 0).
    """
    if print_nginx:
        config = nginx_config(
            wheelhouse.resolve(), host=host, port=port, header_timeout=header_timeout,
            max_connections=max_connections or Limits().max_connections,
        )  # fmt: skip
        click.echo(config, nl=False)
        return
    wh = Wheelhouse(wheelhouse)
    try:
        index.ensure(wh)
    except OSError as exc:  # a read-only wheelhouse is served as it is
        click.echo(f"warning: cannot write missing index pages: {exc}", err=True)
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        raise PrewheelError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = sock.getsockname()[1]
    n = workers or os.cpu_count() or 1
    cap, warning = connection_cap(max_connections, *raise_fd_limit())
    if warning and not quiet:
        click.echo(f"warning: {warning}", err=True)
    limits = Limits(header_timeout=header_timeout, max_connections=cap)
    click.echo(
        f"serving {wheelhouse} on http://{host}:{bound}/ with {n} worker(s) (Ctrl-C to stop)",
        err=True,
    )  # the first line: scripts read the URL from it
    if not wh.catalog_dir.is_dir():  # a mistyped path, or nothing built there yet
        click.echo(
            f"warning: {wheelhouse} holds no wheelhouse (nothing was built into it): every "
            "index stays empty until a build publishes there",
            err=True,
        )
    with contextlib.suppress(KeyboardInterrupt):
        serve(wheelhouse, sock, workers=n, access_log=None if quiet else sys.stderr, limits=limits)
