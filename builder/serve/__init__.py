"""Serving the static index: `routes` maps a request to a response (pure, testable without a
socket), `server` runs it on asyncio with sendfile, `nginx` writes the configuration that
serves the same tree the same way without prewheel in the request path."""
