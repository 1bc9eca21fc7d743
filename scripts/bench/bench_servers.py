"""Echo servers for scripts/bench.py, one per process:

    python scripts/bench/bench_servers.py KIND [--deflate] [--profile FILE]
                                          [--defaults] [--switch-interval S]
                                          [--ping-interval S]

KIND: floor | wsfloor | simplews | websockets | simple-websocket. Binds 127.0.0.1 on a
free port, prints one line "READY {json}" (port, pid, versions, loaded
simplews extensions) and serves until its stdin closes (the bench process
holds the pipe, so a dead bench never leaves a server behind) or it is
killed. Compression is off unless --deflate; max_size is unlimited;
keepalive pings are off. --defaults (the defaults, scale and idle-cpu rows):
the library's defaults instead (keepalive on, compression offered, max_size).
--switch-interval S: sys.setswitchinterval(S) first. RLIMIT_NOFILE's soft
limit is raised to the hard one. wsfloor: scripts/bench/wsfloor.py (with
--ping-interval S, its pinging thread).

simple-websocket has no server of its own: it is driven from a WSGI server
(werkzeug/gunicorn/eventlet/gevent) that hands it the socket through the
environ. Here a minimal thread-per-connection WSGI-ish front end reads the
request head and calls simple_websocket.Server.accept(environ) with
'werkzeug.socket' set, which is what Flask-Sock does under werkzeug, minus
werkzeug's own overhead.

--profile FILE (simplews only): run each connection's handler under cProfile
and write the merged stats to FILE when stdin closes.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

HOST = "127.0.0.1"


def ready(port: int, **info: Any) -> None:
    """Tell the bench: one line READY {json}."""
    info.update(port=port, pid=os.getpid(), switch_interval=sys.getswitchinterval())
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()


def loaded_ext() -> List[str]:
    """Compiled simplews modules loaded in this process."""
    return sorted(n for n, m in list(sys.modules.items())
                  if n.startswith("simplews")
                  and (getattr(m, "__file__", None) or "").endswith((".so", ".pyd")))


def watch_stdin(on_eof: Callable[[], Any]) -> None:
    """Call on_eof once stdin closes (the bench ended or stopped us)."""
    def run() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(1):
                pass
        on_eof()
    threading.Thread(target=run, daemon=True).start()


_profiles: List[Any] = []   # cProfile.Profile of each finished handler
_prof_lock = threading.Lock()


def profiled(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """handler, run under its own cProfile; the profile is kept for dump_profiles."""
    import cProfile

    def wrapper(ws: Any) -> Any:
        p = cProfile.Profile()
        p.enable()
        try:
            return handler(ws)
        finally:
            p.disable()
            with _prof_lock:
                _profiles.append(p)
    return wrapper


def dump_profiles(path: str) -> None:
    """The handlers' profiles merged into one stats file."""
    import pstats
    with _prof_lock:
        profs = list(_profiles)
    if not profs:
        return
    st = pstats.Stats(profs[0])
    for p in profs[1:]:
        st.add(p)
    st.dump_stats(path)


def run_floor(deflate: bool) -> None:
    import bench_floor
    watch_stdin(lambda: os._exit(0))
    bench_floor.serve(HOST, 0, deflate, ready=lambda port: ready(port, kind="floor", deflate=deflate))


def run_wsfloor(ping_interval: Optional[float]) -> None:
    import wsfloor
    watch_stdin(lambda: os._exit(0))
    wsfloor.serve(HOST, ready=lambda port: ready(port, kind="wsfloor", ping_interval=ping_interval),
                  ping_interval=ping_interval)


def options(deflate: bool, defaults: bool) -> Dict[str, Any]:
    """The servers' keyword arguments: the bench's (see the docstring) or the library's."""
    if defaults:
        return {}
    return {"compression": "deflate" if deflate else None, "max_size": None, "ping_interval": None}


def run_simplews(deflate: bool, profile: Optional[str], defaults: bool) -> None:
    import simplews

    def handler(ws: Any) -> None:
        recv, send = ws.recv, ws.send
        try:
            while True:
                send(recv())
        except simplews.ConnectionClosed:
            pass

    server = simplews.serve(profiled(handler) if profile else handler, HOST, 0,
                            **options(deflate, defaults))

    def on_eof() -> None:
        if profile:
            import time
            time.sleep(0.5)     # let the last handler finish and record its profile
            dump_profiles(profile)
        os._exit(0)

    watch_stdin(on_eof)
    assert server.port is not None
    ready(server.port, kind="simplews", deflate=deflate, version=simplews.__version__,
          ext=loaded_ext(), no_ext=os.environ.get("SIMPLEWS_NO_EXTENSIONS", ""))
    server.serve_forever()


def run_websockets(deflate: bool, defaults: bool) -> None:
    import websockets
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.server import serve

    def handler(ws: Any) -> None:
        recv, send = ws.recv, ws.send
        try:
            while True:
                send(recv())
        except ConnectionClosed:
            pass

    server = serve(handler, HOST, 0, **options(deflate, defaults))
    watch_stdin(lambda: os._exit(0))
    ready(server.socket.getsockname()[1], kind="websockets", deflate=deflate,
          version=websockets.__version__)
    server.serve_forever()


def run_simple_websocket(deflate: bool, defaults: bool) -> None:
    import socket
    import simple_websocket
    from importlib.metadata import version

    def conn_thread(sock: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    sock.close()
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_PROTOCOL": "HTTP/1.1",
                       "werkzeug.socket": sock}
            for line in head[1:]:
                k, v = line.split(":", 1)
                environ["HTTP_" + k.strip().upper().replace("-", "_")] = v.strip()
            ws = simple_websocket.Server.accept(environ, **({} if defaults else {"max_message_size": None}))
            try:
                while True:
                    ws.send(ws.receive())
            except simple_websocket.ConnectionClosed:
                pass
        except Exception:  # noqa: BLE001 (a bad request or a peer's failure ends this connection)
            with contextlib.suppress(OSError):
                sock.close()

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((HOST, 0))
    lsock.listen(1024)
    watch_stdin(lambda: os._exit(0))
    ready(lsock.getsockname()[1], kind="simple-websocket", deflate=deflate,
          version=version("simple-websocket"))
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=conn_thread, args=(sock,), daemon=True).start()


def main() -> None:
    args = sys.argv[1:]
    kind = args[0]
    deflate = "--deflate" in args
    profile = args[args.index("--profile") + 1] if "--profile" in args else None
    defaults = "--defaults" in args
    if "--switch-interval" in args:
        sys.setswitchinterval(float(args[args.index("--switch-interval") + 1]))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if kind == "floor":
        run_floor(deflate)
    elif kind == "wsfloor":
        run_wsfloor(float(args[args.index("--ping-interval") + 1]) if "--ping-interval" in args else None)
    elif kind == "simplews":
        run_simplews(deflate, profile, defaults)
    elif kind == "websockets":
        run_websockets(deflate, defaults)
    elif kind == "simple-websocket":
        run_simple_websocket(deflate, defaults)
    else:
        raise SystemExit("unknown server kind %r" % kind)


if __name__ == "__main__":
    main()
