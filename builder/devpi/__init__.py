"""devpi-server, the production index: `client` speaks its HTTP API, `push` uploads a
wheelhouse (one index per accelerator), `remote_cache` finds a wheel another builder made under
the same cache key (`build --cache-from`), `remote_check` checks any served index as an
installer sees it."""
