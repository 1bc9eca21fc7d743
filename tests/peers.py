"""Real peers for the interop tests (pytest -m interop): find them, start and stop
them on loopback. The tests never install anything: .ci/run installs the peers
(Debian packages: chromium, chromium-driver, nginx, nodejs, npm, tinyproxy,
dante-server; then scripts/install_peers.py: Node's ``ws`` into ``.cache/node`` and
a ``websockets`` virtualenv, ``.cache/websockets-venv``, whose python runs
tests/interop/websockets_peer.py; never imported by the tests).

A test whose peer is missing skips with the reason, unless ``CI``,
``SIMPLEWS_REQUIRE_INTEROP=1`` or ``SIMPLEWS_REQUIRE_PEERS=1`` (.ci/run) is set: then
it fails. Every process is started in its own session and stopped by its pid with
bounded waits; temporary directories are removed.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from support import client_ssl_context, free_port, serve_in_thread, server_ssl_context  # noqa: F401

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
CERTS = HERE / "certs"
INTEROP = HERE / "interop"
WAIT = 20  # the bound on waiting for a peer to start or stop


# ------------------------------------------------------------------ policy

def interop_required() -> bool:
    """True in CI (``CI`` set), with ``SIMPLEWS_REQUIRE_INTEROP=1`` or with .ci/run's
    ``SIMPLEWS_REQUIRE_PEERS=1``: no skipping."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or "1" in (
        os.environ.get("SIMPLEWS_REQUIRE_INTEROP"), os.environ.get("SIMPLEWS_REQUIRE_PEERS"))


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``, or fail it where interop is required."""
    if interop_required():
        pytest.fail(f"interop peer unavailable (CI / SIMPLEWS_REQUIRE_INTEROP): {reason}",
                    pytrace=False)
    pytest.skip(reason)


class Unavailable(Exception):
    """A peer could not be found or installed."""


def _memo(function):
    """Cache a finder's result or its Unavailable error for the whole session."""
    cache: Dict[Tuple[Any, ...], Any] = {}
    lock = threading.Lock()

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        with lock:
            if args not in cache:
                try:
                    cache[args] = (True, function(*args))
                except Unavailable as exc:
                    cache[args] = (False, str(exc))
            ok, value = cache[args]
        if not ok:
            unavailable(value)
        return value

    return wrapper


def _installer() -> Any:
    """scripts/install_peers.py, loaded by its path: where the peers it installs live."""
    spec = importlib.util.spec_from_file_location("simplews_install_peers",
                                                  REPO / "scripts" / "install_peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INSTALLER = _installer()
NODE_DIR, WEBSOCKETS_VENV = INSTALLER.NODE_DIR, INSTALLER.WEBSOCKETS_VENV
HOW = "installed by .ci/run"


# ------------------------------------------------------------------ finders

def _which(*names: str, extra: Sequence[str] = ()) -> Optional[str]:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    for path in extra:
        if os.access(path, os.X_OK):
            return path
    return None


def _chromium_binary() -> Optional[str]:
    # The real binary, not Debian's /usr/bin/chromium wrapper script (which sources
    # /etc/chromium.d and adds its own flags and extensions).
    return _which(extra=["/usr/lib/chromium/chromium"]) or \
        _which("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@_memo
def chromium() -> Tuple[str, str]:
    """(chromium binary, chromedriver)."""
    browser, driver = _chromium_binary(), _which("chromedriver", extra=["/usr/lib/chromium/chromedriver"])
    if browser is None or driver is None:
        raise Unavailable(f"chromium / chromedriver not installed (Debian: chromium chromium-driver, {HOW})")
    return browser, driver


@_memo
def nginx() -> str:
    """The nginx binary."""
    path = _which("nginx", extra=["/usr/sbin/nginx"])
    if path is None:
        raise Unavailable(f"nginx not installed (Debian: nginx, {HOW})")
    return path


@_memo
def node_ws() -> Tuple[str, pathlib.Path]:
    """(node binary, NODE_PATH holding the ``ws`` package in .cache/node)."""
    node, modules = _which("node", "nodejs"), NODE_DIR / "node_modules"
    if node is None:
        raise Unavailable(f"node not installed (Debian: nodejs npm, {HOW})")
    if not (modules / "ws" / "package.json").exists():
        raise Unavailable(f"Node's {INSTALLER.WS_NPM_SPEC} not in {NODE_DIR} "
                          f"({HOW}: python scripts/install_peers.py)")
    return node, modules


@_memo
def websockets_python() -> str:
    """The python of ``.cache/websockets-venv``, a virtualenv holding ``websockets``."""
    python = WEBSOCKETS_VENV / "bin" / "python"
    check = [str(python), "-I", "-c", INSTALLER.WEBSOCKETS_CHECK]  # -I: only the venv
    if not python.exists() or subprocess.run(check, capture_output=True, timeout=60,
                                             check=False).returncode != 0:
        raise Unavailable(f"no {INSTALLER.WEBSOCKETS_PIP_SPEC} virtualenv in {WEBSOCKETS_VENV} "
                          f"({HOW}: python scripts/install_peers.py)")
    return str(python)


# ------------------------------------------------------------------ sockets and processes

def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = WAIT,
                  process: Optional["Process"] = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError as exc:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.poll()}: "
                                   f"{process.output()[-2000:]}") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from exc
            time.sleep(0.05)
        else:
            return


class Process:
    """A child process in its own session; output to a log file; stopped by its pid."""

    def __init__(self, name: str, args: Sequence[str], log_dir: pathlib.Path,
                 stdin: Any = subprocess.DEVNULL, stdout_pipe: bool = False,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[pathlib.Path] = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the child's log, closed by stop()
        self.popen = subprocess.Popen(list(args), stdin=stdin,
                                      stdout=subprocess.PIPE if stdout_pipe else self._log,
                                      stderr=self._log, start_new_session=True, env=env, cwd=cwd)
        self.pid = self.popen.pid

    def poll(self) -> Optional[int]:
        return self.popen.poll()

    def output(self) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def readline(self, timeout: float = WAIT) -> str:
        """The next line of stdout (stdout_pipe=True), within ``timeout``."""
        assert self.popen.stdout is not None
        result: List[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.popen.stdout.readline()),
                                  name=f"readline-{self.name}", daemon=True)
        reader.start()
        reader.join(timeout)
        if not result:
            raise TimeoutError(f"{self.name}: no output line within {timeout} s; "
                               f"log: {self.output()[-2000:]}")
        return result[0].decode(errors="replace").rstrip("\n")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> Optional[int]:
        """Signal the process (if still running), wait, SIGKILL it after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()
        return self.popen.returncode


def pids_using(marker: str) -> List[int]:
    """Our processes whose command line contains ``marker`` (e.g. a temp dir path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def wait_gone(marker: str, timeout: float = WAIT) -> List[int]:
    """Wait until no process mentions ``marker``; SIGKILL the stragglers by pid at the
    deadline. Returns the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    while pids_using(marker):
        if time.monotonic() > deadline:
            killed = pids_using(marker)
            for pid in killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            return killed
        time.sleep(0.05)
    return []


# ------------------------------------------------------------------ a simplews server

class RecordingServer:
    """A simplews server in a thread that records each connection as it saw it (the
    handshake, the messages, the close) in ``seen``. ``respond(ws, message, info)``
    answers one message (echo here); it returns False to stop reading."""

    def __init__(self, scheme: str = "ws", path: str = "/", url_host: str = "127.0.0.1",
                 **kwargs: Any) -> None:
        import simplews  # here, not at import: peers.py also runs where simplews is not needed

        self.seen: List[Dict[str, Any]] = []
        self.done = threading.Event()  # set when a connection ends
        self._ended = threading.Condition()
        if scheme == "wss":
            kwargs.setdefault("ssl", server_ssl_context())
        kwargs.setdefault("close_timeout", 5)
        self.server = simplews.serve(self.handler, "127.0.0.1", 0, **kwargs)
        self.url = f"{scheme}://{url_host}:{self.server.port}{path}"
        self.thread = serve_in_thread(self.server)

    def handler(self, ws: Any) -> None:
        headers = ws.request.headers
        info: Dict[str, Any] = {
            "offer": headers.get("Sec-WebSocket-Extensions"),
            "accepted": ws.response.headers.get("Sec-WebSocket-Extensions"),
            "user_agent": headers.get("User-Agent"), "subprotocol": ws.subprotocol,
            "path": ws.request.path, "remote": ws.remote_address[0],
            "forwarded_for": headers.get("X-Forwarded-For"),
            "proto": headers.get("X-Forwarded-Proto"), "messages": []}
        self.seen.append(info)
        try:  # iterating ends on 1000/1001 and raises ConnectionClosedError on other codes
            for message in ws:
                if not self.respond(ws, message, info):
                    break
        finally:
            with self._ended:
                info["close"] = (ws.close_code, ws.close_reason)
                self._ended.notify_all()
            self.done.set()

    def wait_closed(self, count: int = 1) -> List[Dict[str, Any]]:
        """``seen`` once ``count`` connections have ended on the server's side too (the
        peer may report its close before the handler is done)."""
        with self._ended:
            assert self._ended.wait_for(
                lambda: sum("close" in info for info in self.seen) >= count, WAIT), self.seen
        return self.seen

    def respond(self, ws: Any, message: Any, info: Dict[str, Any]) -> bool:
        info["messages"].append(message)
        ws.send(message)
        return True

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(WAIT)


# ------------------------------------------------------------------ certificates

def _der_item(data: bytes, offset: int) -> Tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER item at ``offset``."""
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    return tag, start, start + length


def spki_sha256(cert_path: pathlib.Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: the value that
    Chromium's --ignore-certificate-errors-spki-list takes."""
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    _, cert_start, _ = _der_item(der, 0)  # Certificate ::= SEQUENCE
    _, position, _ = _der_item(der, cert_start)  # tbsCertificate ::= SEQUENCE
    fields = []
    while len(fields) < 7:
        tag, start, end = _der_item(der, position)
        fields.append((tag, position, end))
        position = end
    if fields[0][0] != 0xA0:  # no explicit [0] version: v1 certificate
        fields.insert(0, (0xA0, 0, 0))
    # version, serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    tag, start, end = fields[6]
    assert tag == 0x30, "subjectPublicKeyInfo is not a SEQUENCE"
    return base64.b64encode(hashlib.sha256(der[start:end]).digest()).decode()


# ------------------------------------------------------------------ Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
                  "--no-default-browser-check", "--mute-audio"]


class WebDriverError(Exception):
    pass


class Browser:
    """Headless Chromium driven through chromedriver's W3C HTTP API (plain urllib)."""

    def __init__(self, spki_hashes: Sequence[str] = ()) -> None:
        binary, driver = chromium()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="simplews-chromium-"))
        self.profile = self.tmp / "profile"
        self.profile.mkdir()
        self.session: Optional[str] = None
        self.driver: Optional[Process] = None
        try:
            self.port = free_port()
            # Chromium's crash handler keeps its database under XDG_CONFIG_HOME, not in
            # the profile: keep that in our temp dir too.
            env = dict(os.environ, XDG_CONFIG_HOME=str(self.tmp / "config"),
                       XDG_CACHE_HOME=str(self.tmp / "cache"))
            self.driver = Process("chromedriver", [driver, f"--port={self.port}",
                                                   "--allowed-ips=127.0.0.1"], self.tmp, env=env)
            self._wait_ready()
            args = [*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"]
            if spki_hashes:
                args.append("--ignore-certificate-errors-spki-list=" + ",".join(spki_hashes))
            capabilities = {"alwaysMatch": {
                "goog:chromeOptions": {"binary": binary, "args": args},
                "timeouts": {"script": 30000, "pageLoad": 30000},
                "acceptInsecureCerts": False,
            }}
            answer = self._call("POST", "/session", {"capabilities": capabilities}, timeout=60)
            self.session = answer["sessionId"]
            self.capabilities = answer["capabilities"]
        except BaseException:
            self.quit()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            assert self.driver is not None
            if self.driver.poll() is not None:
                raise RuntimeError(f"chromedriver exited: {self.driver.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromedriver did not become ready")
            time.sleep(0.05)

    def _call(self, method: str, path: str, body: Optional[dict] = None,
              timeout: float = 40) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
            value = answer.get("value", {})
            raise WebDriverError(f"{method} {path}: {exc.code} {value.get('error')}: "
                                 f"{str(value.get('message'))[:500]}") from None
        return answer.get("value")

    def get(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run_async(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page; it calls ``arguments[arguments.length - 1](result)``."""
        return self._call("POST", f"/session/{self.session}/execute/async",
                          {"script": script, "args": list(args)})

    def quit(self) -> None:
        """End the session, stop chromedriver, wait for every Chromium process that
        uses our temp dir to end, then remove it (the profile is in it)."""
        try:
            if self.session is not None:
                with contextlib.suppress(OSError, WebDriverError, ValueError):
                    self._call("DELETE", f"/session/{self.session}", timeout=WAIT)
                self.session = None
            if self.driver is not None:
                self.driver.stop()
        finally:
            wait_gone(str(self.tmp))  # the browser, its helpers and its crash handler
            shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------ nginx

NGINX_CONF = """\
# simplews behind nginx: ws and wss (TLS terminated here) to one upstream address,
# which may be several simplews processes sharing the port (serve(..., reuse_port=True)).
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}

http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    # "Connection: upgrade" for WebSocket requests, "close" for the others.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream simplews {{
        server {upstream};
    }}

    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {certs}/server.pem;
        ssl_certificate_key {certs}/server.key;

        location / {{
            proxy_pass http://simplews;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # An idle WebSocket is closed after proxy_read_timeout without traffic:
            # keep it above simplews' ping_interval (20 s by default).
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with its own prefix, config and temp paths."""

    def __init__(self, upstream: str) -> None:
        binary = nginx()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="simplews-nginx-"))
        # nginx workers run as "nobody" when started by root: let them reach the prefix.
        os.chmod(self.tmp, 0o755)
        (self.tmp / "tmp").mkdir()
        self.port, self.tls_port = free_port(), free_port()
        self.conf = self.tmp / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(prefix=self.tmp, upstream=upstream, port=self.port,
                                               tls_port=self.tls_port, certs=CERTS))
        self.process: Optional[Process] = None
        try:
            self.process = Process("nginx", [binary, "-p", str(self.tmp), "-c", str(self.conf),
                                             "-e", str(self.tmp / "error.log"),
                                             "-g", "daemon off;"], self.tmp)
            wait_for_port(self.port, process=self.process)
            wait_for_port(self.tls_port, process=self.process)
        except BaseException:
            self.stop()
            raise

    def error_log(self) -> str:
        try:
            return (self.tmp / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.process is not None:
                self.process.stop(signal.SIGTERM)  # fast shutdown: the master stops its workers
        finally:
            wait_gone(str(self.conf))
            shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------ helper children

class LineChild(Process):
    """A helper child that prints JSON lines on stdout and stops when its stdin closes
    (tests/interop/*.js, tests/interop/reuseport_server.py)."""

    def __init__(self, name: str, args: Sequence[str], log_dir: pathlib.Path,
                 env: Optional[Dict[str, str]] = None) -> None:
        super().__init__(name, args, log_dir, stdin=subprocess.PIPE, stdout_pipe=True, env=env)

    def read_json(self, timeout: float = WAIT) -> Any:
        line = self.readline(timeout)
        if not line:
            raise EOFError(f"{self.name} ended (exit {self.popen.wait(5)}): "
                           f"{self.output()[-2000:]}")
        return json.loads(line)

    def close(self, timeout: float = 10) -> Optional[int]:
        """Close stdin (the child's cue to shut down), wait, then signal if needed."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        return self.stop()


def _bench_relay() -> Any:
    """scripts/bench/relay.py, loaded by its path (scripts/ stays off sys.path): the one
    counting relay, shared with the benchmark, which cannot import this module (pytest)."""
    spec = importlib.util.spec_from_file_location("simplews_bench_relay",
                                                  REPO / "scripts" / "bench" / "relay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# A loopback TCP relay that counts the bytes going each way (to see on the wire whether
# permessage-deflate is in use, TLS or not): TcpRelay((host, port)), .port,
# .upstream_bytes, .downstream_bytes, .close(); its waits are bounded by 20 s, as WAIT.
TcpRelay = _bench_relay().TcpRelay
