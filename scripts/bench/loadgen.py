"""The load client of the scale and idle-cpu rows: one process that forks PROCS
parts, each driving its share of N WebSocket connections with epoll and raw
masked frames (no library here, so every server gets the same client).

    python scripts/bench/loadgen.py scale|idle PORT N SECONDS PROCS

The parts open their connections one after the other (blocking handshake, no
extension offered), then "CONNECTED {json}" is printed. scale: after a warm-up
(1 s, or SECONDS/5 if less), a closed-loop echo of 32-byte text frames (one in
flight per connection, each payload naming its connection and sequence number)
for SECONDS; then no new sends, every echo awaited (30 s at most) and compared
with what was sent, a close frame each, and "RESULT {json}": msg/s over the
window, p50/p99 latency (ms), the parts' CPU (user+sys, % of one core, over the
window), lost/wrong echoes, connections the server closed. idle: the parts
answer the server's pings until a line or EOF on stdin, then close, and RESULT.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import resource
import select
import socket
import sys
import time
from array import array
from typing import Any, Dict, List, Optional, Tuple

MASK = b"\x5a\x3c\xa5\xc3"
MSG_HEAD = bytes([0x81, 0x80 | 32]) + MASK      # FIN + text, masked, 32 bytes
MASK32 = int.from_bytes(MASK * 8, "big")
REQUEST = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
DRAIN = 30.0


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (payload < 126 bytes)."""
    n = len(payload)
    m = int.from_bytes((MASK * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big") if n else b""
    return bytes([0x80 | opcode, 0x80 | n]) + MASK + body


def parse(buf: bytes) -> Tuple[List[Tuple[int, bytes]], bytes]:
    """Complete server frames (opcode, payload) in buf, and the rest."""
    out = []
    i, n = 0, len(buf)
    while n - i >= 2:
        size, h = buf[i + 1] & 0x7F, 2
        if size == 126:
            if n - i < 4:
                break
            size, h = int.from_bytes(buf[i + 2:i + 4], "big"), 4
        elif size == 127:
            if n - i < 10:
                break
            size, h = int.from_bytes(buf[i + 2:i + 10], "big"), 10
        if n - i < h + size:
            break
        out.append((buf[i] & 0x0F, buf[i + h:i + h + size]))
        i += h + size
    return out, buf[i:]


def open_conn(port: int) -> Tuple[socket.socket, bytes]:
    """A connection after its handshake (non-blocking), and the bytes read past it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall((REQUEST % port).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    if not data.startswith(b"HTTP/1.1 101"):
        raise ConnectionError("handshake refused: %r" % data[:60])
    s.setblocking(False)
    return s, data.split(b"\r\n\r\n", 1)[1]


def send(s: socket.socket, frame: bytes) -> None:
    n = s.send(frame)
    if n < len(frame):          # never seen with one small frame in flight
        s.setblocking(True)
        s.sendall(frame[n:])
        s.setblocking(False)


def cpu() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])     # user + system


class Part:
    """One process's connections and their counters."""

    def __init__(self, port: int, n: int, base: int) -> None:
        opened = [open_conn(port) for _ in range(n)]
        self.socks, self.bufs = [s for s, _ in opened], [rest for _, rest in opened]
        self.base = base
        self.ix = {s.fileno(): k for k, s in enumerate(self.socks)}
        self.live = [True] * n
        self.closed = self.pings = 0
        self.ppid = os.getppid()
        self.ep = select.epoll()
        for s in self.socks:
            self.ep.register(s.fileno(), select.EPOLLIN)

    def frames(self, k: int) -> Optional[List[Tuple[int, bytes]]]:
        """The complete frames that arrived on connection k (None: it closed);
        pings are answered here."""
        s = self.socks[k]
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.live[k] = False
            self.closed += 1
            self.ep.unregister(s.fileno())
            return None
        if not self.bufs[k] and len(data) == 34 and data[:2] == b"\x81\x20":
            return [(1, data[2:])]      # the usual case: one echo
        frames, self.bufs[k] = parse(self.bufs[k] + data)
        for op, payload in frames:
            if op == 9:
                self.pings += 1
                send(s, masked(10, payload))
        return frames

    def poll(self, timeout: float) -> List[Tuple[int, int]]:
        if os.getppid() != self.ppid:
            os._exit(1)     # the load client is gone
        return self.ep.poll(timeout)

    def scale(self, t0: float, t1: float) -> Dict[str, Any]:
        """Closed-loop echo until t1; latencies and counts of the echoes in [t0, t1)."""
        n = len(self.socks)
        sent, got = [0] * n, [0] * n
        last: List[bytes] = [b""] * n
        tsent = [0.0] * n
        lat = array("d")
        bad = 0
        now = time.monotonic

        def next_msg(k: int, t: float) -> None:
            p = b"%08d %08d " % (self.base + k, sent[k]) + b"x" * 14
            send(self.socks[k], MSG_HEAD + (int.from_bytes(p, "big") ^ MASK32).to_bytes(32, "big"))
            last[k] = p
            sent[k] += 1
            tsent[k] = t

        for k in range(n):
            next_msg(k, now())
        inflight = n
        cpu0 = cpu1 = None
        sending = True
        while True:
            events = self.poll(0.2)
            t = now()
            if cpu0 is None and t >= t0:
                cpu0 = cpu()
            if sending and t >= t1:
                sending = False
                cpu1 = cpu()
            if not sending and (inflight == 0 or t > t1 + DRAIN):
                break
            for fd, _ in events:
                k = self.ix[fd]
                frames = self.frames(k)
                if frames is None:
                    inflight -= sent[k] - got[k]
                    continue
                for op, payload in frames:
                    if op != 1:
                        continue
                    t = now()
                    got[k] += 1
                    inflight -= 1
                    if payload != last[k]:
                        bad += 1
                    if t0 <= t < t1:
                        lat.append(t - tsent[k])
                    if sending and t < t1:
                        next_msg(k, t)
                        inflight += 1
        lost = sum(sent[k] - got[k] for k in range(n))
        return {"msgs": len(lat), "lat": lat.tobytes(), "lost": lost, "bad": bad, "sent": sum(sent),
                "cpu": (cpu1 or cpu()) - (cpu0 or 0.0)}

    def idle(self, ctrl: Any) -> Dict[str, Any]:
        """Answer pings until the load client says stop."""
        self.ep.register(ctrl.fileno(), select.EPOLLIN)
        while True:
            for fd, _ in self.poll(1.0):
                if fd == ctrl.fileno():
                    return {}
                self.frames(self.ix[fd])

    def close(self) -> None:
        """A close frame on every live connection, their EOFs awaited (5 s), closed."""
        for k, s in enumerate(self.socks):
            if self.live[k]:
                try:
                    send(s, masked(8, b"\x03\xe8"))
                except OSError:
                    self.live[k] = False
        deadline = time.monotonic() + 5
        while any(self.live) and time.monotonic() < deadline:
            for fd, _ in self.poll(0.2):
                k = self.ix[fd]
                if self.live[k]:
                    self.frames(k)
        for s in self.socks:
            s.close()


def part(mode: str, port: int, n: int, base: int, ctrl: Any) -> None:
    try:
        p = Part(port, n, base)
    except OSError as e:
        ctrl.send({"error": "%s: %s" % (type(e).__name__, e)})
        return
    ctrl.send({"connected": n})
    if mode == "scale":
        _, t0, t1 = ctrl.recv()
        res = p.scale(t0, t1)
    else:
        res = p.idle(ctrl)
        ctrl.recv()
    res.update(pings=p.pings, closed_by_server=p.closed)
    p.close()
    ctrl.send(res)


def fail(out: Dict[str, Any], error: str) -> None:
    out["error"] = error
    print("RESULT " + json.dumps(out), flush=True)
    sys.exit(1)


def main() -> None:
    mode, port, n, seconds, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        float(sys.argv[4]), int(sys.argv[5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))       # soft to hard
    out: Dict[str, Any] = {"nofile": hard}
    if hard < n // procs + 64:
        fail(out, "RLIMIT_NOFILE %d is too low for %d connections per process" % (hard, n // procs))
    ctx = multiprocessing.get_context("fork")
    pipes, kids = [], []
    base = 0
    for i in range(procs):
        share = n // procs + (1 if i < n % procs else 0)
        a, b = ctx.Pipe()
        kid = ctx.Process(target=part, args=(mode, port, share, base, b), daemon=True)
        kid.start()
        pipes.append(a)
        kids.append(kid)
        base += share
    t = time.monotonic()
    infos = [a.recv() for a in pipes]
    errors = [i["error"] for i in infos if "error" in i]
    if errors:
        fail(out, "; ".join(sorted(set(errors))))
    print("CONNECTED " + json.dumps({"n": n, "seconds": round(time.monotonic() - t, 2)}), flush=True)
    if mode == "scale":
        t0 = time.monotonic() + min(1.0, seconds / 5)
        for a in pipes:
            a.send(("go", t0, t0 + seconds))
    else:
        sys.stdin.readline()
        for a in pipes:
            a.send(("stop",))
    parts = [a.recv() for a in pipes]
    for kid in kids:
        kid.join(10)
    out.update((k, sum(r.get(k, 0) for r in parts)) for k in ("pings", "closed_by_server", "lost", "msgs",
                                                               "bad", "sent"))
    if mode == "scale":
        lat = array("d")
        for r in parts:
            lat.frombytes(r["lat"])
        s = sorted(lat)
        out["msgs_per_s"] = len(s) / seconds
        out["p50_ms"] = 1000 * s[len(s) // 2] if s else None
        out["p99_ms"] = 1000 * s[min(len(s) - 1, int(len(s) * 0.99))] if s else None
        out["client_cpu_pct"] = 100 * sum(r["cpu"] for r in parts) / seconds
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
