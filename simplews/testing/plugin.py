"""The pytest plugin of simplews, registered through the ``pytest11`` entry point: installing
simplews makes these fixtures available to every test suite.

    def test_welcome(ws_fake_server):
        client = MyClient(ws_fake_server.uri)
        peer = ws_fake_server.accept()
        ...

Importing the plugin imports simplews (once per pytest run, some 80 ms); nothing starts
until a test asks for one of the fixtures.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, List

import pytest

if TYPE_CHECKING:
    from simplews.testing.server import FakeServer

__all__ = ["ws_fake_server", "ws_fake_server_factory"]


@pytest.fixture
def ws_fake_server() -> Iterator[FakeServer]:
    """A FakeServer on 127.0.0.1 and a free port (ws://), closed after the test."""
    from simplews.testing.server import FakeServer

    with FakeServer() as server:
        yield server


@pytest.fixture
def ws_fake_server_factory() -> Iterator[Callable[..., FakeServer]]:
    """Make FakeServers with arguments (``ssl=``, ``subprotocols=``...), all closed after
    the test: ``fake = ws_fake_server_factory(ssl=context)``."""
    from simplews.testing.server import FakeServer

    servers: List[FakeServer] = []

    def make(*args: Any, **kwargs: Any) -> FakeServer:
        server = FakeServer(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
