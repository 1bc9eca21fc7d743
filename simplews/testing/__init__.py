"""simplews.testing: a fake server for testing WebSocket clients, a raw client for testing
WebSocket servers, and a pytest plugin (the ``ws_fake_server`` fixture).

    from simplews.testing import FakeServer

    with FakeServer() as fake:              # ws://127.0.0.1:<free port>/
        client = MyClient(fake.uri)
        peer = fake.accept(timeout=5)       # the next client, after its handshake
        peer.send("welcome")
        assert peer.recv(timeout=5) == "subscribe"
        peer.close(4001, "bye")

Every peer and raw client has one reader thread of its own; everything is closed and
joined at the end of the ``with`` block (or by ``close()``).
"""
from simplews.frames import Opcode

from .client import RawClient
from .recorder import RecordedFrame
from .server import FakeServer, Peer
from .wire import DEFAULT_TIMEOUT, WireEnd

__all__ = ["FakeServer", "Peer", "RawClient", "RecordedFrame", "WireEnd", "Opcode", "DEFAULT_TIMEOUT"]
