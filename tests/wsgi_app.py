"""The Flask app of tests/test_wsgi.py, served by Werkzeug and by gunicorn:

    gunicorn --worker-class gthread --threads 4 --chdir tests wsgi_app:app
"""
import threading
from typing import Dict

from flask import Flask, abort
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from simplews import Connection
from simplews.wsgi import WebSocketApp

app = Flask(__name__)

LIMIT = 2  # WebSockets at once on /limited
_closed: Dict[str, int] = {}  # client id -> the close code the server saw
_closed_changed = threading.Condition()


def echo(ws: Connection) -> None:
    """Echo every message; record the close code under the client's ?id=."""
    try:
        for message in ws:
            ws.send(message)
    finally:
        client_id = ws.environ.get("QUERY_STRING", "")  # type: ignore[attr-defined]
        if client_id.startswith("id="):
            with _closed_changed:
                _closed[client_id[3:]] = ws.close_code or 0
                _closed_changed.notify_all()


def bye(ws: Connection) -> None:
    """Say bye and return: the server starts the closing handshake."""
    ws.send("bye")


echo_ws = WebSocketApp(echo, subprotocols=["chat.v2", "chat.v1"])
bye_ws = WebSocketApp(bye, compression=None)
limited_ws = WebSocketApp(echo, max_connections=LIMIT)


@app.route("/echo", websocket=True)
def echo_route():
    return echo_ws


@app.route("/bye", websocket=True)
def bye_route():
    return bye_ws


@app.route("/limited", websocket=True)
def limited_route():
    return limited_ws


@app.route("/hello")
def hello():
    return "hello\n"


@app.route("/closed/<client_id>")
def closed(client_id: str):
    """The close code that the server saw for ?id=client_id (waits up to 5 s for it)."""
    with _closed_changed:
        if not _closed_changed.wait_for(lambda: client_id in _closed, timeout=5):
            abort(404)
        return str(_closed.pop(client_id))


# A plain WSGI application, no framework, mounted at /plain: every request there
# must be a WebSocket handshake (anything else gets 426 or 400).
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/plain": echo_ws})  # type: ignore[method-assign]
