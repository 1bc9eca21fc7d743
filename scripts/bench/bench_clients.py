"""Client side of scripts/bench.py: one adapter per library, and the timed
workloads. Used in the bench process and in the client worker subprocess
(the "simplews (pure)" column, which needs SIMPLEWS_NO_EXTENSIONS=1 at
import time)."""
import json
import random
import sys
import threading
import time

HOST = "127.0.0.1"
RTT_MSG = "0123456789abcdef" * 2                 # 32 bytes, text
PIPE_MSG = bytes(range(64))                      # 64 bytes, binary
LARGE_SIZE = 4 * 1024 * 1024                     # 4 MiB, binary
DEFLATE_TARGET = 17920                           # 17.5 KiB of JSON-like text
DEFLATE_VARIANTS = 16                            # distinct texts, cycled


def make_texts(n=DEFLATE_VARIANTS, target=DEFLATE_TARGET):
    """Deterministic JSON-like texts of ~17.5 KiB with the same structure and
    different values (so context takeover cannot just reference the previous
    identical message)."""
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu "
             "nu xi omicron pi rho sigma tau upsilon phi chi psi omega red green "
             "blue amber violet north south east west admin user guest pending "
             "active archived").split()
    out = []
    for v in range(n):
        rnd = random.Random(1000 + v)
        recs = []
        i = 0
        while True:
            rec = {
                "id": 100000 + rnd.randrange(900000),
                "name": "%s %s" % (rnd.choice(words).title(), rnd.choice(words).title()),
                "email": "%s.%s%d@example.com" % (rnd.choice(words), rnd.choice(words), rnd.randrange(100)),
                "role": rnd.choice(words[-6:]),
                "score": round(rnd.random() * 100, 3),
                "active": rnd.random() < 0.5,
                "tags": rnd.sample(words, 3),
                "created": "2024-%02d-%02dT%02d:%02d:%02dZ" % (
                    rnd.randrange(1, 13), rnd.randrange(1, 29), rnd.randrange(24),
                    rnd.randrange(60), rnd.randrange(60)),
                "geo": {"lat": round(rnd.uniform(-90, 90), 5), "lon": round(rnd.uniform(-180, 180), 5)},
            }
            recs.append(rec)
            i += 1
            s = json.dumps({"page": v, "items": recs}, separators=(", ", ": "))
            if len(s) >= target:
                break
        recs.pop()
        s = json.dumps({"page": v, "items": recs}, separators=(", ", ": "))
        pad = target - len(s) - len(', "pad": ""')
        s = s[:-1] + ', "pad": "%s"}' % ("x" * max(pad, 0))
        out.append(s)
    return out


# ---------------------------------------------------------------------------
# adapters: connect(port, deflate) -> (conn, send_text, send_bin, recv, close)
# recv() returns str for text and a bytes-like object for binary.

def _floor(port, deflate):
    import bench_floor
    c = bench_floor.connect(HOST, port, deflate)
    return c, c.send_text, c.send_bin, c.recv, c.close


def _simplews(port, deflate):
    import simplews
    ws = simplews.connect("ws://%s:%d/" % (HOST, port),
                          compression="deflate" if deflate else None,
                          max_size=None, ping_interval=None)
    return ws, ws.send, ws.send, ws.recv, ws.close


_ws_legacy = None


def _websockets(port, deflate):
    global _ws_legacy
    from websockets.sync.client import connect
    if _ws_legacy is None:
        # websockets >= 16 warns unless connect() is a context manager or
        # legacy=True is given (same behaviour); older versions lack the flag
        import inspect
        _ws_legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
    ws = connect("ws://%s:%d/" % (HOST, port),
                 compression="deflate" if deflate else None,
                 max_size=None, ping_interval=None, **_ws_legacy)
    return ws, ws.send, ws.send, ws.recv, ws.close


def _simple_websocket(port, deflate):
    if deflate:
        raise NotImplementedError("simple_websocket.Client does not offer permessage-deflate")
    import simple_websocket
    ws = simple_websocket.Client.connect("ws://%s:%d/" % (HOST, port), max_message_size=None)
    return ws, ws.send, ws.send, ws.receive, ws.close


def _websocket_client(port, deflate):
    if deflate:
        raise NotImplementedError("websocket-client has no permessage-deflate")
    import websocket
    ws = websocket.create_connection("ws://%s:%d/" % (HOST, port))
    return ws, ws.send, ws.send_binary, ws.recv, ws.close


ADAPTERS = {
    "floor": _floor,
    "simplews": _simplews,
    "websockets": _websockets,
    "simple-websocket": _simple_websocket,
    "websocket-client": _websocket_client,
}

IMPORTS = {
    "floor": "bench_floor",
    "simplews": "simplews",
    "websockets": "websockets.sync.client",
    "simple-websocket": "simple_websocket",
    "websocket-client": "websocket",
}


def lib_version(lib):
    try:
        if lib == "floor":
            return sys.version.split()[0]
        if lib == "simplews":
            import simplews
            return simplews.__version__
        from importlib.metadata import version
        return version(lib)
    except Exception:
        return "?"


def simplews_extensions():
    """Compiled simplews modules loaded in this process (after a connection)."""
    out = []
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if name.startswith("simplews") and f.endswith((".so", ".pyd")):
            out.append(name)
    return sorted(out)


class CheckError(Exception):
    pass


def _check(got, want):
    if got != want:
        g = got if isinstance(got, str) else bytes(got)
        if g != want:
            raise CheckError("bad echo: got %r..., want %r..." % (g[:20], want[:20]))


# ---------------------------------------------------------------------------
# workloads: each returns elapsed seconds for n operations

def rtt(lib, port, n, deflate=False):
    conn, send_text, _, recv, close = ADAPTERS[lib](port, False)
    return _timed_echoes(send_text, recv, close, RTT_MSG, n, warmup=min(200, n))


def _timed_echoes(send, recv, close, msg, n, warmup):
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


def pipeline(lib, port, n, deflate=False):
    conn, _, send_bin, recv, close = ADAPTERS[lib](port, False)
    msg = PIPE_MSG
    for _ in range(min(500, n)):
        send_bin(msg)
        recv()
    err = []

    def sender():
        try:
            for _ in range(n):
                send_bin(msg)
        except BaseException as e:  # reported by the receiver
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


_large_payload = None


def large(lib, port, n, deflate=False):
    global _large_payload
    if _large_payload is None:
        _large_payload = random.Random(7).randbytes(LARGE_SIZE)
    msg = _large_payload
    conn, _, send_bin, recv, close = ADAPTERS[lib](port, False)
    return _timed_echoes(send_bin, recv, close, msg, n, warmup=1)


_texts = None


def texts():
    global _texts
    if _texts is None:
        _texts = make_texts()
    return _texts


def deflate(lib, port, n, deflate=True):
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


def deflate_echoes(lib, port, n):
    """n echoes of the deflate texts on one connection (for the wire-size
    measurement through the counting relay)."""
    tx = texts()
    conn, send_text, _, recv, close = ADAPTERS[lib](port, True)
    for i in range(n):
        send_text(tx[i % len(tx)])
        r = recv()
        _check(r, tx[i % len(tx)])
    close()


def handshakes(lib, port, n, deflate=False):
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


def idle_open(lib, port, n):
    """Open n connections, one echo each; return their close functions."""
    closers = []
    for _ in range(n):
        conn, send_text, _, recv, close = ADAPTERS[lib](port, False)
        send_text(RTT_MSG)
        _check(recv(), RTT_MSG)
        closers.append(close)
    return closers


def idle_close(closers):
    for close in closers:
        try:
            close()
        except Exception:
            pass


WORKLOADS = {
    "rtt": rtt,
    "pipeline": pipeline,
    "large": large,
    "deflate": deflate,
    "handshakes": handshakes,
}


# ---------------------------------------------------------------------------
# client worker: JSON lines on stdin -> JSON lines on stdout

def worker_main():
    out = sys.stdout
    sys.stdout = sys.stderr      # keep the protocol channel clean
    idle = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "import":
                __import__(IMPORTS[cmd["lib"]])
                res = {"version": lib_version(cmd["lib"])}
            elif op == "run":
                dt = WORKLOADS[cmd["row"]](cmd["lib"], cmd["port"], cmd["n"])
                res = {"elapsed": dt, "ext": simplews_extensions()}
            elif op == "idle_open":
                idle = idle_open(cmd["lib"], cmd["port"], cmd["n"])
                res = {}
            elif op == "idle_close":
                idle_close(idle or [])
                idle = None
                res = {}
            elif op == "deflate_echoes":
                deflate_echoes(cmd["lib"], cmd["port"], cmd["n"])
                res = {}
            elif op == "exit":
                break
            else:
                raise ValueError(op)
            res["ok"] = True
        except Exception as e:
            res = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(res) + "\n")
        out.flush()
