"""`prewheel serve`: the embedded index server, or the nginx configuration that replaces it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..server import IndexServer
from ._options import wheelhouse_option


@click.command("serve")
@wheelhouse_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--quiet", "-q", is_flag=True, help="No access log.")
@click.option(
    "--print-nginx-config",
    "print_nginx",
    is_flag=True,
    help="Print an nginx configuration serving the same tree the same way, and exit.",
)
def command(wheelhouse: Path, host: str, port: int, quiet: bool, print_nginx: bool) -> None:
    """Serve the wheelhouse: http://HOST:PORT/<accel>/simple/ (PEP 503 HTML, PEP 691 JSON)."""
    if print_nginx:
        from ..nginx import nginx_config

        click.echo(nginx_config(wheelhouse.resolve(), host=host, port=port), nl=False)
        return
    server = IndexServer(wheelhouse, access_log=None if quiet else sys.stderr)
    bound = server.bind(host, port)
    click.echo(f"serving {wheelhouse} on http://{host}:{bound}/ (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
