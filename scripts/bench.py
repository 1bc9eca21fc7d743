#!/usr/bin/env python3
"""simplews benchmark (issue 6): simplews vs. a raw-TCP floor and the peers.

    python scripts/bench.py [--with-peers] [--quick] [--rounds N] [--json FILE]
                            [--only COL,COL] [--rows ROW,ROW] [--profile]

Rows (full counts; --quick scales them down to finish in under a minute):

    rtt         10,000 round trips of a 32-byte text message, one in flight
    pipeline    40,000 binary 64-byte messages sent by one thread while the
                main thread receives the echoes
    large       16 echoes of a 4 MiB binary message (MiB/s of payload echoed)
    deflate     2,000 echoes of a 17.5 KiB JSON-like text, permessage-deflate
                on both sides (16 distinct texts of the same shape, cycled, so
                context takeover cannot just point at the previous identical
                message); plus the bytes each message takes on the wire in each
                direction, counted by a TCP relay in the bench process
                (steady state: difference between a 48-echo and a 16-echo
                connection, divided by 32)
    handshakes  300 x (connect, one 32-byte echo, close)
    idle        server-side VmRSS and Threads (from /proc/PID/status) added per
                connection for 200 idle connections, on a fresh server process

Columns:

    floor             raw TCP, blocking sockets, 5-byte prefix (1-byte type +
                      4-byte length), recv_into a reusable buffer, TCP_NODELAY,
                      thread-per-connection echo server (scripts/bench/bench_floor.py);
                      its deflate row runs zlib on both sides the way
                      permessage-deflate does, with websockets' default
                      parameters (12-bit window, memLevel 5, level 6)
    simplews          simplews client + simplews server (C accelerator if built)
    simplews (pure)   SIMPLEWS_NO_EXTENSIONS=1 in the server process and in a
                      client worker subprocess (the flag is read at import time,
                      so the client cannot share the bench process); the worker
                      runs the same workload code and times itself, the same
                      way as in-process clients. Shown only when the tree has a
                      compiled simplews module.
    websockets        websockets.sync.client against websockets.sync.server
    simple-websocket  simple_websocket.Client against simple_websocket.Server
                      behind a minimal WSGI-ish thread-per-connection front end
                      (scripts/bench/bench_servers.py); no deflate (its client
                      does not offer permessage-deflate)
    websocket-client  websocket-client against a websockets.sync server (client
                      only: no idle row; no deflate support)

--pin CPU runs the bench and all servers on one CPU: every round trip is then a
context switch on that core rather than a cross-CPU wake-up, so the rows
measure the libraries' CPU cost (client + server), which is what stays stable on
a VM; unpinned rtt on a quiet VM is dominated by vCPU wake-up latency and
compresses every ratio towards 1. Report both.

Every server runs in its own process on 127.0.0.1 with a free port; clients run
in the bench process (except simplews (pure), see above). Compression is off
except in the deflate row, max_size is unlimited, keepalive pings are off, all
other settings are the libraries' defaults. Rounds are interleaved (every
column for a row, the column order rotating from round to round, then the next
row; then the next round); the median over rounds is reported, with ratios to
the best peer and to the floor. The output also gives each cell's spread
(max/min over rounds) and, for the goals, the "paired" ratio: the median over
rounds of simplews / reference measured in the same round, which cancels most
of the machine's load changes between rounds (rtt is the row most sensitive to
other processes: on a 2-core machine a busy neighbour adds a scheduler wake-up
to every round trip). Run it on a quiet machine and read `uptime` in the output.

--with-peers creates .cache/bench-venv (python -m venv; pip install websockets
simple-websocket websocket-client py-spy pyinstrument, and -e . for simplews)
and re-executes itself there. Without it, a column whose library does not
import is skipped with a note. simplews is always imported from this working
tree (its root is put first on sys.path / PYTHONPATH).

--profile [--rows ROW,...]: instead of the table, profile simplews' hot paths
(default rows: rtt, pipeline):
cProfile on the client (in-process) and on the server handler threads; prints
the top functions and writes .prof files under .cache/bench-prof/.
"""
import argparse
import atexit
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "scripts", "bench")
CACHE = os.path.join(ROOT, ".cache")
VENV = os.path.join(CACHE, "bench-venv")
LOGS = os.path.join(CACHE, "bench-logs")
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import bench_clients as bc  # noqa: E402

PEER_PACKAGES = ["websockets", "simple-websocket", "websocket-client", "py-spy", "pyinstrument"]

FULL = {"rtt": 10000, "pipeline": 40000, "large": 16, "deflate": 2000, "handshakes": 300, "idle": 200}
QUICK = {"rtt": 2000, "pipeline": 8000, "large": 4, "deflate": 250, "handshakes": 50, "idle": 50}
ROWS = ["rtt", "pipeline", "large", "deflate", "handshakes", "idle"]

# table rows: (key, label, unit, higher_is_better)
TABLE = [
    ("rtt", "rtt", "msg/s", True),
    ("pipeline", "pipeline", "msg/s", True),
    ("large", "large", "MiB/s", True),
    ("deflate", "deflate", "msg/s", True),
    ("deflate_size_s2c", "deflate size srv->cli", "B/msg", False),
    ("deflate_size_c2s", "deflate size cli->srv", "B/msg", False),
    ("handshakes", "handshakes", "hs/s", True),
    ("idle_kib", "idle memory", "KiB/conn", False),
    ("idle_threads", "idle threads", "thr/conn", False),
]


class Column:
    def __init__(self, name, lib, server, peer=False, worker_env=None, client_only=False,
                 no_deflate=None):
        self.name = name
        self.lib = lib
        self.server = server
        self.peer = peer
        self.worker_env = worker_env      # run the client in a worker with this env
        self.client_only = client_only
        self.no_deflate = no_deflate      # reason
        self.note = ""
        self.version = ""
        self.skip = None


COLUMNS = [
    Column("floor", "floor", "floor"),
    Column("simplews", "simplews", "simplews"),
    Column("simplews (pure)", "simplews", "simplews", worker_env={"SIMPLEWS_NO_EXTENSIONS": "1"}),
    Column("websockets", "websockets", "websockets", peer=True),
    Column("simple-websocket", "simple-websocket", "simple-websocket", peer=True,
           no_deflate="simple_websocket.Client offers no permessage-deflate"),
    Column("websocket-client", "websocket-client", "websockets", peer=True, client_only=True,
           no_deflate="websocket-client has no permessage-deflate"),
]


class BenchTimeout(Exception):
    pass


class BenchError(Exception):
    pass


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        return "load average: " + loadavg()


def tree_state():
    """HEAD commit and whether simplews/ has uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "simplews"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return "%s%s" % (head[:72], " (+ uncommitted changes in simplews/)" if dirty else "")
    except Exception:
        return "?"


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    return out["VmRSS"], out["Threads"]


# ---------------------------------------------------------------------------
# subprocesses

def child_env(extra=None):
    env = dict(os.environ)
    env.pop("SIMPLEWS_NO_EXTENSIONS", None)
    pp = [ROOT, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(pp)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class Procs:
    """Every subprocess we start, stopped by its pid at exit."""

    def __init__(self):
        self.procs = []
        atexit.register(self.stop_all)

    def spawn(self, args, env, logname):
        os.makedirs(LOGS, exist_ok=True)
        log = open(os.path.join(LOGS, logname), "ab")
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                             env=env, cwd=ROOT)
        log.close()
        p.logname = logname
        self.procs.append(p)
        return p

    def stop(self, p, grace=3.0, eof_wait=0.0):
        if p in self.procs:
            self.procs.remove(p)
        try:
            p.stdin.close()
        except Exception:
            pass
        if eof_wait:            # let it finish by itself on stdin EOF first
            try:
                p.wait(eof_wait)
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        try:
            p.stdout.close()
        except Exception:
            pass

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p, grace=2.0)


PROCS = Procs()


def readline_timeout(p, timeout):
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchTimeout("no answer from pid %d in %.0fs" % (p.pid, timeout))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            ch = os.read(fd, 65536)
            if not ch:
                raise BenchError("pid %d exited (rc=%s); see %s" % (
                    p.pid, p.poll(), os.path.join(LOGS, p.logname)))
            buf += ch
    return buf.decode()


class Server:
    def __init__(self, kind, deflate=False, env=None, profile=None, tag=""):
        args = [sys.executable, os.path.join(HERE, "bench_servers.py"), kind]
        if deflate:
            args.append("--deflate")
        if profile:
            args += ["--profile", profile]
        name = "server-%s%s%s.log" % (kind, "-deflate" if deflate else "", tag)
        self.proc = PROCS.spawn(args, child_env(env), name)
        line = readline_timeout(self.proc, 30)
        if not line.startswith("READY "):
            raise BenchError("server %s: unexpected %r" % (kind, line))
        self.info = json.loads(line[6:])
        self.port = self.info["port"]
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, eof_wait=0.0):
        PROCS.stop(self.proc, eof_wait=eof_wait)


class Worker:
    """Client worker subprocess (bench_clients.worker_main)."""

    def __init__(self, env):
        args = [sys.executable, os.path.abspath(__file__), "--client-worker"]
        self.proc = PROCS.spawn(args, child_env(env), "client-worker.log")

    def call(self, timeout, **cmd):
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise BenchError("worker died: %s" % e)
        res = json.loads(readline_timeout(self.proc, timeout))
        if not res.pop("ok"):
            raise BenchError(res["error"])
        return res

    def stop(self):
        PROCS.stop(self.proc)


# ---------------------------------------------------------------------------
# counting relay (deflate wire size)

class Relay:
    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns = []           # [c2s, s2c, done_event]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rec = [0, 0, threading.Event(), threading.Event()]
            self.conns.append(rec)
            threading.Thread(target=self._pump, args=(a, b, rec, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, rec, 1), daemon=True).start()

    def _pump(self, src, dst, rec, i):
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                rec[i] += n
                dst.sendall(mv[:n])
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        rec[2 + i].set()
        if rec[2].is_set() and rec[3].is_set():
            src.close()
            dst.close()

    def close(self):
        self.lsock.close()


# ---------------------------------------------------------------------------
# the benchmark

def in_process_call(timeout, fn, *args):
    def on_alarm(signum, frame):
        import faulthandler
        os.makedirs(LOGS, exist_ok=True)
        with open(os.path.join(LOGS, "hangs.log"), "a") as f:
            f.write("\n=== %s: %s%r timed out after %ds\n" % (time.ctime(), fn.__name__, args, timeout))
            f.flush()
            faulthandler.dump_traceback(f, all_threads=True)
        raise BenchTimeout("timed out after %ds" % timeout)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Bench:
    def __init__(self, args):
        self.args = args
        self.counts = dict(QUICK if args.quick else FULL)
        self.timeout = 15 if args.quick else 60
        self.columns = []
        self.servers = {}          # (column name, deflate) -> Server
        self.workers = {}          # column name -> Worker
        self.results = {k: {} for k, *_ in TABLE}
        self.errors = {}
        self.notes = []
        self.round = 0
        self.by_round = {k: {} for k, *_ in TABLE}   # key -> column -> {round: value}

    # -- setup -------------------------------------------------------------
    def pick_columns(self):
        only = set(self.args.only.split(",")) if self.args.only else None
        has_ext = self.tree_has_extension()
        for col in COLUMNS:
            if only and col.name not in only:
                continue
            try:
                __import__(bc.IMPORTS[col.lib])
                if col.lib == "simplews":
                    import simplews
                    simplews.connect, simplews.serve  # noqa: B018
                if col.server in ("websockets",) and col.lib != "websockets":
                    __import__("websockets.sync.server")
            except Exception as e:
                col.skip = "not importable (%s: %s)" % (type(e).__name__, e)
            if col.worker_env and not col.skip and not has_ext:
                col.skip = "no compiled simplews module in the tree: the simplews column is pure Python"
            col.version = bc.lib_version(col.lib)
            if col.skip:
                self.notes.append("column %s skipped: %s" % (col.name, col.skip))
            else:
                self.columns.append(col)
        if os.environ.get("SIMPLEWS_NO_EXTENSIONS"):
            self.notes.append("SIMPLEWS_NO_EXTENSIONS is set in the bench process: the simplews "
                              "column's client is pure too")

    @staticmethod
    def tree_has_extension():
        d = os.path.join(ROOT, "simplews")
        for base, _, files in os.walk(d):
            if any(f.endswith((".so", ".pyd")) for f in files):
                return True
        return False

    def server(self, col, deflate):
        key = (col.name, deflate)
        s = self.servers.get(key)
        if s is None or not s.alive():
            s = Server(col.server, deflate, env=col.worker_env, tag="-" + col.name.replace(" ", ""))
            self.servers[key] = s
            if col.lib == "simplews" and not deflate:
                col.server_ext = s.info.get("ext")
        return s

    def restart_server(self, col, deflate):
        s = self.servers.pop((col.name, deflate), None)
        if s:
            s.stop()

    def worker(self, col):
        w = self.workers.get(col.name)
        if w is None or w.proc.poll() is not None:
            w = Worker(col.worker_env)
            w.call(30, op="import", lib=col.lib)
            self.workers[col.name] = w
        return w

    def kill_worker(self, col):
        w = self.workers.pop(col.name, None)
        if w:
            w.stop()

    # -- one measurement ----------------------------------------------------
    def run_client(self, col, timeout, op, **kw):
        if col.worker_env:
            try:
                return self.worker(col).call(timeout, op=op, lib=col.lib, **kw)
            except (BenchTimeout, BenchError):
                self.kill_worker(col)
                raise
        if op == "run":
            dt = in_process_call(timeout, bc.WORKLOADS[kw["row"]], col.lib, kw["port"], kw["n"])
            return {"elapsed": dt, "ext": bc.simplews_extensions()}
        if op == "deflate_echoes":
            in_process_call(timeout, bc.deflate_echoes, col.lib, kw["port"], kw["n"])
            return {}
        raise ValueError(op)

    def record(self, key, col, value=None, error=None):
        if error is not None:
            self.errors.setdefault(key, {})[col.name] = error
            print("    %-18s %-10s ERROR %s" % (col.name, key, error), flush=True)
            return
        self.results[key].setdefault(col.name, []).append(value)
        self.by_round[key].setdefault(col.name, {})[self.round] = value

    def measure(self, row, col):
        n = self.counts[row]
        deflate = row == "deflate"
        if deflate and col.no_deflate:
            return
        for attempt in (1, 2):
            try:
                srv = self.server(col, deflate)
                res = self.run_client(col, self.timeout, "run", row=row, port=srv.port, n=n)
                break
            except Exception as e:
                self.restart_server(col, deflate)
                if attempt == 1 and isinstance(e, BenchTimeout):
                    # a rare hang in a library (seen in simple-websocket): note it, try again
                    self.notes.append("%s / %s: hung (%s), measured again (traceback in %s)" % (
                        row, col.name, e, os.path.join(LOGS, "hangs.log")))
                    print("    %-18s %-10s hung, retrying" % (col.name, row), flush=True)
                    continue
                self.record(row, col, error="%s: %s" % (type(e).__name__, e))
                return
        if col.lib == "simplews" and not deflate:
            col.client_ext = res.get("ext")
        dt = res["elapsed"]
        value = n * (bc.LARGE_SIZE / 2**20) / dt if row == "large" else n / dt
        self.record(row, col, value)
        if self.args.verbose:
            print("    %-18s %-10s %12.1f" % (col.name, row, value), flush=True)

    def measure_idle(self, col):
        if col.client_only:
            return
        n = self.counts["idle"]
        srv = None
        try:
            srv = Server(col.server, False, env=col.worker_env, tag="-idle")
            time.sleep(0.5)
            rss0, thr0 = proc_status(srv.pid)
            if col.worker_env:
                self.worker(col).call(self.timeout, op="idle_open", lib=col.lib, port=srv.port, n=n)
            else:
                closers = in_process_call(self.timeout, bc.idle_open, col.lib, srv.port, n)
            time.sleep(1.0)
            rss1, thr1 = proc_status(srv.pid)
            if col.worker_env:
                self.worker(col).call(self.timeout, op="idle_close")
            else:
                in_process_call(self.timeout, bc.idle_close, closers)
                closers = None
        except Exception as e:
            self.record("idle_kib", col, error="%s: %s" % (type(e).__name__, e))
            if col.worker_env:
                self.kill_worker(col)
            return
        finally:
            if srv:
                srv.stop()
        self.record("idle_kib", col, (rss1 - rss0) / n)
        self.record("idle_threads", col, (thr1 - thr0) / n)
        if self.args.verbose:
            print("    %-18s %-10s %8.1f KiB/conn %6.2f threads/conn" % (
                col.name, "idle", (rss1 - rss0) / n, (thr1 - thr0) / n), flush=True)

    def measure_size(self, col):
        if col.no_deflate:
            return
        try:
            srv = self.server(col, True)
            relay = Relay(srv.port)
            totals = []
            for k in (16, 48):
                self.run_client(col, self.timeout, "deflate_echoes", port=relay.port, n=k)
                rec = relay.conns[-1]
                if not (rec[2].wait(10) and rec[3].wait(10)):
                    raise BenchTimeout("relay did not see the connection end")
                totals.append((rec[0], rec[1]))
            relay.close()
            c2s = (totals[1][0] - totals[0][0]) / 32
            s2c = (totals[1][1] - totals[0][1]) / 32
        except Exception as e:
            self.record("deflate_size_s2c", col, error="%s: %s" % (type(e).__name__, e))
            return
        self.record("deflate_size_s2c", col, s2c)
        self.record("deflate_size_c2s", col, c2s)

    # -- the run -------------------------------------------------------------
    def run(self):
        rows = self.args.rows.split(",") if self.args.rows else ROWS
        self.meta = {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "uptime_start": uptime(),
            "tree": tree_state(),
            "counts": self.counts,
            "rounds": self.args.rounds,
            "quick": self.args.quick,
            "cpus": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
        }
        print("simplews benchmark: %s, %d rounds, python %s" % (
            "quick" if self.args.quick else "full", self.args.rounds, self.meta["python"]))
        print("start: %s" % self.meta["uptime_start"])
        print("tree:  %s" % self.meta["tree"])
        print("cpus:  %s" % (self.meta["affinity"] if len(self.meta["affinity"]) < (os.cpu_count() or 1)
                             else "all %d (not pinned)" % len(self.meta["affinity"])))
        self.pick_columns()
        for note in self.notes:
            print("note: " + note)
        print("columns: " + ", ".join("%s %s" % (c.name, c.version) for c in self.columns), flush=True)
        t_start = time.monotonic()
        for r in range(self.args.rounds):
            self.round = r
            print("round %d/%d ..." % (r + 1, self.args.rounds), flush=True)
            k = len(self.columns)
            order = [self.columns[(i + r) % k] for i in range(k)] if k else []
            for row in rows:
                if row == "idle":
                    for col in order:
                        self.measure_idle(col)
                    continue
                for col in order:
                    self.measure(row, col)
                if row == "deflate" and r == 0:
                    for col in order:
                        self.measure_size(col)
        self.meta["uptime_end"] = uptime()
        self.meta["seconds"] = round(time.monotonic() - t_start, 1)
        for s in self.servers.values():
            s.stop()
        for w in list(self.workers.values()):
            w.stop()
        self.report()

    # -- reporting -------------------------------------------------------------
    def medians(self):
        med = {}
        for key, *_ in TABLE:
            med[key] = {c: statistics.median(v) for c, v in self.results[key].items() if v}
        return med

    def report(self):
        med = self.medians()
        names = [c.name for c in self.columns]
        peers = [c.name for c in self.columns if c.peer]
        cols = [c for c in names]

        def fmt(key, v):
            if v is None:
                return "-"
            if key == "idle_threads":
                return "%.2f" % v
            if key == "idle_kib" or key == "large":
                return "%.1f" % v
            return "{:,.0f}".format(v)

        best = {}
        for key, _, _, hib in TABLE:
            vals = [(med[key][p], p) for p in peers if p in med[key]]
            if vals:
                best[key] = max(vals) if hib else min(vals)

        header = ["row", "unit"] + cols + ["best peer"]
        lines = []
        for key, label, unit, _ in TABLE:
            if not any(c in med[key] for c in cols) and key not in self.errors:
                continue
            cells = [label, unit]
            for c in cols:
                if c in med[key]:
                    cells.append(fmt(key, med[key][c]))
                elif c in self.errors.get(key, {}):
                    cells.append("error")
                else:
                    cells.append("n/a")
            cells.append(best[key][1] if key in best else "-")
            lines.append(cells)
        widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header))]
        print()
        print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
        print("  ".join("-" * w for w in widths))
        for cells in lines:
            print("  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                            for i, (x, w) in enumerate(zip(cells, widths))))
        print()
        spread = []
        for key, label, unit, _ in TABLE:
            cells = []
            for c in cols:
                v = self.results[key].get(c)
                if v and len(v) > 1 and min(v) > 0 and key not in ("deflate_size_s2c", "deflate_size_c2s"):
                    cells.append("%s %.2f" % (c, max(v) / min(v)))
            if cells:
                spread.append("  %-22s %s" % (label, ", ".join(cells)))
        if spread:
            print("spread over rounds (max/min):")
            print("\n".join(spread))
        print("medians of %d rounds; %s; %.0f s" % (self.args.rounds,
                                                    "quick counts" if self.args.quick else "full counts",
                                                    self.meta["seconds"]))
        print("counts: " + ", ".join("%s %d" % kv for kv in self.counts.items()))
        print("start: %s" % self.meta["uptime_start"])
        print("end:   %s" % self.meta["uptime_end"])
        print("tree:  %s" % self.meta["tree"])
        for c in self.columns:
            if c.lib == "simplews":
                print("%s: client ext %s, server ext %s" % (
                    c.name, getattr(c, "client_ext", "?"), getattr(c, "server_ext", "?")))
        for c in self.columns:
            if c.no_deflate:
                print("note: %s: no deflate row (%s)" % (c.name, c.no_deflate))
            if c.client_only:
                print("note: %s: client only, runs against a websockets.sync server; no idle row" % c.name)
        for note in self.notes:
            print("note: " + note)
        for key, errs in self.errors.items():
            for c, e in errs.items():
                print("error: %s / %s: %s" % (key, c, e))

        ratios = self.ratios(med, best)
        if ratios:
            print()
            print("ratios and goals")
            for rname, rr in ratios.items():
                for g in rr:
                    print("  %-16s %-12s %-34s %-22s %s" % (rname, g["row"], g["what"], g["goal"],
                                                            g["status"]))
        if self.args.json:
            out = {
                "meta": self.meta,
                "columns": {c.name: {"lib": c.lib, "server": c.server, "version": c.version,
                                     "peer": c.peer, "client_ext": getattr(c, "client_ext", None),
                                     "server_ext": getattr(c, "server_ext", None)}
                            for c in self.columns},
                "units": {key: unit for key, _, unit, _ in TABLE},
                "values": self.results,
                "values_by_round": self.by_round,
                "medians": med,
                "best_peer": {k: {"column": v[1], "value": v[0]} for k, v in best.items()},
                "ratios": ratios,
                "errors": self.errors,
                "notes": self.notes,
            }
            with open(self.args.json, "w") as f:
                json.dump(out, f, indent=2)
            print("\nJSON written to %s" % self.args.json)

    def ratios(self, med, best):
        out = {}
        for c in self.columns:
            if c.lib != "simplews":
                continue
            name = c.name
            res = []

            def ratio(key, ref):
                if name in med[key] and ref:
                    return med[key][name] / ref
                return None

            def paired(key, refcol):
                """median over rounds of this round's simplews / this round's reference"""
                a = self.by_round[key].get(name, {})
                b = self.by_round[key].get(refcol, {}) if refcol else {}
                rs = [a[r] / b[r] for r in a if r in b and b[r]]
                return statistics.median(rs) if rs else None

            def add(row, what, val, goal, ok, pair=None):
                if val is None:
                    status = "n/a"
                elif goal == "(info)":
                    status = "%.2f" % val
                else:
                    status = "%.2f  %s" % (val, "PASS" if ok(val) else "MISS")
                if pair is not None:
                    status += "   (paired per round: %.2f)" % pair
                res.append({"row": row, "what": what, "value": val, "goal": goal, "status": status,
                            "paired": pair})

            floor = lambda k: med[k].get("floor")  # noqa: E731
            bp = lambda k: best[k][0] if k in best else None  # noqa: E731
            bpc = lambda k: best[k][1] if k in best else None  # noqa: E731
            add("rtt", "x floor", ratio("rtt", floor("rtt")), ">= 0.8", lambda v: v >= 0.8,
                paired("rtt", "floor"))
            add("rtt", "x best peer", ratio("rtt", bp("rtt")), "(info)", lambda v: True)
            add("pipeline", "x best peer", ratio("pipeline", bp("pipeline")), ">= 1.3", lambda v: v >= 1.3,
                paired("pipeline", bpc("pipeline")))
            add("pipeline", "x floor", ratio("pipeline", floor("pipeline")), "(info)", lambda v: True)
            add("large", "x best peer", ratio("large", bp("large")), ">= 1.2", lambda v: v >= 1.2,
                paired("large", bpc("large")))
            add("large", "x floor", ratio("large", floor("large")), "(info)", lambda v: True)
            ws = lambda k: med[k].get("websockets")  # noqa: E731
            add("deflate", "x websockets", ratio("deflate", ws("deflate")), ">= 1.3", lambda v: v >= 1.3,
                paired("deflate", "websockets"))
            add("deflate", "x floor", ratio("deflate", floor("deflate")), "(info)", lambda v: True)
            add("deflate", "size srv->cli / websockets", ratio("deflate_size_s2c", ws("deflate_size_s2c")),
                "<= 1.10", lambda v: v <= 1.10)
            add("deflate", "size cli->srv / websockets", ratio("deflate_size_c2s", ws("deflate_size_c2s")),
                "<= 1.10", lambda v: v <= 1.10)
            add("handshakes", "x best peer", ratio("handshakes", bp("handshakes")), ">= 2.0", lambda v: v >= 2.0,
                paired("handshakes", bpc("handshakes")))
            add("handshakes", "x floor", ratio("handshakes", floor("handshakes")), "(info)", lambda v: True)
            kib = med["idle_kib"].get(name)
            add("idle", "KiB per conn", kib, "<= 30", lambda v: v <= 30)
            thr = med["idle_threads"].get(name)
            add("idle", "threads per conn", thr, "== 1 (+1 keepalive/proc)",
                lambda v: abs(v - 1) <= 1.0 / self.counts["idle"] + 1e-9)
            out[name] = res
        return out


# ---------------------------------------------------------------------------
# profiling (simplews rtt + pipeline)

def profile_main(args):
    import cProfile
    import pstats
    import simplews  # noqa: F401
    outdir = os.path.join(CACHE, "bench-prof")
    os.makedirs(outdir, exist_ok=True)
    counts = QUICK if args.quick else FULL

    # profile the pipeline's sender thread too (cProfile is per thread)
    thread_profiles = []
    orig_run = threading.Thread.run

    def run(self):
        p = cProfile.Profile()
        p.enable()
        try:
            orig_run(self)
        finally:
            p.disable()
            thread_profiles.append(p)

    print("profiling simplews (%s); start: %s" % (sys.executable, uptime()))
    rows = args.rows.split(",") if args.rows else ["rtt", "pipeline"]
    for row in rows:
        deflate = row == "deflate"
        spath = os.path.join(outdir, "server-%s.prof" % row)
        if os.path.exists(spath):
            os.remove(spath)
        srv = Server("simplews", deflate, profile=spath, tag="-profile")
        try:
            bc.WORKLOADS[row]("simplews", srv.port, min(2000, counts[row]))   # warm
            del thread_profiles[:]
            threading.Thread.run = run
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            bc.WORKLOADS[row]("simplews", srv.port, counts[row])
            prof.disable()
            wall = time.perf_counter() - t0
        finally:
            threading.Thread.run = orig_run
            srv.stop(eof_wait=15)    # on stdin EOF the server dumps its stats, then exits
        paths = [("client (main thread)", os.path.join(outdir, "client-%s.prof" % row))]
        prof.dump_stats(paths[0][1])
        if thread_profiles:
            st = pstats.Stats(thread_profiles[0])
            for p in thread_profiles[1:]:
                st.add(p)
            paths.append(("client (sender thread)", os.path.join(outdir, "client-%s-sender.prof" % row)))
            st.dump_stats(paths[-1][1])
        paths.append(("server (handler threads)", spath))
        print("\n=== %s: %d messages, %.2f s under cProfile (client ext %s, server ext %s)" % (
            row, counts[row], wall, bc.simplews_extensions(), srv.info.get("ext")))
        for side, path in paths:
            if not os.path.exists(path):
                print("--- %s: no stats (%s)" % (side, path))
                continue
            print("--- %s (%s), top by tottime" % (side, path))
            st = pstats.Stats(path)
            st.sort_stats("tottime").print_stats(args.profile_top)
        pyspy_server(row, counts[row], outdir, args.profile_top)


def pyspy_server(row, n, outdir, top):
    """Sample the whole simplews server process (all threads, accept loop and
    handshakes included, no cProfile overhead) with py-spy while the client
    runs the row; print self and inclusive time per function."""
    import shutil
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        exe = shutil.which("py-spy")
    if not exe:
        print("--- py-spy not installed (pip install py-spy, or use --with-peers)")
        return
    srv = Server("simplews", row == "deflate", tag="-pyspy")
    out = os.path.join(outdir, "server-%s.pyspy.txt" % row)
    spy = None
    try:
        bc.WORKLOADS[row]("simplews", srv.port, min(2000, n))   # warm
        spy = PROCS.spawn([exe, "record", "--pid", str(srv.pid), "--rate", "1000", "--format", "raw",
                           "--output", out, "--threads", "--gil", "--function"], os.environ.copy(), "py-spy.log")
        time.sleep(1.0)
        t0 = time.perf_counter()
        bc.WORKLOADS[row]("simplews", srv.port, n)
        wall = time.perf_counter() - t0
    finally:
        if spy is not None:
            os.kill(spy.pid, signal.SIGINT)      # py-spy writes its output on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                pass
            PROCS.stop(spy)
        srv.stop()
    if not os.path.exists(out):
        print("--- py-spy: no output (see %s)" % os.path.join(LOGS, "py-spy.log"))
        return
    selft, incl, total = {}, {}, 0
    with open(out) as f:
        for line in f:
            stack, _, cnt = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            cnt = int(cnt)
            frames = [fr for fr in stack.split(";") if not fr.startswith("thread (")
                      and not fr.startswith("process ")]
            if not frames:
                continue
            total += cnt
            leaf = frames[-1]
            selft[leaf] = selft.get(leaf, 0) + cnt
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + cnt
    print("--- server, py-spy --gil sampling of the whole process (%d samples at 1 kHz over %.2f s of "
          "client time; %s)" % (total, wall, out))
    print("    self%   incl%  function")
    for fr, c in sorted(selft.items(), key=lambda kv: -kv[1])[:top]:
        print("  %6.1f  %6.1f  %s" % (100.0 * c / total, 100.0 * incl[fr] / total, fr))


def extension_stale():
    src, built = [], []
    for base, _, files in os.walk(os.path.join(ROOT, "simplews")):
        for f in files:
            path = os.path.join(base, f)
            if f.endswith(".c"):
                src.append(os.path.getmtime(path))
            elif f.endswith((".so", ".pyd")):
                built.append(os.path.getmtime(path))
    return bool(src) and (not built or max(src) > min(built))


def ensure_venv():
    """Create .cache/bench-venv with the peers (and simplews -e) and re-exec
    inside it. The peers are never dependencies of simplews."""
    vpy = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    stamp = os.path.join(VENV, ".bench-peers")
    want = "\n".join(PEER_PACKAGES + ["-e " + ROOT]) + "\n"
    try:
        with open(stamp) as f:
            have = f.read()
    except OSError:
        have = None
    if have != want:
        print("setting up %s ..." % VENV, flush=True)
        if not os.path.exists(vpy):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=300)
        subprocess.run([vpy, "-m", "pip", "install", "-q"] + PEER_PACKAGES, check=True, timeout=600)
        # simplews with its own dependencies (certifi); the tree is also first on
        # sys.path/PYTHONPATH, so the working tree is what gets measured
        r = subprocess.run([vpy, "-m", "pip", "install", "-q", "-e", ROOT], timeout=600)
        if r.returncode:
            print("note: pip install -e . failed; installing certifi and importing simplews "
                  "from the tree via PYTHONPATH")
            subprocess.run([vpy, "-m", "pip", "install", "-q", "certifi"], check=True, timeout=600)
        with open(stamp, "w") as f:
            f.write(want)
    elif extension_stale():
        # C sources newer than the built module: rebuild in place (build
        # artifacts only; *.so and build/ are git-ignored)
        print("simplews C sources changed: pip install -e . to rebuild the accelerator", flush=True)
        subprocess.run([vpy, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT], timeout=600)
    sys.stdout.flush()
    os.execv(vpy, [vpy, os.path.abspath(__file__)] + sys.argv[1:])


def main():
    if sys.argv[1:2] == ["--client-worker"]:
        bc.worker_main()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--with-peers", action="store_true",
                    help="install the peers into .cache/bench-venv and run there")
    ap.add_argument("--quick", action="store_true", help="scaled-down counts (< 1 minute)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--only", help="comma-separated column names")
    ap.add_argument("--rows", help="comma-separated rows (%s)" % ",".join(ROWS))
    ap.add_argument("--profile", action="store_true", help="profile simplews rtt/pipeline instead")
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--pin", type=int, metavar="CPU",
                    help="pin the bench and every server to this CPU (children inherit it): "
                         "measures CPU cost without cross-CPU wake-ups (steadier on VMs)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every measurement")
    args = ap.parse_args()
    if args.with_peers:
        ensure_venv()

    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.profile:
            profile_main(args)
        else:
            if args.rounds < 3:
                print("note: fewer than 3 rounds: medians are not robust")
            Bench(args).run()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130)
    finally:
        PROCS.stop_all()


if __name__ == "__main__":
    main()
