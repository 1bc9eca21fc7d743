"""Python's ``websockets`` (its threaded sync API) as a server and as a client of
simplews (issue 7, part 4): ws and wss, with and without permessage-deflate, a
subprotocol, fragmented messages both ways, pings both ways, close codes and reasons
both ways.

``websockets`` is never imported here: it lives in its own virtualenv
(.cache/websockets-venv, made by scripts/install_peers.py), whose python runs
tests/interop/websockets_peer.py as a child process; simplews stays in this process.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict

import pytest

import simplews

import peers

pytestmark = pytest.mark.interop

# Plan items as websockets_peer.py reads them: text or hex bytes, repeated.
PLAN = [{"text": "hello"}, {"text": "h\u00e9llo \U0001F600"}, {"hex": ""},
        {"hex": "00ff", "repeat": 70}, {"text": "x", "repeat": 300_000},
        {"hex": bytes(range(256)).hex(), "repeat": 1200}]  # 300 kB each
MATRIX = [(scheme, compression) for scheme in ("ws", "wss") for compression in ("deflate", None)]
IDS = [f"{scheme}-{compression or 'plain'}" for scheme, compression in MATRIX]
SUBPROTOCOLS = ["chat.v1", "chat.v2"]  # the client's offer; servers only speak chat.v2


def message(item: Dict[str, Any]) -> Any:
    """The same message as websockets_peer.py's message()."""
    if "text" in item:
        return item["text"] * item.get("repeat", 1)
    return bytes.fromhex(item["hex"]) * item.get("repeat", 1)


MESSAGES = [message(item) for item in PLAN]


def digest(data: Any) -> Dict[str, Any]:
    """The same digest as websockets_peer.py's digest()."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return {"type": "text" if isinstance(data, str) else "binary", "length": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest()}


@pytest.fixture(scope="module")
def venv_python() -> str:
    return peers.websockets_python()  # skips (or fails in CI) if it can't be made


def start_peer(python: str, mode: str, options: Dict[str, Any], tmp_path) -> peers.LineChild:
    # No proxy for a loopback peer (websockets >= 15 would read *_proxy).
    env = {key: value for key, value in os.environ.items()
           if not key.lower().endswith("_proxy")}
    return peers.LineChild(f"websockets-{mode}",
                           [python, "-I", str(peers.INTEROP / "websockets_peer.py"), mode,
                            json.dumps(dict(options, wait=peers.WAIT))], tmp_path, env=env)


def is_deflate(header: Any) -> bool:
    return (header or "").startswith("permessage-deflate")


# ------------------------------------------------------------------ websockets server

@pytest.mark.parametrize("scheme, compression", MATRIX, ids=IDS)
def test_simplews_client_to_websockets_server(venv_python, tmp_path, scheme, compression):
    server = start_peer(venv_python, "server", {
        "tls": scheme == "wss", "compression": compression, "subprotocols": ["chat.v2"],
        "close_code": 4005, "close_reason": "websockets done"}, tmp_path)
    try:
        port = server.read_json()  # the first line: the port
        url = f"{scheme}://127.0.0.1:{port}/"
        kwargs: Dict[str, Any] = {"compression": compression, "close_timeout": 5,
                                  "subprotocols": SUBPROTOCOLS}
        if scheme == "wss":
            kwargs["ssl"] = peers.client_ssl_context()
        with simplews.connect(url, **kwargs) as ws:
            assert ws.subprotocol == "chat.v2"
            assert is_deflate(ws.response.headers.get("Sec-WebSocket-Extensions")) == \
                bool(compression)
            for sent in MESSAGES:
                ws.send(sent)
                assert ws.recv(timeout=peers.WAIT) == sent
            ws.send([b"frag", b"mented ", b"bytes"])  # a fragmented message from simplews
            assert ws.recv(timeout=peers.WAIT) == b"fragmented bytes"
            ws.send("fragments please")  # and one from websockets
            assert "".join(ws.recv_streaming(timeout=peers.WAIT)) == "fragmented text"
            ws.send("fragments please")
            assert ws.recv(timeout=peers.WAIT) == "fragmented text"
            assert ws.ping(b"from simplews").wait(peers.WAIT)
            ws.send("ping me")
            assert ws.recv(timeout=peers.WAIT) == "pinged"
            ws.close(4001, "simplews bye")
            assert ws.close_code == 4001  # websockets echoes code and reason
        opened, closed = server.read_json(), server.read_json()
        # websockets closes with 4005
        with simplews.connect(url, **kwargs) as ws:
            ws.send("close me")
            with pytest.raises(simplews.ConnectionClosedError) as raised:
                ws.recv(timeout=peers.WAIT)
            assert (raised.value.code, raised.value.reason) == (4005, "websockets done")
        second_opened, second_closed = server.read_json(), server.read_json()
    finally:
        exit_code = server.close()
    assert exit_code == 0, server.output()
    assert opened["event"] == "open" and opened["subprotocol"] == "chat.v2"
    assert ("permessage-deflate" in (opened["offer"] or "")) == bool(compression)
    assert is_deflate(opened["accepted"]) == bool(compression)
    assert closed["event"] == "close"
    assert closed["messages"] == [digest(m) for m in [*MESSAGES, b"fragmented bytes"]]
    assert closed["server_ping"] is True
    assert (closed["code"], closed["reason"]) == (4001, "simplews bye")
    assert second_opened["event"] == "open"
    assert (second_closed["event"], second_closed["code"]) == ("close", 4005)


# ------------------------------------------------------------------ websockets client

class SimplewsServer(peers.RecordingServer):
    """A simplews server answering like websockets_peer.py's: echo, plus "fragments
    please", "ping me" and "close me" (4006)."""

    def __init__(self, scheme: str, compression: Any) -> None:
        options: Dict[str, Any] = {}
        if scheme == "wss":
            # No TLS 1.3 session tickets. websockets' sync client starts its reading
            # thread right after the TLS handshake, then writes the opening request from
            # the caller's thread. When the server's tickets arrive at that moment, the
            # reader's SSL_read handles them while the writer's SSL_write runs on the same
            # SSL object, which OpenSSL does not allow. The request can then be lost: the
            # client waits until the server's open_timeout closes the connection ("did not
            # receive a valid HTTP response"), or it resets the connection. This is a client
            # bug, seen with websockets' own server too. Tickets only serve TLS session
            # resumption, which websockets_peer.py never does: the test checks all it did.
            context = peers.server_ssl_context()
            context.num_tickets = 0
            options["ssl"] = context
        super().__init__(scheme, compression=compression, subprotocols=["chat.v2"], **options)

    def handler(self, ws: simplews.Connection) -> None:
        try:
            super().handler(ws)
        except simplews.ConnectionClosed as exc:
            self.seen[-1]["closed_error"] = repr(exc)

    def respond(self, ws: simplews.Connection, message: Any, info: Dict[str, Any]) -> bool:
        if message == "fragments please":
            ws.send(["frag", "mented ", "text"])
        elif message == "ping me":
            info["server_ping"] = ws.ping(b"from simplews").wait(peers.WAIT)
            ws.send("pinged")
        elif message == "close me":
            ws.close(4006, "simplews done")
            return False
        else:
            return super().respond(ws, message, info)
        return True


@pytest.mark.parametrize("scheme, compression", MATRIX, ids=IDS)
def test_websockets_client_to_simplews_server(venv_python, tmp_path, scheme, compression):
    server = SimplewsServer(scheme, compression)
    client = None
    exit_code = None
    try:
        client = start_peer(venv_python, "client", {
            "url": server.url, "tls": scheme == "wss", "compression": compression,
            "subprotocols": SUBPROTOCOLS, "plan": PLAN,
            "close_code": 4001, "close_reason": "websockets bye"}, tmp_path)
        first, second = client.read_json(timeout=60)
    finally:
        if client is not None:
            exit_code = client.close()
        server.stop()
    assert exit_code == 0, client.output()
    assert first["error"] is None and second["error"] is None, (first, second)
    assert first["subprotocol"] == "chat.v2"
    assert is_deflate(first["extensions"]) == bool(compression)
    assert first["messages"] == [dict(digest(m), equal=True) for m in MESSAGES]
    assert first["fragmented_echo"] == digest(b"fragmented bytes")
    assert first["fragments"] == ["frag", "mented ", "text"]  # one frame per item
    assert first["pong"] is True and first["pinged"] == "pinged"
    assert first["close"] == [4001, ""]  # simplews echoes the code
    assert second["close"] == [4006, "simplews done"]
    seen, second_seen = server.seen
    assert ("permessage-deflate" in (seen["offer"] or "")) == bool(compression)
    assert is_deflate(seen["accepted"]) == bool(compression)
    assert seen["subprotocol"] == "chat.v2"
    assert seen["messages"] == [*MESSAGES, b"fragmented bytes"]
    assert seen["server_ping"] is True
    assert seen["close"] == (4001, "websockets bye")
    assert second_seen["close"][0] == 4006
