"""Node's ``ws`` (npm) as a server and as a client of simplews (issue 7, part 3).

tests/interop/node_server.js and node_client.js run under node with NODE_PATH set to
the ``ws`` that scripts/install_peers.py puts in .cache/node (peers.node_ws()).
permessage-deflate is on at both ends (``threshold: 0`` so that ``ws`` compresses every message), with its
defaults and with the no-context-takeover and window-bits parameters, asked for by
either side; and off.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import pytest

import simplews
from simplews import DeflateConfig

import peers

pytestmark = pytest.mark.interop

KB500 = 500_000
PARAMS = DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True,
                       server_max_window_bits=10, client_max_window_bits=9)
NODE_PARAMS = {"threshold": 0, "serverNoContextTakeover": True, "clientNoContextTakeover": True,
               "serverMaxWindowBits": 10, "clientMaxWindowBits": 9}
PARAMS_HEADER = ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                 "server_max_window_bits=10; client_max_window_bits=9")

# (id, node's perMessageDeflate, simplews' compression, the response header when
# simplews is the client, the one when simplews is the server): defaults, the four
# parameters asked for by ws, the same asked for by simplews, no compression.
# A simplews server does not repeat a client's client_max_window_bits=9 (RFC 7692
# §7.1.2.2: the client stays within what it offered anyway).
CASES = [
    ("deflate-defaults", {"threshold": 0}, "deflate",
     "permessage-deflate", "permessage-deflate"),
    ("deflate-params-node", NODE_PARAMS, "deflate",
     PARAMS_HEADER, PARAMS_HEADER.replace("; client_max_window_bits=9", "")),
    ("deflate-params-simplews", {"threshold": 0}, PARAMS, PARAMS_HEADER, PARAMS_HEADER),
    ("no-deflate", False, None, None, None),
]
SCHEMES = ["ws", "wss"]


def pattern(n: int) -> bytes:
    """The same bytes as node_common.js's pattern()."""
    return bytes((i * 7 + 3) & 255 for i in range(256)) * (n // 256) + \
        bytes((i * 7 + 3) & 255 for i in range(n % 256))


PLAN = [{"text": "hello"}, {"text": "h\u00e9llo \U0001F600"}, {"binary": 0}, {"binary": 125},
        {"text": "simplews and ws ", "repeat": KB500 // 16}, {"binary": KB500},
        *({"text": f"again {i} " * 20} for i in range(10))]


def plan_messages() -> List[Any]:
    return [item["text"] * item.get("repeat", 1) if "text" in item else pattern(item["binary"])
            for item in PLAN]


def node_env() -> Dict[str, str]:
    _, modules = peers.node_ws()
    return dict(os.environ, NODE_PATH=str(modules))


def start_node(name: str, script: str, options: Dict[str, Any], tmp_path) -> peers.LineChild:
    node, _ = peers.node_ws()
    return peers.LineChild(name, [node, str(peers.INTEROP / script), json.dumps(options)],
                           tmp_path, env=node_env())


def normalize(header: Optional[str]) -> Optional[str]:
    """Extension header -> a comparable form ("; " separated, sorted parameters)."""
    if not header:
        return None
    name, *params = [part.strip() for part in header.split(";")]
    return "; ".join([name, *sorted(params)])


# ------------------------------------------------------------------ ws server, simplews client

@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case_id, node_config, simplews_config, expected, _", CASES,
                         ids=[case[0] for case in CASES])
def test_simplews_client_to_node_ws_server(tmp_path, scheme, case_id, node_config,
                                           simplews_config, expected, _):
    server = start_node("node-server", "node_server.js",
                        {"tls": scheme == "wss", "perMessageDeflate": node_config,
                         "protocols": ["chat.v2"]}, tmp_path)
    try:
        port = server.read_json()["port"]
        url = f"{scheme}://127.0.0.1:{port}/"
        kwargs: Dict[str, Any] = {"compression": simplews_config, "close_timeout": 5,
                                  "subprotocols": ["chat.v1", "chat.v2"]}
        if scheme == "wss":
            kwargs["ssl"] = peers.client_ssl_context()
        # 1: the plan, then our close with 4001
        with simplews.connect(url, **kwargs) as ws:
            assert ws.subprotocol == "chat.v2"
            negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert normalize(negotiated) == normalize(expected)
            assert ws.ping(b"from simplews").wait(peers.WAIT)
            for message in plan_messages():
                ws.send(message)
                assert ws.recv(timeout=peers.WAIT) == message
            ws.send(["frag", "mented ", "text"])
            assert ws.recv(timeout=peers.WAIT) == "fragmented text"
            ws.close(4001, "simplews bye")
        opened = server.read_json()
        assert opened["event"] == "open" and opened["protocol"] == "chat.v2"
        assert normalize(opened["offer"]) == normalize(ws.request.headers.get(
            "Sec-WebSocket-Extensions"))
        assert ping_then_close(server) == {"event": "close", "code": 4001,
                                           "reason": "simplews bye",
                                           "messages": len(PLAN) + 1}
        # 2: node closes with 4002
        with simplews.connect(url, **kwargs) as ws:
            ws.send("close me")
            with pytest.raises(simplews.ConnectionClosed) as raised:
                ws.recv(timeout=peers.WAIT)
            assert (raised.value.code, raised.value.reason) == (4002, "node server done")
        assert server.read_json()["event"] == "open"
        assert server.read_json()["code"] == 4002
    finally:
        server.close()


def ping_then_close(server: peers.LineChild) -> Dict[str, Any]:
    event = server.read_json()
    assert event == {"event": "ping", "data": "from simplews"}
    return server.read_json()


# ------------------------------------------------------------------ simplews server, ws client

class SimplewsServer(peers.RecordingServer):
    """Echoes; closes with 4003 on "close me"."""

    def __init__(self, scheme: str, compression: Any) -> None:
        super().__init__(scheme, url_host="localhost", compression=compression,
                         subprotocols=["chat.v2"])

    def respond(self, ws: simplews.Connection, message: Any, info: Dict[str, Any]) -> bool:
        if message == "close me":
            ws.close(4003, "simplews server done")
            return False
        return super().respond(ws, message, info)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case_id, node_config, simplews_config, _, expected", CASES,
                         ids=[case[0] for case in CASES])
def test_node_ws_client_to_simplews_server(tmp_path, scheme, case_id, node_config,
                                           simplews_config, _, expected):
    server = SimplewsServer(scheme, simplews_config)
    client = None
    try:
        client = start_node("node-client", "node_client.js", {
            "url": server.url, "tls": scheme == "wss", "perMessageDeflate": node_config,
            "protocols": ["chat.v1", "chat.v2"],
            "runs": [{"plan": PLAN, "finish": {"client": [4001, "node bye"]}},
                     {"plan": [], "finish": {"request": "close me"}}]}, tmp_path)
        first, second = client.read_json(timeout=60)
    finally:
        if client is not None:
            assert client.close() == 0, client.output()
        server.stop()
    assert first["opened"] and not first["errors"], first
    assert first["protocol"] == "chat.v2" and first["pong"] == "from node"
    assert [m["equal"] for m in first["messages"]] == [True] * len(PLAN), first["messages"]
    assert [m["length"] for m in first["messages"]][4:6] == [KB500 - KB500 % 16, KB500]
    assert first["close"]["code"] == 4001  # simplews echoes the code
    seen = server.seen[0]
    assert seen["messages"] == plan_messages()
    assert seen["close"] == (4001, "node bye")
    assert normalize(seen["accepted"]) == normalize(expected)
    # ws reports the names of the negotiated extensions only
    assert first["extensions"] == ("permessage-deflate" if expected else "")
    assert second["close"] == {"code": 4003, "reason": "simplews server done"}
    assert server.seen[1]["close"][0] == 4003
