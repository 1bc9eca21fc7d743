"""Python's ``websockets`` (its threaded sync API) as a peer of simplews, for
tests/test_interop_websockets.py. Run by the python of the virtualenv that
tests/peers.py's websockets_python() makes; it never imports simplews.

``python -I websockets_peer.py server '<options JSON>'``
    options: {tls: bool, compression: "deflate" | null, subprotocols: [..],
    close_code, close_reason, wait}. A websockets.sync.server on 127.0.0.1, port 0.
    Prints its port as the first stdout line, then one JSON line per event:
    {event: "open", offer, accepted, subprotocol} and {event: "close", code, reason,
    messages: [digest, ..], server_ping, error} for each connection. Echoes every
    message; on the text "fragments please" sends "frag", "mented ", "text" as one
    fragmented message; on "ping me" pings the client, waits for the pong and sends
    "pinged"; on "close me" closes with close_code / close_reason. Stops when its
    stdin closes.

``python -I websockets_peer.py client '<options JSON>'``
    options: {url, tls: bool, compression, subprotocols, plan: [item, ..], close_code,
    close_reason, wait}. Two connections to a simplews server (which echoes and
    answers "fragments please", "ping me" and "close me" like the server above):
    1. each plan message and its echo, a fragmented message and its echo, "fragments
       please" received frame by frame, a ping from here, "ping me", then a close
       with close_code / close_reason; 2. "close me" and the server's close.
    Prints one JSON line: [report 1, report 2], then exits.

A plan item is {"text": str, "repeat": n} or {"hex": str, "repeat": n}; a message's
digest is {"type": "text" | "binary", "length": n, "sha256": hex} (of the UTF-8 for
text), as in the test.
"""
import hashlib
import inspect
import json
import pathlib
import ssl
import sys
import threading

import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect
from websockets.sync.server import serve

CERTS = pathlib.Path(__file__).resolve().parent.parent / "certs"
_emit_lock = threading.Lock()


def emit(value):
    with _emit_lock:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()


def message(item):
    if "text" in item:
        return item["text"] * item.get("repeat", 1)
    return bytes.fromhex(item["hex"]) * item.get("repeat", 1)


def digest(data):
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return {"type": "text" if isinstance(data, str) else "binary", "length": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest()}


def close_info(ws):
    """(code, reason) of the closing handshake; on the connection since websockets 13,
    on its sans-I/O protocol before."""
    holder = ws if hasattr(ws, "close_code") else ws.protocol
    return holder.close_code, holder.close_reason


def ssl_keyword(function):
    """websockets 13 renamed ``ssl_context`` to ``ssl``."""
    return "ssl" if "ssl" in inspect.signature(function).parameters else "ssl_context"


def extensions_header(headers):
    return headers.get("Sec-WebSocket-Extensions")


# ------------------------------------------------------------------ server

def run_server(options):
    wait = options.get("wait", 20)
    context = None
    if options.get("tls"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")

    def handler(ws):
        emit({"event": "open", "offer": extensions_header(ws.request.headers),
              "accepted": extensions_header(ws.response.headers),
              "subprotocol": ws.subprotocol})
        info = {"event": "close", "messages": [], "server_ping": None, "error": None}
        try:
            for data in ws:
                if data == "fragments please":
                    ws.send(["frag", "mented ", "text"])
                elif data == "ping me":
                    info["server_ping"] = ws.ping(b"from websockets").wait(wait)
                    ws.send("pinged")
                elif data == "close me":
                    ws.close(options["close_code"], options["close_reason"])
                    break
                else:
                    info["messages"].append(digest(data))
                    ws.send(data)
        except ConnectionClosed as exc:
            info["error"] = repr(exc)
        finally:
            info["code"], info["reason"] = close_info(ws)
            emit(info)

    server = serve(handler, "127.0.0.1", 0, compression=options.get("compression"),
                   close_timeout=5, subprotocols=options.get("subprotocols") or None,
                   **{ssl_keyword(serve): context})
    thread = threading.Thread(target=server.serve_forever, name="websockets-serve-forever")
    thread.start()
    print(server.socket.getsockname()[1], flush=True)
    print(f"websockets {websockets.__version__}", file=sys.stderr, flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin
    finally:
        server.shutdown()
        thread.join(wait)


# ------------------------------------------------------------------ client

def open_client(options):
    kwargs = {"compression": options.get("compression"), "close_timeout": 5,
              "open_timeout": options.get("wait", 20),
              "subprotocols": options.get("subprotocols") or None}
    if options.get("tls"):
        kwargs[ssl_keyword(connect)] = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
    if "proxy" in inspect.signature(connect).parameters:  # websockets >= 15 reads *_proxy
        kwargs["proxy"] = None
    return connect(options["url"], **kwargs)


def first_run(options):
    wait = options.get("wait", 20)
    report = {"messages": [], "error": None}
    try:
        with open_client(options) as ws:
            report["extensions"] = extensions_header(ws.response.headers)
            report["subprotocol"] = ws.subprotocol
            for item in options["plan"]:
                sent = message(item)
                ws.send(sent)
                got = ws.recv(timeout=wait)
                report["messages"].append(dict(digest(got), equal=got == sent))
            ws.send([b"frag", b"mented ", b"bytes"])  # a fragmented message from websockets
            report["fragmented_echo"] = digest(ws.recv(timeout=wait))
            ws.send("fragments please")  # simplews sends one frame per item
            report["fragments"] = list(ws.recv_streaming())
            report["pong"] = ws.ping(b"from websockets").wait(wait)
            ws.send("ping me")
            report["pinged"] = ws.recv(timeout=wait)
            ws.close(options["close_code"], options["close_reason"])
            report["close"] = close_info(ws)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, for the test to show
        report["error"] = repr(exc)
    return report


def second_run(options):
    wait = options.get("wait", 20)
    report = {"error": None}
    try:
        with open_client(options) as ws:
            ws.send("close me")
            try:
                ws.recv(timeout=wait)
                report["error"] = "no close after 'close me'"
            except ConnectionClosedError as exc:
                report["close"] = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None
    except Exception as exc:  # noqa: BLE001 - any failure is reported, for the test to show
        report["error"] = repr(exc)
    return report


def run_client(options):
    emit([first_run(options), second_run(options)])


def main():
    mode, options = sys.argv[1], json.loads(sys.argv[2])
    assert "simplews" not in sys.modules
    {"server": run_server, "client": run_client}[mode](options)


if __name__ == "__main__":
    main()
