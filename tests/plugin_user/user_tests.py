"""A user's test file for the plugin test (tests/test_testing_plugin.py): it imports nothing
but simplews and pytest and gets ws_fake_server from simplews' pytest11 entry point."""
import threading

import pytest

import simplews

left_open = []


def test_welcome_and_reply(ws_fake_server):
    with simplews.connect(ws_fake_server.uri + "chat") as ws:
        peer = ws_fake_server.accept(timeout=5)
        assert peer.request.path == "/chat"
        peer.send("welcome")
        assert ws.recv(timeout=5) == "welcome"
        ws.send("subscribe")
        assert peer.recv(timeout=5) == "subscribe"
        peer.close(4001, "bye")
        with pytest.raises(simplews.ConnectionClosedError) as caught:
            ws.recv(timeout=5)
        assert (caught.value.code, caught.value.reason) == (4001, "bye")


def test_factory_with_subprotocols(ws_fake_server_factory):
    fake = ws_fake_server_factory(subprotocols=["v1"])
    with simplews.connect(fake.uri, subprotocols=["v1"]) as ws:
        assert fake.accept(timeout=5).subprotocol == ws.subprotocol == "v1"


@pytest.mark.xfail(strict=True, reason="fails midway with its client still connected")
def test_fails_midway(ws_fake_server):
    left_open.append(simplews.connect(ws_fake_server.uri))
    ws_fake_server.accept(timeout=5).send("unread")
    raise AssertionError("the test fails here")


def test_the_failed_test_left_no_fake_server_thread():
    assert [t.name for t in threading.enumerate() if t.name.startswith("simplews-testing")] == []
    for ws in left_open:
        with pytest.raises(simplews.ConnectionClosedOK):  # the fake server said 1001 going away
            while True:
                ws.recv(timeout=5)
        ws.close()
