"""nginx as a reverse proxy in front of simplews (issue 7, part 2).

nginx runs in the foreground with its own prefix and config (peers.NGINX_CONF, the one
the documentation's "Behind nginx" guide, docs/nginx.rst, shows): ws on one port, wss
terminated by nginx on another, both to a plain-ws upstream. Then several simplews processes share one port
with reuse_port=True behind one upstream address.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

import pytest

import simplews

import peers

pytestmark = pytest.mark.interop


class Upstream(peers.RecordingServer):
    """A simplews server (plain ws) that records what reached it through nginx."""

    def respond(self, ws: simplews.Connection, message: Any, info: Dict[str, Any]) -> bool:
        if message == "ping me":
            info["server_ping"] = ws.ping(b"from server").wait(peers.WAIT)
            ws.send("pinged")
        elif message == "close me":
            ws.close(4001, "server done")
        else:
            ws.send(message)
        return True


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def proxy(upstream):
    nginx = peers.Nginx(f"127.0.0.1:{upstream.server.port}")
    yield nginx
    nginx.stop()


def proxied_url(nginx: peers.Nginx, scheme: str, port: int = 0) -> str:
    port = port or (nginx.tls_port if scheme == "wss" else nginx.port)
    return f"{scheme}://127.0.0.1:{port}/chat?room=1"


def client_kwargs(scheme: str) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {"close_timeout": 5}
    if scheme == "wss":
        kwargs["ssl"] = peers.client_ssl_context()
    return kwargs


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_echo_deflate_pings_and_clean_close(upstream, proxy, scheme):
    relay = peers.TcpRelay(("127.0.0.1", proxy.tls_port if scheme == "wss" else proxy.port))
    try:
        with simplews.connect(proxied_url(proxy, scheme, relay.port), **client_kwargs(scheme)) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") == \
                "permessage-deflate"
            for message in ["hello", "h\u00e9llo", b"\x00\x01\xff", b"", "x" * 200_000,
                            bytes(range(256)) * 2000]:
                ws.send(message)
                assert ws.recv(timeout=peers.WAIT) == message
            assert ws.ping(b"from client").wait(peers.WAIT)
            ws.send("ping me")
            assert ws.recv(timeout=peers.WAIT) == "pinged"
            ws.close(1000, "client done")
            assert ws.close_code == 1000
    finally:
        relay.close()
    assert upstream.done.wait(peers.WAIT)
    [seen] = upstream.seen
    assert seen["offer"] == "permessage-deflate; client_max_window_bits"  # forwarded as sent
    assert seen["path"] == "/chat?room=1"
    assert seen["forwarded_for"] == "127.0.0.1" and seen["remote"] == "127.0.0.1"
    assert seen["proto"] == ("https" if scheme == "wss" else "http")
    assert seen["server_ping"] is True
    assert seen["close"] == (1000, "client done")
    # ~1.1 MB of payload went each way; deflate kept the wire far smaller than that
    assert relay.upstream_bytes < 300_000 and relay.downstream_bytes < 300_000, \
        (relay.upstream_bytes, relay.downstream_bytes)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_close_started_by_server(upstream, proxy, scheme):
    ws = simplews.connect(proxied_url(proxy, scheme), compression=None, **client_kwargs(scheme))
    try:
        ws.send("close me")
        with pytest.raises(simplews.ConnectionClosed) as raised:
            ws.recv(timeout=peers.WAIT)
        assert (raised.value.code, raised.value.reason) == (4001, "server done")
        assert (ws.close_code, ws.close_reason) == (4001, "server done")
    finally:
        ws.close()
    assert upstream.done.wait(peers.WAIT)
    assert upstream.seen[0]["close"][0] == 4001
    assert upstream.seen[0]["offer"] is None


def test_scale_out_reuse_port_processes_behind_one_upstream(tmp_path):
    """Three simplews processes on one port (reuse_port=True); nginx's upstream is that
    one address; the kernel spreads nginx's connections over the processes."""
    peers.nginx()  # skip (or fail in CI) before starting anything if nginx is missing
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(peers.REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    script = str(peers.INTEROP / "reuseport_server.py")
    children: List[peers.LineChild] = []
    nginx = None
    clients: List[simplews.Connection] = []
    try:
        children.append(peers.LineChild("server-0", [sys.executable, script, "0"], tmp_path, env))
        first = children[0].read_json()
        port = first["port"]
        for index in (1, 2):
            children.append(peers.LineChild(f"server-{index}", [sys.executable, script, str(port)],
                                            tmp_path, env))
        pids = {first["pid"]} | {child.read_json()["pid"] for child in children[1:]}
        assert len(pids) == 3
        nginx = peers.Nginx(f"127.0.0.1:{port}")
        for scheme in ("ws", "wss") * 15:
            clients.append(simplews.connect(proxied_url(nginx, scheme), **client_kwargs(scheme)))
        answered_by: Dict[int, int] = {}
        for round_ in range(3):  # every connection open at once; each message answered
            for index, ws in enumerate(clients):
                ws.send(f"message {round_} from {index}")
            for index, ws in enumerate(clients):
                pid, text = ws.recv(timeout=peers.WAIT).split(" ", 1)
                assert text == f"message {round_} from {index}"
                answered_by[index] = int(pid)
        assert set(answered_by.values()) <= pids
        # 30 connections hashed over 3 sockets: all on one process is (1/3)^29 ~ 1e-14
        assert len(set(answered_by.values())) >= 2, answered_by
        for ws in clients:
            ws.close()
            assert ws.close_code == 1000
    finally:
        for ws in clients:
            ws.close()
        if nginx is not None:
            nginx.stop()
        codes = [child.close() for child in children]
    assert codes == [0, 0, 0], [child.output()[-1000:] for child in children]
