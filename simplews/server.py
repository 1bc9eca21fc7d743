"""serve() and Server: a thread per connection, the handler in that thread (DESIGN §2-§3)."""
from __future__ import annotations

import contextlib
import os
import select
import selectors
import socket
import ssl as ssl_module
import stat
import sys
import threading
from time import monotonic
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ._io import (LONGEST_WAIT, format_address, open_unix_socket, read_head, send_head, set_nodelay,
                  socket_addresses, wait_readable)
from ._workers import STOP, Task, Workers
from .connection import Connection
from .endpoint import Endpoint, Handler, HandshakeInfo
from .exceptions import HeaderBlockTooLarge, InvalidHandshake
from .frames import CloseCode
from .handshake import Accepted
from .http11 import Request, Response, parse_request

__all__ = ["serve", "Server", "HandshakeInfo"]

ProcessRequest = Callable[["HandshakeInfo", Request], Optional[Response]]
#: At shutdown, how long connections whose writer is busy may take to send their close
#: frame, all together (then their TCP connection is cut).
SHUTDOWN_GRACE = 0.1
_EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)  # Linux 4.5+
# BSD and macOS sockets take O_NONBLOCK from the listening socket; Linux's do not.
_ACCEPTED_INHERIT_NONBLOCKING = not sys.platform.startswith("linux")


class Server(Endpoint):
    """A listening WebSocket server; see serve(). ``server.connections`` is a snapshot
    (a new set) of the connections whose handler is running: safe to iterate."""

    def __init__(self, handler: Handler, host: Optional[str] = "127.0.0.1", port: int = 0, *,
                 ssl: Optional[ssl_module.SSLContext] = None,
                 process_request: Optional[ProcessRequest] = None, backlog: int = 128,
                 reuse_port: bool = False, sock: Optional[socket.socket] = None,
                 unix_socket: Optional[str] = None, switch_interval: Optional[float] = None,
                 **options: Any) -> None:
        if switch_interval is not None and not 0 < switch_interval < float("inf"):  # (NaN too)
            raise ValueError(f"switch_interval must be a positive number of seconds: {switch_interval!r}")
        super().__init__(handler, **options)
        self.ssl = ssl
        #: sys.setswitchinterval() while serve_forever() runs (None: left alone). Past
        #: ~1,000 busy connections, threads waiting for the GIL wake every interval (5 ms
        #: by default) and the kernel time spent waking them swamps the work: 0.1 avoids it.
        self.switch_interval = switch_interval
        self.process_request = process_request
        if sock is None:
            sock = (_listen_unix(unix_socket, backlog) if unix_socket is not None
                    else _listen(host, port, backlog, reuse_port))
        elif not _listening(sock):
            raise ValueError("sock must be listening already (its listen() called)")
        self.socket = sock
        sock.setblocking(False)  # several idle threads may try to accept one connection
        self.unix_socket = unix_socket
        self.port: Optional[int] = None if sock.family == socket.AF_UNIX else sock.getsockname()[1]
        self._opening: Dict[int, socket.socket] = {}  # thread id -> socket in its handshakes
        self._workers = Workers(lambda: _Waiter(self), self._serve_connection)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._wakeup_r, self._wakeup_w = socket.socketpair()

    def serve_forever(self) -> None:
        """Accept connections until shutdown() is called from another thread (or this one
        is interrupted, e.g. by KeyboardInterrupt). The idle worker threads accept (see
        _Waiter); this one starts them."""
        with self._lock:  # shutdown() stops under it too: it comes before (its socket closed), or waits
            if self._stopping.is_set():
                raise RuntimeError("serve_forever() after shutdown(): this server is closed")
            self._stopped.clear()
        self.logger.info("listening on %s", format_address(self.socket.getsockname()))
        previous = sys.getswitchinterval()
        try:
            if self.switch_interval is not None:  # process-wide: only when asked, and restored
                sys.setswitchinterval(self.switch_interval)
                self.logger.info("thread switch interval set to %g s (was %g s) while serving",
                                 self.switch_interval, previous)
            self._workers.run()  # until shutdown()
        finally:
            self._stop_accepting()
            if self.switch_interval is not None:
                sys.setswitchinterval(previous)
            self._stopped.set()

    def _serve_connection(self, sock: socket.socket) -> None:
        """The TLS and opening handshakes, within open_timeout, then the handler."""
        deadline = monotonic() + (self.open_timeout if self.open_timeout is not None else LONGEST_WAIT)
        try:
            self._set_opening(sock)
            connection = self._handshake_socket(sock, deadline)
        except EOFError:  # a port probe, a client that gave up, or shutdown()
            self.logger.debug("connection closed before the opening handshake")
            return
        except (OSError, InvalidHandshake) as exc:  # TimeoutError and SSLError included
            self.logger.info("opening handshake failed: %s", exc)
            return
        except Exception:  # never let a connection's thread die with a traceback on stderr
            self.logger.exception("unexpected error")
            return
        finally:
            opening = self._end_opening()  # the TLS socket once it is wrapped
            if opening is not None:  # refused or failed before the upgrade
                opening.close()
        if connection is not None:
            self._run_handler(connection)

    def _set_opening(self, sock: socket.socket) -> None:
        """Record the socket this thread is opening, for shutdown() to wake it."""
        with self._lock:
            self._opening[threading.get_ident()] = sock
        if self._stopping.is_set():  # shutdown() may have looked before we got here
            raise EOFError("server shutting down")

    def _end_opening(self) -> Optional[socket.socket]:
        """Forget this thread's opening socket (the upgrade owns it now); return it."""
        with self._lock:
            return self._opening.pop(threading.get_ident(), None)

    def _handshake_socket(self, sock: socket.socket, deadline: float) -> Optional[Connection]:
        """The connection, or None once refused; the caller closes ``sock`` unless upgraded."""
        set_nodelay(sock)
        addresses = socket_addresses(sock)  # here, not in Connection() (see socket_addresses)
        if self.ssl is not None:
            sock = self.ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            self._set_opening(sock)
            sock.settimeout(max(0.001, deadline - monotonic()))
            try:
                sock.do_handshake()
            except socket.timeout:
                raise TimeoutError("timed out during the TLS handshake") from None
        try:
            request, leftover = read_head(sock, parse_request, deadline, sent=True)
            response, accepted = self._answer(HandshakeInfo(self, sock, request, addresses), request)
        except InvalidHandshake as exc:  # past the header limits (DESIGN §5): 431
            accepted = None
            response = self._handshake.reject(431 if isinstance(exc, HeaderBlockTooLarge) else 400,
                                              str(exc))
        if accepted is None:
            self._refuse(sock, response, deadline, addresses[1])
            return None
        self._end_opening()  # the socket is the connection's now: shutdown() closes it with 1001
        connection = self._upgrade(sock, request, response, accepted, deadline, leftover, addresses)
        if self._stopping.is_set():  # shutdown() raced with this handshake
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
        return connection

    def _answer(self, info: HandshakeInfo, request: Request) -> Tuple[Response, Optional[Accepted]]:
        """process_request's answer (a refusal), else Endpoint._accept()'s; 500 if they raise."""
        try:  # the application's callbacks (select_subprotocol runs in accept())
            answer = None if self.process_request is None else self.process_request(info, request)
            if answer is None:
                return self._accept(request, info)
            if not isinstance(answer, Response):
                raise TypeError(f"process_request returned {type(answer).__name__!r}, "
                                "not a Response or None")
        except Exception:
            self.logger.exception("error while answering an opening handshake: HTTP 500")
            answer = self._handshake.reject(500, "internal server error")
        return answer, None

    def _refuse(self, sock: socket.socket, response: Response, deadline: float,
                remote_address: Any) -> None:
        """Send ``response`` and end our side of the TCP connection."""
        try:
            data = response.serialize()
        except Exception:  # process_request's Response: a header that is not latin-1, say
            self.logger.exception("cannot send the answer of process_request: HTTP 500")
            response = self._handshake.reject(500, "internal server error")
            data = response.serialize()
        self.logger.info("refused %s: %d %s", format_address(remote_address), response.status,
                         response.reason)
        with contextlib.suppress(OSError):  # TimeoutError included
            send_head(sock, data, deadline)
            sock.shutdown(socket.SHUT_WR)

    def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001 and join their threads,
        all within close_timeout."""
        self._stop_accepting()
        with self._lock:  # wake the threads still reading an opening handshake
            for sock in self._opening.values():
                # socket.socket's: SSLSocket.shutdown() would drop the TLS state under them
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
        timeout = self.close_timeout if self.close_timeout is not None else 10
        deadline = monotonic() + timeout
        self._stopped.wait(timeout)
        # Every connection's close goes out at once where its writer is free; the others
        # share one short grace period, then lose TCP (a handler blocked in send() to a
        # peer that does not read would never free its writer).
        reason = "server shutting down"
        busy = [c for c in self.connections if not c.send_close(CloseCode.GOING_AWAY, reason, 0)]
        grace = monotonic() + min(SHUTDOWN_GRACE, timeout)
        for connection in busy:
            if not connection.send_close(CloseCode.GOING_AWAY, reason, max(0.0, grace - monotonic())):
                connection.abort(CloseCode.ABNORMAL_CLOSURE, "server shutting down: the writer is blocked")
        for thread in self._workers.threads():
            if thread is not threading.current_thread():  # (a handler may call shutdown())
                thread.join(max(0.0, deadline - monotonic()))
        for connection in self.connections:
            connection.abort(CloseCode.GOING_AWAY, reason)
        self.close()

    def _stop_accepting(self) -> None:
        """No more connections: wake the idle workers (their waiters return STOP)."""
        with self._lock:
            self._stopping.set()
        self._workers.stop()
        with contextlib.suppress(OSError):
            self._wakeup_w.send(b"x")

    def close(self) -> None:
        """Close the listening socket (shutdown() does it too); remove the Unix socket's file."""
        for sock in (self.socket, self._wakeup_r, self._wakeup_w):
            sock.close()
        if self.unix_socket is not None and not self.unix_socket.startswith("\0"):
            with contextlib.suppress(OSError):
                os.unlink(self.unix_socket)
            self.unix_socket = None

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()


class _Waiter:
    """An idle worker thread's wait for the next connection (see _workers): its own epoll
    on the listening socket, with EPOLLEXCLUSIVE so that a connection wakes one waiting
    thread, not all, and on the wake-up socket, which wakes them all at shutdown. Without
    EPOLLEXCLUSIVE (not Linux), a selector: the idle threads all wake, one accepts."""

    def __init__(self, server: Server) -> None:
        self._server = server
        listening, wakeup = server.socket.fileno(), server._wakeup_r.fileno()
        self._wait: Callable[[float], Sequence[object]]  # the ready sockets, or none
        if _EPOLLEXCLUSIVE:
            poller = select.epoll()
            poller.register(listening, select.EPOLLIN | _EPOLLEXCLUSIVE)
            poller.register(wakeup, select.EPOLLIN)
            self._wait = lambda timeout: poller.poll(timeout, 2)
            self.close = poller.close
        else:  # pragma: no cover (Linux has EPOLLEXCLUSIVE since 4.5)
            selector = selectors.DefaultSelector()
            selector.register(listening, selectors.EVENT_READ)
            selector.register(wakeup, selectors.EVENT_READ)
            self._wait = selector.select
            self.close = selector.close

    def wait(self, timeout: float) -> Task:
        server = self._server
        deadline = monotonic() + timeout
        while not server._stopping.is_set():
            remaining = deadline - monotonic()
            if remaining <= 0 or not self._wait(remaining):
                return None
            if server._stopping.is_set():
                break
            try:
                sock, address = server.socket.accept()
            except (BlockingIOError, InterruptedError):  # another thread took it
                continue
            except OSError as exc:  # e.g. EMFILE: log, pause (the connection still waits)
                # no traceback (TRY400): the cause (EMFILE, ENOBUFS...) is all there is to say
                server.logger.error("accept failed: %s", exc)  # noqa: TRY400
                wait_readable(server._wakeup_r, 0.1)
                continue
            if _ACCEPTED_INHERIT_NONBLOCKING:
                sock.setblocking(True)
            # not f"{address}": a tuple's repr() gives the thread a dict of its own (~300 B)
            return sock, f"simplews-{format_address(address)}"
        return STOP


def _listen(host: Optional[str], port: int, backlog: int, reuse_port: bool) -> socket.socket:
    """A listening socket: IPv4 or IPv6 as ``host`` says, both for host None or ""."""
    if not host:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, backlog=backlog,
                                        reuse_port=reuse_port, dualstack_ipv6=True)
        host = "0.0.0.0"
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=backlog, reuse_port=reuse_port)


def _listening(sock: socket.socket) -> bool:
    option = getattr(socket, "SO_ACCEPTCONN", None)  # (where there is none: assume so)
    return option is None or bool(sock.getsockopt(socket.SOL_SOCKET, option))


def _listen_unix(path: str, backlog: int) -> socket.socket:
    """A listening Unix socket at ``path``; a stale socket file (nobody listening) is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if not path.startswith("\0") and stat.S_ISSOCK(os.stat(path).st_mode):  # ("\0": abstract)
            try:
                open_unix_socket(path, timeout=1).close()  # someone listens: bind() below fails
            except ConnectionRefusedError:
                os.unlink(path)
            except OSError:
                pass
    return open_unix_socket(path, listen_backlog=backlog)


def serve(handler: Handler, host: Optional[str] = "127.0.0.1", port: int = 0, **kwargs: Any) -> Server:
    """Listen on ``host``:``port`` (port 0: any free port, see ``server.port``), or on the
    Unix socket ``unix_socket=PATH``, and return the Server; call serve_forever() to
    accept. ``handler(ws)`` runs in the connection's thread (when it returns: close 1000;
    when it raises: 1011, logged). Options, with their defaults: ``ssl`` (None: ws://),
    ``subprotocols``, ``select_subprotocol(info, offered)``, ``process_request(info,
    request)`` (a Response refuses), ``origins``, ``compression`` ("deflate", a
    DeflateConfig or None), ``open_timeout`` (10 s), ``close_timeout`` (10 s),
    ``ping_interval`` (20 s), ``ping_timeout`` (20 s), ``max_size`` (1 MiB),
    ``max_queue`` (16 messages), ``max_connections`` (None; past it: 503), ``backlog``
    (128), ``reuse_port``, ``sock``, ``unix_socket``, ``switch_interval`` (None),
    ``server_header``, ``logger``."""
    return Server(handler, host, port, **kwargs)
