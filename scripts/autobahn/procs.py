"""Child processes (each in its own session, stopped by pid), ports, progress lines."""
from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from types import FrameType
from typing import Any, Callable, NoReturn, Optional



class HarnessError(Exception):
    """The harness could not run (as opposed to: a case is not OK)."""


_procs_lock = threading.Lock()
_procs: list[subprocess.Popen[bytes]] = []
_stopping = threading.Event()  # set on Ctrl-C / SIGTERM: no new child from then on
_print_lock = threading.Lock()


def say(*parts: object) -> None:
    """print(), one line at a time across the modes' threads, flushed."""
    with _print_lock:
        print(*parts, flush=True)


def start_process(args: list[str], log_path: str, **kw: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only us; we stop it by pid)."""
    with _procs_lock:
        if _stopping.is_set():
            raise HarnessError("interrupted")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        _procs.append(proc)
    return proc


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> Optional[int]:
    """SIGTERM this child by its pid, SIGKILL it after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    with _procs_lock:
        if proc in _procs:
            _procs.remove(proc)
    return proc.returncode


def stop_all(final: bool = False) -> None:
    """Stop every child still running; `final`: start none after this."""
    with _procs_lock:
        if final:
            _stopping.set()
        procs = list(_procs)
    for proc in procs:
        stop_process(proc, grace=5.0)


def on_signal(signum: int, frame: Optional[FrameType]) -> NoReturn:
    """SIGTERM / SIGHUP / SIGINT handler: unwind the main thread like Ctrl-C."""
    raise KeyboardInterrupt


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once 127.0.0.1:port accepts; False if proc exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                pass
            else:
                return True
        time.sleep(0.2)
    return False


def count_lines(path: str, prefix: str) -> int:
    """How many lines of the file at `path` start with `prefix` (0 if unreadable)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(prefix.encode()))
    except OSError:
        return 0


def wait_with_progress(proc: subprocess.Popen[bytes], name: str, timeout: float, progress: Callable[[], int],
                       total: int, interval: float = 60.0) -> Optional[int]:
    """Wait for proc; print progress every `interval` s; None on timeout."""
    started = time.monotonic()
    last = started
    while True:
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - started > timeout:
            return None
        if now - last >= interval:
            last = now
            say(f"[{name}] {progress()}/{total} cases, {now - started:.0f} s")
