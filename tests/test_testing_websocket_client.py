"""FakeServer used the way a user would: a small client written with a peer library
(websocket-client's WebSocketApp) tested against it: a welcome message, a reply to what
it sent, a server close 4001 with its reason, a drop() seen as an abnormal close, and a
reconnect after refuse_next(503)."""
from __future__ import annotations

import queue
import threading

import pytest

from simplews.testing import FakeServer

websocket = pytest.importorskip("websocket")  # websocket-client, in the test extra

T = 5


class Ticker:
    """The user's code under test: subscribes on open, keeps what it hears, and reconnects
    (after ``retry_delay``) whenever the connection ends, until stop()."""

    def __init__(self, url: str, retry_delay: float = 0.05) -> None:
        self.url = url
        self.retry_delay = retry_delay
        self.events: "queue.Queue[tuple]" = queue.Queue()
        self.app = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more reconnections: the current connection ends when the server closes it.
        (WebSocketApp.close() from another thread may leave run_forever() waiting in its
        dispatcher's select until ping_timeout, so the tests end it from the server side.)"""
        self._stopped.set()

    def join(self) -> None:
        self._thread.join(T)
        assert not self._thread.is_alive()

    def next_event(self) -> tuple:
        return self.events.get(timeout=T)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.app = websocket.WebSocketApp(
                self.url,
                on_open=lambda app: (self.events.put(("open",)), app.send("subscribe")),
                on_message=lambda app, message: self.events.put(("message", message)),
                on_error=lambda app, error: self.events.put(("error", error)),
                on_close=lambda app, code, reason: self.events.put(("close", code, reason)),
            )
            self.app.run_forever()
            self._stopped.wait(self.retry_delay)


@pytest.fixture
def fake():
    with FakeServer() as server:
        yield server


@pytest.fixture
def ticker(fake):
    client = Ticker(fake.uri + "prices")
    client.start()
    yield client
    client.stop()
    fake.close()  # a close frame (1001) ends the client's last connection
    client.join()


def test_welcome_message_and_reply(fake, ticker):
    peer = fake.accept(timeout=T)
    assert peer.request.path == "/prices"
    assert ticker.next_event() == ("open",)
    peer.send("welcome")
    assert ticker.next_event() == ("message", "welcome")
    peer.expect("subscribe", timeout=T)
    peer.send("subscribed")
    assert ticker.next_event() == ("message", "subscribed")
    text = [frame for frame in peer.frames if frame.opcode == 1]
    assert text[0].masked and text[0].payload == b"subscribe"


def test_server_close_4001_with_its_reason(fake, ticker):
    peer = fake.accept(timeout=T)
    peer.expect("subscribe", timeout=T)
    peer.close(4001, "bye", timeout=T)
    assert ticker.next_event() == ("open",)
    event = ticker.next_event()
    frame_in_error = False
    if event[0] == "error":  # websocket-client reports a close with an error code this way too:
        # 1.9.2 as an error naming 4001; 1.9.0 (the last for Python 3.9) hands over the close
        # frame itself, then calls on_close(None, None)
        data = getattr(event[1], "data", b"")
        frame_in_error = data == b"\x0f\xa1bye"
        assert "4001" in str(event[1]) or frame_in_error
        event = ticker.next_event()
    assert event == ("close", 4001, "bye") or (frame_in_error and event == ("close", None, None))
    assert peer.wait_closed(timeout=T)[0] == 1000  # websocket-client answers any close with 1000


def test_drop_is_an_abnormal_close(fake, ticker):
    peer = fake.accept(timeout=T)
    peer.expect("subscribe", timeout=T)
    peer.drop()
    assert ticker.next_event() == ("open",)
    kind, error = ticker.next_event()
    assert kind == "error" and isinstance(error, websocket.WebSocketConnectionClosedException)
    assert ticker.next_event() == ("close", None, None)  # no close frame: no code, no reason
    assert peer.wait_closed(timeout=T) == (1006, "")
    again = fake.accept(timeout=T)  # and it comes back
    again.expect("subscribe", timeout=T)


def test_reconnect_after_503(fake):
    fake.refuse_next(503, body="maintenance")
    ticker = Ticker(fake.uri)
    ticker.start()
    try:
        peer = fake.accept(timeout=T)  # the second attempt
        peer.expect("subscribe", timeout=T)
        kind, error = ticker.next_event()
        assert kind == "error" and isinstance(error, websocket.WebSocketBadStatusException)
        assert error.status_code == 503
        assert ticker.next_event() == ("close", None, None)
        assert ticker.next_event() == ("open",)
        assert len(fake.requests) == 2 and fake.peers == [peer]
    finally:
        ticker.stop()
        fake.close()
        ticker.join()
