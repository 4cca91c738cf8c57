"""`prewheel serve`: the embedded index server, or the nginx configuration that replaces it."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from .. import index
from ..errors import PrewheelError
from ..serve.nginx import nginx_config
from ..serve.server import listen_socket, serve
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
    help="Worker processes sharing the listening socket.",
)
@click.option("--quiet", "-q", is_flag=True, help="No access log.")
@click.option(
    "--print-nginx-config",
    "print_nginx",
    is_flag=True,
    help="Print an nginx configuration serving the same tree the same way, and exit.",
)
def command(
    wheelhouse: Path, host: str, port: int, workers: int, quiet: bool, print_nginx: bool
) -> None:
    """Serve the wheelhouse: http://HOST:PORT/<accel>/simple/ (PEP 503 HTML, PEP 691 JSON).

    The status page is at http://HOST:PORT/. With --print-nginx-config, print an nginx
    configuration that serves the same tree the same way (needs libnginx-mod-http-perl).
    """
    if print_nginx:
        click.echo(nginx_config(wheelhouse.resolve(), host=host, port=port), nl=False)
        return
    try:
        index.ensure(Wheelhouse(wheelhouse))
    except OSError as exc:  # a read-only wheelhouse is served as it is
        click.echo(f"warning: cannot write missing index pages: {exc}", err=True)
    try:
        sock = listen_socket(host, port)
    except OSError as exc:
        raise PrewheelError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = sock.getsockname()[1]
    n = workers or os.cpu_count() or 1
    click.echo(
        f"serving {wheelhouse} on http://{host}:{bound}/ with {n} worker(s) (Ctrl-C to stop)",
        err=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(wheelhouse, sock, workers=n, access_log=None if quiet else sys.stderr)
