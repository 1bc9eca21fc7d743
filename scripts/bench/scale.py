"""The rows of how cost grows with connections: scale (N connections in closed-loop
echo, with the default switch interval and a raised one) and idle-cpu (the CPU
and memory of a server holding N idle connections with its default keepalive).
One load client for every server (loadgen.py, its own process); the floor
column runs wsfloor.py, the thread-per-connection raw-socket WebSocket server."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .config import HERE, BenchError, Column
from .machine import proc_cpu, proc_fds, proc_status
from .procs import PROCS, Server, child_env, readline_timeout

if TYPE_CHECKING:
    from .harness import Bench

LOADGEN = os.path.join(HERE, "loadgen.py")
FULL_SCALE = {"n": [500, 1000, 2000, 4000], "seconds": 10.0, "idle_n": 10000, "idle_seconds": 20.0}
QUICK_SCALE = {"n": [100, 200], "seconds": 2.0, "idle_n": 500, "idle_seconds": 5.0}
Row = Tuple[str, str, str, bool]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--scale-n", help="scale: connection counts (default 500,1000,2000,4000)")
    ap.add_argument("--scale-time", type=float, help="scale: seconds per measurement (default 10)")
    ap.add_argument("--scale-clients", type=int, default=2,
                    help="scale, idle-cpu: processes of the load client (default 2)")
    ap.add_argument("--scale-rounds", type=int, help="scale: rounds (default --rounds)")
    ap.add_argument("--switch-interval", type=float, default=0.1,
                    help="scale: the raised sys.setswitchinterval() of the servers (default 0.1)")
    ap.add_argument("--idle-n", type=int, help="idle-cpu: idle connections (default 10000)")
    ap.add_argument("--idle-time", type=float, help="idle-cpu: seconds measured (default 20)")


def settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The scale and idle-cpu settings: the options, else the (quick) defaults."""
    d = dict(QUICK_SCALE if args.quick else FULL_SCALE)
    if args.scale_n:
        d["n"] = [int(x) for x in args.scale_n.split(",")]
    if args.scale_time:
        d["seconds"] = args.scale_time
    if args.idle_n:
        d["idle_n"] = args.idle_n
    if args.idle_time:
        d["idle_seconds"] = args.idle_time
    d["clients"] = args.scale_clients
    d["rounds"] = args.scale_rounds if args.scale_rounds is not None else args.rounds
    d["switch_interval"] = args.switch_interval
    return d


def table_rows(args: argparse.Namespace) -> List[Row]:
    """The scale keys: per N and switch interval, msg/s, p50, p99 and the client's CPU."""
    s = settings(args)
    rows: List[Row] = []
    for n in s["n"]:
        for sw, label in (("d", ""), ("r", " si=%g" % s["switch_interval"])):
            key = "scale:%d:%s" % (n, sw)
            rows += [(key, "scale %d%s" % (n, label), "msg/s", True),
                     (key + ":p50", "scale %d%s p50" % (n, label), "ms", False),
                     (key + ":p99", "scale %d%s p99" % (n, label), "ms", False),
                     (key + ":cli", "scale %d%s client CPU" % (n, label), "% core", False)]
    return rows


def server_kind(col: Column) -> Optional[str]:
    """The server a column runs in these rows (None: a client-only column)."""
    if col.client_only:
        return None
    return "wsfloor" if col.server == "floor" else col.server


def note_ext(col: Column, srv: Server) -> None:
    """The compiled simplews modules the server loaded (for the report)."""
    if col.lib == "simplews" and col.server_ext is None:
        col.server_ext = srv.info.get("ext")


def raise_nofile(b: Bench, need: int) -> None:
    """RLIMIT_NOFILE up for N connections (children inherit it): the hard limit to 3 per
    connection if allowed (root with CAP_SYS_RESOURCE), else the soft one to the hard
    one; a note if that leaves less than 2 per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * need + 1024
    try:
        if hard < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
    except (ValueError, OSError):
        pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 2 * need + 64:
        note = ("RLIMIT_NOFILE: hard limit %d (could not raise it): %d connections fit a server "
                "holding 1 descriptor per connection, not one holding 2 or more (the websockets "
                "server holds 4): such a cell fails and says so; raise the limit (ulimit -Hn, "
                "limits.conf) or lower --scale-n/--idle-n" % (hard, need))
        if note not in b.notes:
            b.notes.append(note)


def loadgen(mode: str, port: int, n: int, seconds: float, clients: int) -> Any:
    args = [sys.executable, LOADGEN, mode, str(port), str(n), str(seconds), str(clients)]
    return PROCS.spawn(args, child_env(), "loadgen.log")


def answer(line: str, want: str) -> Dict[str, Any]:
    """The JSON of a loadgen line that must start with want (BenchError otherwise)."""
    word, _, rest = line.partition(" ")
    res: Dict[str, Any] = json.loads(rest) if rest.strip().startswith("{") else {}
    if "error" in res:
        raise BenchError(res["error"])
    if word != want:
        raise BenchError("load client: unexpected %r" % line[:80])
    return res


class Cell:
    """One cell's server and load client, stopped on the way out; an exception inside
    is the cell's error (recorded, swallowed: ok stays False)."""

    def __init__(self, b: Bench, key: str, col: Column) -> None:
        self.b, self.key, self.col = b, key, col
        self.srv: Optional[Server] = None
        self.lg: Any = None
        self.ok = False
        self.fds_note = ""
        self.fds = -1           # the server's descriptors once every connection is open

    def __enter__(self) -> Cell:
        return self

    def __exit__(self, et: Any, e: Optional[BaseException], tb: Any) -> bool:
        fds = max(self.fds, proc_fds(self.srv.pid) if self.srv else -1)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.fds_note = (" (the server had %d descriptors open, RLIMIT_NOFILE %d)" % (fds, hard)
                         if fds > hard - 100 else "")
        if self.lg:
            PROCS.stop(self.lg)
        if self.srv:
            self.srv.stop()
        if isinstance(e, Exception):
            self.error("%s: %s" % (type(e).__name__, e))
            return True
        self.ok = e is None
        return False

    def error(self, text: str) -> None:
        self.b.record(self.key, self.col, error=text + self.fds_note)


def scale_cell(b: Bench, col: Column, n: int, raised: bool) -> None:
    """One server process, N connections, the closed loop; lost or wrong echoes are an error."""
    s = b.scale
    kind = server_kind(col)
    key = "scale:%d:%s" % (n, "r" if raised else "d")
    if kind is None:
        return
    extra = ["--defaults"] + (["--switch-interval", str(s["switch_interval"])] if raised else [])
    with Cell(b, key, col) as c:
        srv = c.srv = Server(kind, env=col.worker_env, tag="-scale", extra=extra)
        note_ext(col, srv)
        lg = c.lg = loadgen("scale", srv.port, n, s["seconds"], s["clients"])
        conn = answer(readline_timeout(lg, 60 + n / 20), "CONNECTED")
        c.fds = proc_fds(srv.pid)
        res = answer(readline_timeout(lg, s["seconds"] + 60), "RESULT")
    if not c.ok:
        return
    if res["lost"] or res["bad"] or res["closed_by_server"]:
        c.error("%d lost, %d wrong, %d connections closed by the server (%.0f msg/s)" % (
            res["lost"], res["bad"], res["closed_by_server"], res["msgs_per_s"]))
        return
    b.record(key, col, res["msgs_per_s"])
    b.record(key + ":p50", col, res["p50_ms"])
    b.record(key + ":p99", col, res["p99_ms"])
    b.record(key + ":cli", col, res["client_cpu_pct"])
    print("    %-18s scale %5d %-7s %9.0f msg/s  p50 %7.1f ms  p99 %7.1f ms  client %3.0f %%  "
          "(connect %.1f s, %d echoes checked)" % (
              col.name, n, "si=%g" % s["switch_interval"] if raised else "default", res["msgs_per_s"],
              res["p50_ms"], res["p99_ms"], res["client_cpu_pct"], conn["seconds"], res["sent"]),
          flush=True)


def measure_scale(b: Bench, order: List[Column]) -> None:
    """Every N, both switch intervals, every column (in this round's order)."""
    raise_nofile(b, max(b.scale["n"]))
    for n in b.scale["n"]:
        for raised in (False, True):
            for col in order:
                scale_cell(b, col, n, raised)


def default_ping_interval() -> float:
    """simplews' default ping_interval: the floor pinging pings as often."""
    import inspect

    from simplews.endpoint import Endpoint
    return float(inspect.signature(Endpoint.__init__).parameters["ping_interval"].default)


def measure_idle_cpu(b: Bench, col: Column) -> None:
    """CPU (% of a core) and VmRSS per connection of a fresh server holding N idle
    connections with its defaults (keepalive on), over the window after all connect.
    The floor twice: as it is (no pings), and pinging as often as simplews does."""
    kind = server_kind(col)
    if kind is None:
        return
    raise_nofile(b, b.scale["idle_n"])
    idle_cpu_cell(b, col, kind, "idle_cpu", ["--defaults"])
    if kind == "wsfloor":
        idle_cpu_cell(b, col, kind, "idle_cpu_pinging", ["--ping-interval", str(default_ping_interval())])


def idle_cpu_cell(b: Bench, col: Column, kind: str, key: str, extra: List[str]) -> None:
    n, window = b.scale["idle_n"], b.scale["idle_seconds"]
    with Cell(b, key, col) as c:
        srv = c.srv = Server(kind, env=col.worker_env, tag="-idlecpu", extra=extra)
        note_ext(col, srv)
        time.sleep(0.5)
        rss0, thr0 = proc_status(srv.pid)
        lg = c.lg = loadgen("idle", srv.port, n, 0, b.scale["clients"])
        conn = answer(readline_timeout(lg, 60 + n / 20), "CONNECTED")
        c.fds = proc_fds(srv.pid)
        time.sleep(1.0)
        c0, t0 = proc_cpu(srv.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = proc_cpu(srv.pid), time.monotonic()
        rss1, thr1 = proc_status(srv.pid)
        lg.stdin.write(b"stop\n")
        lg.stdin.flush()
        res = answer(readline_timeout(lg, 60), "RESULT")
    if not c.ok:
        return
    if res["closed_by_server"]:
        c.error("the server closed %d of %d idle connections" % (res["closed_by_server"], n))
        return
    cpu = 100 * (c1 - c0) / (t1 - t0)
    b.record(key, col, cpu)
    if key == "idle_cpu":
        b.record("idle_cpu_kib", col, (rss1 - rss0) / n)
    print("    %-18s %s %d conns: %.2f %% of a core, %.1f KiB/conn, %.2f threads/conn, "
          "%d descriptors (connect %.1f s, %d pings answered)" % (
              col.name, key.replace("_", "-"), n, cpu, (rss1 - rss0) / n, (thr1 - thr0) / n, c.fds,
              conn["seconds"], res["pings"]), flush=True)
