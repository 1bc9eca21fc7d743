"""Subprocesses and time limits: the server processes, the client worker (both
ends of its JSON-lines pipe) and the in-process alarm."""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from . import bench_clients as bc
from .config import ENTRY, HERE, LOGS, ROOT, BenchError, BenchTimeout


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a child: the tree first on PYTHONPATH, unbuffered, plus extra."""
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

    def __init__(self) -> None:
        self.procs: List[subprocess.Popen[bytes]] = []
        self.lognames: Dict[subprocess.Popen[bytes], str] = {}    # kept after a stop, for errors
        atexit.register(self.stop_all)

    def spawn(self, args: List[str], env: Dict[str, str], logname: str) -> subprocess.Popen[bytes]:
        """Start args with pipes on stdin/stdout and stderr appended to LOGS/logname."""
        os.makedirs(LOGS, exist_ok=True)
        with open(os.path.join(LOGS, logname), "ab") as log:
            p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                 env=env, cwd=ROOT)
        self.lognames[p] = logname
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], grace: float = 3.0, eof_wait: float = 0.0) -> None:
        """Close its stdin, optionally wait eof_wait for it to exit, then SIGTERM, then SIGKILL."""
        if p in self.procs:
            self.procs.remove(p)
        with contextlib.suppress(OSError):
            if p.stdin is not None:
                p.stdin.close()
        if eof_wait:            # let it finish by itself on stdin EOF first
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(eof_wait)
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        with contextlib.suppress(OSError):
            if p.stdout is not None:
                p.stdout.close()

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p, grace=2.0)


PROCS = Procs()


def readline_timeout(p: subprocess.Popen[bytes], timeout: float) -> str:
    """One line from p's stdout within timeout (BenchTimeout), or BenchError if it exits."""
    deadline = time.monotonic() + timeout
    assert p.stdout is not None
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
                    p.pid, p.poll(), os.path.join(LOGS, PROCS.lognames.get(p, "?"))))
            buf += ch
    return buf.decode()


def in_process_call(timeout: float, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) under SIGALRM: past timeout, dump every thread's stack to
    LOGS/hangs.log and raise BenchTimeout."""
    def on_alarm(signum: int, frame: Any) -> None:
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


class Server:
    """An echo server process (bench_servers.py), up once it printed READY."""

    def __init__(self, kind: str, deflate: bool = False, env: Optional[Dict[str, str]] = None,
                 profile: Optional[str] = None, tag: str = "",
                 extra: Optional[List[str]] = None) -> None:
        args = [sys.executable, os.path.join(HERE, "bench_servers.py"), kind]
        if deflate:
            args.append("--deflate")
        if profile:
            args += ["--profile", profile]
        args += extra or []
        name = "server-%s%s%s.log" % (kind, "-deflate" if deflate else "", tag)
        self.proc = PROCS.spawn(args, child_env(env), name)
        line = readline_timeout(self.proc, 30)
        if not line.startswith("READY "):
            raise BenchError("server %s: unexpected %r" % (kind, line))
        self.info: Dict[str, Any] = json.loads(line[6:])
        self.port: int = self.info["port"]
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, eof_wait: float = 0.0) -> None:
        PROCS.stop(self.proc, eof_wait=eof_wait)


class Worker:
    """Client worker subprocess (scripts/bench.py --client-worker: worker_main)."""

    def __init__(self, env: Optional[Dict[str, str]]) -> None:
        args = [sys.executable, ENTRY, "--client-worker"]
        self.proc = PROCS.spawn(args, child_env(env), "client-worker.log")

    def call(self, timeout: float, **cmd: Any) -> Dict[str, Any]:
        """Send one command, return its answer (BenchError if it failed)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise BenchError("worker died: %s" % e) from e
        res: Dict[str, Any] = json.loads(readline_timeout(self.proc, timeout))
        if not res.pop("ok"):
            raise BenchError(res["error"])
        return res

    def stop(self) -> None:
        PROCS.stop(self.proc)


def worker_main() -> None:
    """The worker's side: JSON lines on stdin -> JSON lines on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr      # keep the protocol channel clean
    idle = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "import":
                __import__(bc.IMPORTS[cmd["lib"]])
                res: Dict[str, Any] = {"version": bc.lib_version(cmd["lib"])}
            elif op == "run":
                dt = bc.WORKLOADS[cmd["row"]](cmd["lib"], cmd["port"], cmd["n"])
                res = {"elapsed": dt, "ext": bc.simplews_extensions()}
            elif op == "idle_open":
                idle = bc.idle_open(cmd["lib"], cmd["port"], cmd["n"])
                res = {}
            elif op == "idle_close":
                bc.idle_close(idle or [])
                idle = None
                res = {}
            elif op == "deflate_echoes":
                bc.deflate_echoes(cmd["lib"], cmd["port"], cmd["n"])
                res = {}
            elif op == "exit":
                break
            else:
                raise ValueError(op)
            res["ok"] = True
        except Exception as e:  # noqa: BLE001 (every failure is an answer)
            res = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(res) + "\n")
        out.flush()
