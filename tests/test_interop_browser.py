"""Headless Chromium as a client of simplews servers (issue 7, part 1).

The browser loads a page from a plain HTTP server on 127.0.0.1, then runs
tests/interop/browser.js through chromedriver (execute/async): it opens a WebSocket
to the server under test and reports what it saw. wss:// trusts the
test certificate with --ignore-certificate-errors-spki-list, and a server with another
certificate is refused.
"""
from __future__ import annotations

import http.server
import threading
from typing import Any, Dict, List, Optional

import pytest

import simplews
from simplews import DeflateConfig

import peers

pytestmark = pytest.mark.interop

SCRIPT = (peers.INTEROP / "browser.js").read_text() + """
const done = arguments[arguments.length - 1];
simplewsRun(arguments[0], arguments[1], arguments[2], arguments[3])
  .then(done, (error) => done({exception: String(error)}));
"""
PAGE = b"<!doctype html><meta charset=utf-8><title>simplews interop</title><p>simplews interop"
MiB = 2 ** 20


class PageHandler(http.server.BaseHTTPRequestHandler):
    """The page the browser runs the tests in (a plain HTTP origin on 127.0.0.1)."""

    timeout = 5  # idle keep-alive / preconnected sockets from Chromium

    def do_GET(self) -> None:
        found = self.path == "/"
        body = PAGE if found else b"not found"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    spki = [peers.spki_sha256(peers.CERTS / "server.pem")]
    browser = peers.Browser(spki)  # skips (or fails in CI) if Chromium is not installed
    page_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=page_server.serve_forever, name="page-server")
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{page_server.server_address[1]}/")
        yield browser
    finally:
        browser.quit()  # first: its idle sockets to the page server close
        page_server.shutdown()
        page_server.server_close()
        thread.join(peers.WAIT)


class EchoServer(peers.RecordingServer):
    """Echoes, closes with 4000 on "please close"; ``cert`` picks the wss certificate."""

    def __init__(self, scheme: str, cert: str = "server", **kwargs: Any) -> None:
        if scheme == "wss" and cert != "server":
            context = peers.server_ssl_context()
            context.load_cert_chain(peers.CERTS / f"{cert}.pem", peers.CERTS / f"{cert}.key")
            kwargs["ssl"] = context
        super().__init__(scheme, path="/ws", **kwargs)

    def respond(self, ws: simplews.Connection, message: Any, info: Dict[str, Any]) -> bool:
        if message == "please close":
            ws.close(4000, "server says bye \N{WAVING HAND SIGN}")
            return False
        return super().respond(ws, message, info)


@pytest.fixture
def servers():
    started: List[EchoServer] = []

    def start(scheme: str, **kwargs: Any) -> EchoServer:
        server = EchoServer(scheme, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run(browser: peers.Browser, url: str, plan: List[dict], protocols: List[str] = (),
        finish: Optional[dict] = None) -> Dict[str, Any]:
    report = browser.run_async(SCRIPT, url, list(protocols), plan,
                               finish or {"client": [1000, "done"]})
    assert "exception" not in report, report
    return report


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_echo_text_binary_and_1_mib(browser, servers, scheme):
    server = servers(scheme)  # default max_size: 1 MiB, which must fit exactly
    plan = [{"text": "hello"}, {"text": "h\u00e9llo \U0001F600"}, {"binary": 0}, {"binary": 125},
            {"binary": 70000}, {"binary": MiB}, {"text": "0123456789abcdef", "repeat": MiB // 16}]
    report = run(browser, server.url, plan)
    assert report["opened"] and report["errors"] == 0
    assert [m["equal"] for m in report["messages"]] == [True] * len(plan), report["messages"]
    assert [m["length"] for m in report["messages"]][-2:] == [MiB, MiB]
    # simplews echoes the code of the page's close (RFC 6455 §5.5.1), not its reason
    assert report["close"]["code"] == 1000 and report["close"]["wasClean"]
    [seen] = server.wait_closed()
    assert len(seen["messages"]) == len(plan)
    assert seen["close"] == (1000, "done")
    assert "Chrome/" in seen["user_agent"]


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("config", [None, DeflateConfig(
    server_no_context_takeover=True, client_no_context_takeover=True,
    server_max_window_bits=10, client_max_window_bits=10)], ids=["defaults", "params"])
def test_permessage_deflate_offer_accepted_and_used(browser, servers, scheme, config):
    server = servers(scheme, compression=config or "deflate")
    relay = peers.TcpRelay(("127.0.0.1", server.server.port))  # counts the bytes on the wire
    try:
        url = f"{scheme}://127.0.0.1:{relay.port}/ws"
        # ~1 MB of compressible text each way, then small messages (context takeover)
        plan = [{"text": "simplews deflate ", "repeat": 60000}, *({"text": f"m{i} " * 40}
                                                                   for i in range(20))]
        report = run(browser, url, plan)
    finally:
        relay.close()
    assert report["opened"] and all(m["equal"] for m in report["messages"]), report
    [seen] = server.seen
    # Chromium's own offer, accepted as it is (no server_max_window_bits asked)
    assert seen["offer"] == "permessage-deflate; client_max_window_bits"
    assert seen["accepted"].startswith("permessage-deflate")
    if config is not None:
        assert seen["accepted"] == ("permessage-deflate; server_no_context_takeover; "
                                    "client_no_context_takeover; server_max_window_bits=10; "
                                    "client_max_window_bits=10")
    assert report["extensions"] == seen["accepted"]
    # used in both directions: ~1 MB of text each way, far fewer bytes on the wire
    assert relay.upstream_bytes < 100_000, relay.upstream_bytes
    assert relay.downstream_bytes < 100_000, relay.downstream_bytes


def test_without_deflate_the_wire_carries_everything(browser, servers):
    """The control for the test above: the relay does count uncompressed bytes."""
    server = servers("ws", compression=None)
    relay = peers.TcpRelay(("127.0.0.1", server.server.port))
    try:
        report = run(browser, f"ws://127.0.0.1:{relay.port}/ws",
                     [{"text": "simplews deflate ", "repeat": 60000}])
    finally:
        relay.close()
    assert report["opened"] and report["messages"][0]["equal"]
    assert report["extensions"] == "" and server.seen[0]["accepted"] is None
    assert relay.upstream_bytes > 1_000_000 and relay.downstream_bytes > 1_000_000


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_subprotocol_chosen_by_server(browser, servers, scheme):
    # the browser prefers chat.v1; the server only speaks chat.v2
    server = servers(scheme, subprotocols=["chat.v2"])
    report = run(browser, server.url, [{"text": "hi"}], protocols=["chat.v1", "chat.v2"])
    assert report["opened"] and report["messages"][0]["equal"]
    assert server.seen[0]["subprotocol"] == "chat.v2"
    assert report["protocol"] == "chat.v2"


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_close_4000_started_by_server(browser, servers, scheme):
    server = servers(scheme)
    report = run(browser, server.url, [{"text": "first"}], finish={"request": "please close"})
    assert report["messages"][0]["equal"]
    assert report["close"] == {"code": 4000, "reason": "server says bye \N{WAVING HAND SIGN}",
                               "wasClean": True}
    assert server.wait_closed()[0]["close"] == (4000, "server says bye \N{WAVING HAND SIGN}")


def test_wss_with_another_certificate_is_refused(browser, servers):
    """Certificate checks are on: only the test certificate's key is trusted."""
    server = servers("wss", cert="untrusted")
    report = run(browser, server.url, [{"text": "hi"}])
    assert not report["opened"]
    assert report["close"]["code"] == 1006 and not report["close"]["wasClean"]
    assert server.seen == []
