"""An nginx configuration that serves the static tree exactly as `prewheel serve` does.

Production can then serve the wheelhouse without prewheel in the request path. The PEP 691
negotiation needs real q-value handling, which nginx's `map` cannot express, so a few lines
of Perl (Debian: libnginx-mod-http-perl) pick the representation; everything else (ETag, 304,
Range, HEAD, gzip, sendfile) is nginx's own static-file handling. The chosen representation
is served through an internal location per media type, so the Content-Type is exact.
"""

from __future__ import annotations

from pathlib import Path

from ..index.status_page import STATUS_FILE
from .connection import MAX_HEAD, MAX_LINE, Limits
from .routes import FILE_CACHE_CONTROL, LOG_CACHE_CONTROL, NAME, PAGE_CACHE_CONTROL
from .server import FD_RESERVE

PERL_MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_http_perl_module.so",
    "/usr/share/nginx/modules/ngx_http_perl_module.so",
    "/etc/nginx/modules/ngx_http_perl_module.so",
)

# Mirrors routes.negotiate: most specific range wins, highest q wins, ties go to legacy HTML;
# a ?format= type replaces the Accept header (routes.format_parameter).
# No single quotes, double backslashes or \n in here: nginx's quoted-string rules apply.
_NEGOTIATE = r"""sub {
    my $r = shift;
    my $accept = $r->header_in("Accept");
    my $args = $r->args // "";
    if ($args =~ /(?:^|&)format=([^&#]*)/) {
        $accept = lc($1);
        $accept =~ s/%([0-9a-f]{2})/chr(hex($1))/eg;
        return "" if $accept =~ /[*,;]/;
    }
    return "html" if !defined($accept) || $accept =~ /^\s*$/;
    my @offers = ("text/html", "application/vnd.pypi.simple.v1+html",
                  "application/vnd.pypi.simple.v1+json");
    my (%q, %spec);
    for my $part (split /,/, $accept) {
        my ($media, @params) = split /;/, $part;
        $media = lc($media // "");
        $media =~ s/^\s+|\s+$//g;
        next unless $media =~ m{/};
        $media =~ s{^application/vnd\.pypi\.simple\.latest\+}{application/vnd.pypi.simple.v1+};
        my $q = 1;
        for my $p (@params) {
            if ($p =~ /^\s*q\s*=\s*(\S*)\s*$/i) { $q = ($1 =~ /^\d+(\.\d*)?$/) ? $1 : -1; }
        }
        next if $q < 0 || $q > 1;
        for my $o (@offers) {
            my ($major) = split m{/}, $o;
            my $s = $media eq $o ? 2 : $media eq "$major/*" ? 1 : $media eq "*/*" ? 0 : -1;
            next if $s < 0;
            if (!defined($spec{$o}) || $s > $spec{$o}) { $spec{$o} = $s; $q{$o} = $q; }
        }
    }
    my ($choice, $best) = ("", 0);
    for my $o (@offers) {
        my $q = $q{$o} // 0;
        if ($q > $best) { $choice = $o; $best = $q; }
    }
    return "" if $choice eq "";
    return $choice eq "text/html" ? "html" : $choice =~ /json$/ ? "json" : "v1html";
}"""

_CANONICAL = r"""sub {
    my $r = shift;
    my $name = lc($r->variable("pypi_project"));
    $name =~ s/[-_.]+/-/g;
    return $name;
}"""

# internal prefix, media type, page file
_VARIANTS = (
    ("json", "application/vnd.pypi.simple.v1+json", "index.json"),
    ("html", "text/html", "index.html"),
    ("v1html", "application/vnd.pypi.simple.v1+html", "index.html"),
)


def perl_module() -> str:
    """The Perl module's path on this host (Debian's by default)."""
    for candidate in PERL_MODULE_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return PERL_MODULE_CANDIDATES[0]


def nginx_config(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    state_dir: Path | None = None,
    user: str | None = None,
    workers: str = "auto",
    header_timeout: float = Limits().header_timeout,
    max_connections: int = Limits().max_connections,
) -> str:
    """A complete nginx.conf (main context) for `nginx -c FILE`.

    `state_dir` holds the pid file, logs and nginx's temp directories (default
    /tmp/prewheel-nginx-PORT); `user` is the worker user, which must be able to read `root`.
    The limits are `prewheel serve`'s: header timeout and size, keep-alive and send timeouts,
    connections per worker (nginx, out of connections, closes idle keep-alive ones first);
    the descriptor limit leaves room for a file per connection, so accept never runs out.
    Names in a URL are matched against `routes.NAME` before anything echoes them back, so a
    percent-encoded CR, LF or non-ASCII character gets 404, never a header of its own.
    """
    state = state_dir or Path(f"/tmp/prewheel-nginx-{port}")  # noqa: S108 - the default spot
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    limits = Limits()
    name_re = NAME.pattern
    variants = "\n".join(
        f"""        location /@{name}/ {{
            internal;
            alias {root}/;
            types {{ }}
            default_type "{ctype}";
            charset utf-8;
            add_header Vary "Accept" always;
            add_header Cache-Control "{PAGE_CACHE_CONTROL}" always;
        }}"""
        for name, ctype, _ in _VARIANTS
    )
    return f"""# nginx configuration generated by `prewheel serve --print-nginx-config`.
# Serves the wheelhouse {root} as `prewheel serve` does:
#   nginx -c THIS_FILE -e {state}/error.log   (needs Debian's libnginx-mod-http-perl)
# Run `prewheel index rebuild` once so that status.html exists for `/`.
load_module {perl_module()};
{f"user {user};" if user else "# user www-data;  (workers must be able to read the wheelhouse)"}
worker_processes {workers};
worker_rlimit_nofile {2 * max_connections + FD_RESERVE};
pid {state}/nginx.pid;
error_log {state}/error.log warn;

events {{
    worker_connections {max_connections};
}}

http {{
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    log_format prewheel '$remote_addr - $remote_user [$time_local] "$request" $status $bytes_sent';
    access_log {state}/access.log prewheel buffer=64k flush=1s;

    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout {limits.keepalive_timeout:g}s;
    keepalive_requests 100000;
    client_header_timeout {round(header_timeout * 1000)}ms;
    client_header_buffer_size 1k;
    large_client_header_buffers {MAX_HEAD // MAX_LINE} {MAX_LINE // 1024}k;
    send_timeout {limits.send_timeout:g}s;
    reset_timedout_connection on;
    max_ranges 1;
    server_tokens off;
    absolute_redirect off;
    etag on;
    types {{ }}
    default_type application/octet-stream;
    charset_types text/plain;
    gzip on;
    gzip_vary on;
    gzip_min_length 0;
    gzip_proxied any;
    gzip_types application/vnd.pypi.simple.v1+json application/vnd.pypi.simple.v1+html;

    perl_set $pypi_variant '{_NEGOTIATE}';
    perl_set $pypi_canonical '{_CANONICAL}';

    server {{
        listen {listen} backlog=4096 reuseport;
        root {root};
        disable_symlinks on from=$document_root;

        error_page 405 @method_not_allowed;
        if ($request_method !~ ^(GET|HEAD)$) {{
            return 405;
        }}

        error_page 406 @not_acceptable;
        location @not_acceptable {{
            default_type "text/plain; charset=utf-8";
            add_header Vary "Accept" always;
            return 406 "406 Not Acceptable\n";
        }}

        error_page 404 @not_found;
        location @not_found {{
            default_type "text/plain; charset=utf-8";
            return 404 "404 Not Found\n";
        }}

        location @method_not_allowed {{
            default_type "text/plain; charset=utf-8";
            add_header Allow "GET, HEAD" always;
            return 405 "405 Method Not Allowed\n";
        }}

        location = / {{
            default_type "text/html";
            charset utf-8;
            add_header Cache-Control "no-cache" always;
            try_files /{STATUS_FILE} =404;
        }}

        location ~ ^/(files|logs|catalog|builds)/simple(/|$) {{
            return 404;
        }}

        location ~ "^/{name_re}/simple$" {{
            return 301 $uri/;
        }}

        location ~ "^/(?<pypi_accel>{name_re})/simple/(?<pypi_project>{name_re})$" {{
            return 301 $uri/;
        }}

        location ~ "^/(?<pypi_accel>{name_re})/simple/(?:(?<pypi_project>{name_re})/)?$" {{
            if ($pypi_project != $pypi_canonical) {{
                return 301 /$pypi_accel/simple/$pypi_canonical/;
            }}
            if ($pypi_variant = "") {{
                return 406;
            }}
            rewrite ^ "/@$pypi_variant$uri${{pypi_page}}" last;
        }}

{variants}

        location ~ "^/files/[^/]+/[^/]+\\.whl$" {{
            add_header Cache-Control "{FILE_CACHE_CONTROL}" always;
        }}

        location ~ "^/files/[^/]+/[^/]+\\.whl\\.metadata$" {{
            default_type "text/plain";
            charset utf-8;
            add_header Cache-Control "{FILE_CACHE_CONTROL}" always;
        }}

        location = /targets.json {{
            default_type application/json;
            add_header Cache-Control "{LOG_CACHE_CONTROL}" always;
        }}

        location ~ "^/builds/[^/]+\\.json$" {{
            default_type application/json;
            add_header Cache-Control "{LOG_CACHE_CONTROL}" always;
        }}

        location /logs/ {{
            default_type "text/plain";
            charset utf-8;
            add_header Cache-Control "{LOG_CACHE_CONTROL}" always;
        }}

        location / {{
            return 404;
        }}
    }}

    map $pypi_variant $pypi_page {{
        json index.json;
        default index.html;
    }}
}}
"""
