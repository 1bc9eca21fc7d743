"""Client side of scripts/bench.py: one adapter per library, and the timed
workloads. Used in the bench process and in the client worker subprocess
(the "simplews (pure)" column, which needs SIMPLEWS_NO_EXTENSIONS=1 at
import time; procs.worker_main)."""
import contextlib
import random
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .texts import texts

HOST = "127.0.0.1"
RTT_MSG = "0123456789abcdef" * 2                 # 32 bytes, text
PIPE_MSG = bytes(range(64))                      # 64 bytes, binary
LARGE_SIZE = 4 * 1024 * 1024                     # 4 MiB, binary


# ---------------------------------------------------------------------------
# adapters: connect(port, deflate) -> (conn, send_text, send_bin, recv, close)
# recv() returns str for text and a bytes-like object for binary.
Send = Callable[[Any], Any]
Closer = Callable[[], Any]
Opened = Tuple[Any, Send, Send, Callable[[], Any], Closer]


def _floor(port: int, deflate: bool) -> Opened:
    from . import bench_floor
    c = bench_floor.connect(HOST, port, deflate)
    return c, c.send_text, c.send_bin, c.recv, c.close


def _simplews(port: int, deflate: bool) -> Opened:
    import simplews
    ws = simplews.connect("ws://%s:%d/" % (HOST, port),
                          compression="deflate" if deflate else None,
                          max_size=None, ping_interval=None)
    return ws, ws.send, ws.send, ws.recv, ws.close


_ws_legacy: Optional[Dict[str, bool]] = None


def _websockets_connect(port: int, **kwargs: Any) -> Opened:
    global _ws_legacy
    from websockets.sync.client import connect
    if _ws_legacy is None:
        # websockets >= 16 warns unless connect() is a context manager or
        # legacy=True is given (same behaviour); older versions lack the flag
        import inspect
        _ws_legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
    ws = connect("ws://%s:%d/" % (HOST, port), **kwargs, **_ws_legacy)
    return ws, ws.send, ws.send, ws.recv, ws.close


def _websockets(port: int, deflate: bool) -> Opened:
    return _websockets_connect(port, compression="deflate" if deflate else None, max_size=None,
                               ping_interval=None)


def _simple_websocket(port: int, deflate: bool) -> Opened:
    if deflate:
        raise NotImplementedError("simple_websocket.Client does not offer permessage-deflate")
    import simple_websocket
    ws = simple_websocket.Client.connect("ws://%s:%d/" % (HOST, port), max_message_size=None)
    return ws, ws.send, ws.send, ws.receive, ws.close


def _websocket_client(port: int, deflate: bool) -> Opened:
    if deflate:
        raise NotImplementedError("websocket-client has no permessage-deflate")
    import websocket
    ws = websocket.create_connection("ws://%s:%d/" % (HOST, port))
    return ws, ws.send, ws.send_binary, ws.recv, ws.close


def _with_defaults(lib: str, port: int) -> Opened:
    """A connection with every setting at the library's default (the defaults row: what
    users run; compression negotiated where the library offers it, keepalive on)."""
    url = "ws://%s:%d/" % (HOST, port)
    if lib == "simplews":
        import simplews
        ws = simplews.connect(url)
        return ws, ws.send, ws.send, ws.recv, ws.close
    if lib == "websockets":
        return _websockets_connect(port)
    if lib == "simple-websocket":
        import simple_websocket
        sws = simple_websocket.Client.connect(url)
        return sws, sws.send, sws.send, sws.receive, sws.close
    return ADAPTERS[lib](port, False)  # the floor; websocket-client: its defaults already


ADAPTERS: Dict[str, Callable[[int, bool], Opened]] = {
    "floor": _floor,
    "simplews": _simplews,
    "websockets": _websockets,
    "simple-websocket": _simple_websocket,
    "websocket-client": _websocket_client,
}

IMPORTS = {
    "floor": __package__ + ".bench_floor",
    "simplews": "simplews",
    "websockets": "websockets.sync.client",
    "simple-websocket": "simple_websocket",
    "websocket-client": "websocket",
}


def lib_version(lib: str) -> str:
    try:
        if lib == "floor":
            return sys.version.split()[0]
        if lib == "simplews":
            import simplews
            return simplews.__version__
        from importlib.metadata import version
        return version(lib)
    except (ImportError, AttributeError, ValueError):   # PackageNotFoundError is an ImportError
        return "?"


def simplews_extensions() -> List[str]:
    """Compiled simplews modules loaded in this process (after a connection)."""
    out = []
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if name.startswith("simplews") and f.endswith((".so", ".pyd")):
            out.append(name)
    return sorted(out)


class CheckError(Exception):
    pass


def _check(got: Any, want: Any) -> None:
    if got != want:
        g = got if isinstance(got, str) else bytes(got)
        if g != want:
            raise CheckError("bad echo: got %r..., want %r..." % (g[:20], want[:20]))


# ---------------------------------------------------------------------------
# workloads: each returns elapsed seconds for n operations

def rtt(lib: str, port: int, n: int, deflate: bool = False) -> float:
    conn, send_text, _, recv, close = ADAPTERS[lib](port, False)
    return _timed_echoes(send_text, recv, close, RTT_MSG, n, warmup=min(200, n))


def defaults(lib: str, port: int, n: int, deflate: bool = False) -> float:
    """rtt with both sides at the library's defaults (the server too: --defaults)."""
    conn, send_text, _, recv, close = _with_defaults(lib, port)
    return _timed_echoes(send_text, recv, close, RTT_MSG, n, warmup=min(200, n))


def _timed_echoes(send: Send, recv: Callable[[], Any], close: Closer, msg: Any, n: int,
                  warmup: int) -> float:
    """Warm up, then time n echoes of msg with one in flight; checks the last echo."""
    for _ in range(warmup):
        send(msg)
        recv()
    t0 = time.perf_counter()
    for _ in range(n):
        send(msg)
        r = recv()
    dt = time.perf_counter() - t0
    if len(r) != len(msg):
        raise CheckError("bad echo length %d" % len(r))
    _check(r, msg)
    close()
    return dt


def pipeline(lib: str, port: int, n: int, deflate: bool = False) -> float:
    conn, _, send_bin, recv, close = ADAPTERS[lib](port, False)
    msg = PIPE_MSG
    for _ in range(min(500, n)):
        send_bin(msg)
        recv()
    err: List[BaseException] = []

    def sender() -> None:
        try:
            for _ in range(n):
                send_bin(msg)
        except BaseException as e:  # noqa: BLE001 (reported by the receiver)
            err.append(e)

    th = threading.Thread(target=sender, daemon=True)
    t0 = time.perf_counter()
    th.start()
    for _ in range(n):
        r = recv()
    dt = time.perf_counter() - t0
    th.join(10)
    if err:
        raise err[0]
    _check(r, msg)
    close()
    return dt


_large_payload: Optional[bytes] = None


def large(lib: str, port: int, n: int, deflate: bool = False) -> float:
    global _large_payload
    if _large_payload is None:
        _large_payload = random.Random(7).randbytes(LARGE_SIZE)
    msg = _large_payload
    conn, _, send_bin, recv, close = ADAPTERS[lib](port, False)
    return _timed_echoes(send_bin, recv, close, msg, n, warmup=1)


def deflate(lib: str, port: int, n: int, deflate: bool = True) -> float:
    tx = texts()
    k = len(tx)
    conn, send_text, _, recv, close = ADAPTERS[lib](port, True)
    for i in range(min(2 * k, n)):
        send_text(tx[i % k])
        recv()
    t0 = time.perf_counter()
    for i in range(n):
        send_text(tx[i % k])
        r = recv()
    dt = time.perf_counter() - t0
    _check(r, tx[(n - 1) % k])
    close()
    return dt


def deflate_echoes(lib: str, port: int, n: int) -> None:
    """n echoes of the deflate texts on one connection (for the wire-size
    measurement through the counting relay)."""
    tx = texts()
    conn, send_text, _, recv, close = ADAPTERS[lib](port, True)
    for i in range(n):
        send_text(tx[i % len(tx)])
        r = recv()
        _check(r, tx[i % len(tx)])
    close()


def handshakes(lib: str, port: int, n: int, deflate: bool = False) -> float:
    adapter = ADAPTERS[lib]
    msg = RTT_MSG
    for _ in range(min(5, n)):
        conn, send_text, _, recv, close = adapter(port, False)
        send_text(msg)
        recv()
        close()
    t0 = time.perf_counter()
    for _ in range(n):
        conn, send_text, _, recv, close = adapter(port, False)
        send_text(msg)
        r = recv()
        close()
    dt = time.perf_counter() - t0
    _check(r, msg)
    return dt


def idle_open(lib: str, port: int, n: int) -> List[Closer]:
    """Open n connections, one echo each; return their close functions."""
    closers = []
    for _ in range(n):
        conn, send_text, _, recv, close = ADAPTERS[lib](port, False)
        send_text(RTT_MSG)
        _check(recv(), RTT_MSG)
        closers.append(close)
    return closers


def idle_close(closers: List[Closer]) -> None:
    for close in closers:
        with contextlib.suppress(Exception):  # whatever a library raises, close the rest
            close()


WORKLOADS: Dict[str, Callable[[str, int, int], float]] = {
    "rtt": rtt,
    "defaults": defaults,
    "pipeline": pipeline,
    "large": large,
    "deflate": deflate,
    "handshakes": handshakes,
}
