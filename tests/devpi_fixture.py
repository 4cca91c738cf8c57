"""The session's devpi-server, shared by every test module that loads this plugin.

Test modules say `pytest_plugins = ["devpi_fixture"]` (tests/conftest.py belongs to the
suite as a whole); the helpers they import live in `devpi_support.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from devpi_support import DEVPI_VERSION, DevpiServer, running_devpi


@pytest.fixture(scope="session")
def devpi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevpiServer]:
    """A devpi-server on 127.0.0.1 (`.url`, `.new_user()`, `.simple_url(user, accel)`)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_devpi(tmp_path_factory.mktemp("devpi")))
        except FileNotFoundError:
            pytest.fail(
                f"devpi-server=={DEVPI_VERSION} is a declared test dependency but is not "
                "installed (pip install -e '.[test]')"
            )
        yield server
