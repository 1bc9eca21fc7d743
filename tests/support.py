"""Helpers shared by the tests: certificates, TLS contexts, ports, and the time scale.

SIMPLEWS_TEST_TIME_SCALE (default 1) multiplies every bound a test waits for or
asserts on (``TIMEOUT``, ``scaled()``), for slow or heavily loaded machines.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import pathlib
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import simplews

CERTS = pathlib.Path(__file__).parent / "certs"
TIME_SCALE = float(os.environ.get("SIMPLEWS_TEST_TIME_SCALE", "1"))
TIMEOUT = 10 * TIME_SCALE  # the bound on anything a test waits for


def scaled(seconds: float) -> float:
    """A time bound of the tests, stretched by SIMPLEWS_TEST_TIME_SCALE."""
    return seconds * TIME_SCALE


def wait_for(condition: Callable[[], object], timeout: float = TIMEOUT) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (for states that signal
    nothing); its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(condition())


def server_ssl_context(cert: str = "server") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERTS / f"{cert}.pem", CERTS / f"{cert}.key")
    return context


def client_ssl_context() -> ssl.SSLContext:
    """Trusts the test CA (tests/certs/ca.pem) only."""
    return ssl.create_default_context(cafile=str(CERTS / "ca.pem"))


def open_fds() -> int:
    """How many file descriptors this process holds now (Linux: /proc/self/fd)."""
    return len(os.listdir("/proc/self/fd"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot report their own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------ the command line and servers

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI_TIMEOUT = scaled(20)  # the bound of every CLI subprocess


def cli_env() -> Dict[str, str]:
    """The environment for a subprocess that imports simplews from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str, input: bytes = b"", timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m simplews ARGS`` with ``input`` on stdin; its output captured."""
    return subprocess.run([sys.executable, "-m", "simplews", *args], input=input, capture_output=True,
                          timeout=timeout, env=cli_env(), cwd=str(ROOT), check=False)


def stderr_of(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode("utf-8", "replace")


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The CLI failed with ``code`` and said why in one line naming every fragment."""
    err = stderr_of(result)
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("simplews: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def serve_in_thread(server: simplews.Server, name: str = "test-serve-forever",
                    daemon: bool = False) -> threading.Thread:
    """A started thread running ``server.serve_forever()``. A shutdown() that comes
    first (a test skipped at once) makes it raise the RuntimeError it documents: no
    error here."""
    def serve() -> None:
        try:
            server.serve_forever()
        except RuntimeError as exc:
            if "after shutdown()" not in str(exc):
                raise

    thread = threading.Thread(target=serve, name=name, daemon=daemon)
    thread.start()
    return thread


@contextlib.contextmanager
def running_server(handler: Callable[[simplews.Connection], object],
                   **kwargs: object) -> Iterator[simplews.Server]:
    """A simplews server on 127.0.0.1 (any port) serving in a thread, shut down at the end."""
    server = simplews.serve(handler, "127.0.0.1", 0, **kwargs)
    thread = serve_in_thread(server, daemon=True)
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=CLI_TIMEOUT)
        assert not thread.is_alive()


def waiting_at(thread: threading.Thread, function: Callable[..., object], text: str) -> bool:
    """Is ``thread``'s innermost Python frame ``function`` at its first line holding
    ``text``: blocked in a C call there (a lock, say)? If that code is rewritten, the
    test waiting for it fails (wait_for returns False), never passes by chance."""
    source, first = inspect.getsourcelines(function)
    line = first + next(i for i, source_line in enumerate(source) if text in source_line)
    frame = sys._current_frames().get(thread.ident or -1)
    return frame is not None and frame.f_code is getattr(function, "__code__", None) \
        and frame.f_lineno == line


def keepalive_thread_held_at_its_lock() -> bool:
    """Is the keepalive thread waiting for keepalive._lock (which the test holds)? Holding
    it there makes a race with a reader go one way every time."""
    from simplews import keepalive
    return any(waiting_at(thread, keepalive._run, "with _lock:")
               for thread in threading.enumerate() if thread.name == "simplews-keepalive")


def fuzz_seed(default: Optional[int] = None) -> Optional[int]:
    """SIMPLEWS_FUZZ_SEED: an integer, "random" (a fresh one), or unset: ``default``."""
    value = os.environ.get("SIMPLEWS_FUZZ_SEED", "").strip()
    if not value:
        return default
    if value.lower() == "random":
        return random.SystemRandom().randrange(1 << 32)
    return int(value, 0)


def unread_bytes(sock: socket.socket) -> int:
    """How many received bytes wait in ``sock``'s kernel buffer (FIONREAD)."""
    import fcntl
    import struct
    import termios

    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def send_tls_key_update(sock: ssl.SSLSocket) -> bool:
    """Send a TLS 1.3 KeyUpdate (RFC 8446 §4.6.3) on ``sock``: a record that carries no
    application data. The ssl module has no API for it: OpenSSL's SSL_key_update() is
    called on the SSL* of CPython's _ssl._SSLSocket (its third field, after the object
    header and the socket's weak reference). False where that cannot be done."""
    import ctypes
    import sysconfig
    import _ssl

    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED") \
            or sock.version() != "TLSv1.3" or not getattr(_ssl, "__file__", None):
        return False
    try:
        lib = ctypes.CDLL(_ssl.__file__)
        key_update, do_handshake = lib.SSL_key_update, lib.SSL_do_handshake
    except (OSError, AttributeError):
        return False
    key_update.argtypes, do_handshake.argtypes = [ctypes.c_void_p, ctypes.c_int], [ctypes.c_void_p]
    pointer = ctypes.c_void_p.from_address(id(sock._sslobj) + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    return key_update(pointer, 0) == 1 and do_handshake(pointer) == 1  # (do_handshake: sent now)


@contextlib.contextmanager
def scripted_proxy(answer: bytes) -> Iterator[Tuple[str, List[bytes]]]:
    """A CONNECT proxy on loopback that answers each request with ``answer``, then
    (a 2xx in it) relays the tunnel to the target; yields its URL and the requests."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: List[bytes] = []
    threads: List[threading.Thread] = []

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                head = b""
                while b"\r\n\r\n" not in head and (chunk := client.recv(65536)):
                    head += chunk
                requests.append(head)
                client.sendall(answer)
                if b" 200 " not in answer:
                    client.close()
                    continue
                host, port = head.split()[1].decode().rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=TIMEOUT)
                for ends in ((client, upstream), (upstream, client)):
                    threads.append(threading.Thread(target=pump, args=ends))
                    threads[-1].start()

    acceptor = threading.Thread(target=serve)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(TIMEOUT)
        for thread in threads:
            thread.join(TIMEOUT)
