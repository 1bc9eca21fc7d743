"""The benchmark run: columns picked, servers and workers kept, rounds interleaved,
every measurement recorded (report.py prints them)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from . import bench_clients as bc
from . import scale
from .config import COLUMNS, FULL, LOGS, QUICK, ROWS, TABLE, BenchError, BenchTimeout, Column
from .machine import proc_status, tree_has_extension, tree_state, uptime
from .procs import Server, Worker, in_process_call
from .relay import TcpRelay
from .report import report


class Bench:
    """State of one run: results[key][column] is the list of values over rounds,
    by_round[key][column][round] the same by round."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts = dict(QUICK if args.quick else FULL)
        self.timeout = 15 if args.quick else 60
        self.columns: List[Column] = []
        self.servers: Dict[Tuple[str, bool, bool], Server] = {}   # (column, deflate, defaults)
        self.workers: Dict[str, Worker] = {}                 # column name -> Worker
        self.scale = scale.settings(args)
        self.table = TABLE + scale.table_rows(args)
        self.results: Dict[str, Dict[str, List[float]]] = {k: {} for k, *_ in self.table}
        self.errors: Dict[str, Dict[str, str]] = {}
        self.notes: List[str] = []
        self.round = 0
        self.by_round: Dict[str, Dict[str, Dict[int, float]]] = {k: {} for k, *_ in self.table}
        self.meta: Dict[str, Any] = {}

    # -- setup -------------------------------------------------------------
    def pick_columns(self) -> None:
        """Keep the columns asked for whose libraries import; note the others."""
        only = set(self.args.only.split(",")) if self.args.only else None
        has_ext = tree_has_extension()
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
            except Exception as e:  # noqa: BLE001 (a library that fails to import is skipped)
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

    def server(self, col: Column, deflate: bool, defaults: bool = False) -> Server:
        """The column's server process, (re)started if needed; ``defaults``: with every
        setting at the library's default (the defaults row)."""
        key = (col.name, deflate, defaults)
        s = self.servers.get(key)
        if s is None or not s.alive():
            s = Server(col.server, deflate, env=col.worker_env,
                       tag="-" + col.name.replace(" ", "") + ("-defaults" if defaults else ""),
                       extra=["--defaults"] if defaults else None)
            self.servers[key] = s
            if col.lib == "simplews" and not deflate:
                col.server_ext = s.info.get("ext")
        return s

    def restart_server(self, col: Column, deflate: bool, defaults: bool = False) -> None:
        s = self.servers.pop((col.name, deflate, defaults), None)
        if s:
            s.stop()

    def worker(self, col: Column) -> Worker:
        """The column's client worker, (re)started if needed."""
        w = self.workers.get(col.name)
        if w is None or w.proc.poll() is not None:
            w = Worker(col.worker_env)
            w.call(30, op="import", lib=col.lib)
            self.workers[col.name] = w
        return w

    def kill_worker(self, col: Column) -> None:
        w = self.workers.pop(col.name, None)
        if w:
            w.stop()

    # -- one measurement ----------------------------------------------------
    def run_client(self, col: Column, timeout: float, op: str, **kw: Any) -> Dict[str, Any]:
        """Run a client operation in the column's worker or in this process."""
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

    def record(self, key: str, col: Column, value: Optional[float] = None,
               error: Optional[str] = None) -> None:
        if error is not None:
            self.errors.setdefault(key, {})[col.name] = error
            print("    %-18s %-10s ERROR %s" % (col.name, key, error), flush=True)
            return
        assert value is not None
        self.results[key].setdefault(col.name, []).append(value)
        self.by_round[key].setdefault(col.name, {})[self.round] = value

    def measure(self, row: str, col: Column) -> None:
        """One timed row for one column (a hang is measured again once)."""
        n = self.counts[row]
        deflate, defaults = row == "deflate", row == "defaults"
        if deflate and col.no_deflate:
            return
        for attempt in (1, 2):
            try:
                srv = self.server(col, deflate, defaults)
                res = self.run_client(col, self.timeout, "run", row=row, port=srv.port, n=n)
                break
            except Exception as e:  # noqa: BLE001 (any failure is the cell's error)
                self.restart_server(col, deflate, defaults)
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

    def measure_idle(self, col: Column) -> None:
        """Server VmRSS and threads added per idle connection, on a fresh server."""
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
        except Exception as e:  # noqa: BLE001 (any failure is the cell's error)
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

    def measure_size(self, col: Column) -> None:
        """Deflate bytes per message each way through the counting relay: the
        difference between a 48-echo and a 16-echo connection, over 32."""
        if col.no_deflate:
            return
        try:
            srv = self.server(col, True)
            relay = TcpRelay(("127.0.0.1", srv.port))
            try:
                totals = []
                for k in (16, 48):
                    self.run_client(col, self.timeout, "deflate_echoes", port=relay.port, n=k)
                    flow = relay.flows[-1]
                    if not flow.wait_ended(10):
                        raise BenchTimeout("relay did not see the connection end")
                    totals.append((flow.upstream_bytes, flow.downstream_bytes))
            finally:
                relay.close()
            c2s = (totals[1][0] - totals[0][0]) / 32
            s2c = (totals[1][1] - totals[0][1]) / 32
        except Exception as e:  # noqa: BLE001 (any failure is the cell's error)
            self.record("deflate_size_s2c", col, error="%s: %s" % (type(e).__name__, e))
            return
        self.record("deflate_size_s2c", col, s2c)
        self.record("deflate_size_c2s", col, c2s)

    # -- the run -------------------------------------------------------------
    def run(self) -> None:
        """Every round: each row for every column (order rotating), then report."""
        rows = self.args.rows.split(",") if self.args.rows else ROWS
        self.meta = {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "uptime_start": uptime(),
            "tree": tree_state(),
            "counts": self.counts,
            "scale": self.scale,
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
                if row == "scale":
                    if r < self.scale["rounds"]:
                        scale.measure_scale(self, order)
                    continue
                if row == "idle-cpu":
                    for col in order:
                        scale.measure_idle_cpu(self, col)
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
        report(self)
